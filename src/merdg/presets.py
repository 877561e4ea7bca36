"""Paper presets: the runs of MER-DG (Yarici & AlRegib, ICML 2026, arXiv 2605.01967).

``merdg train --preset NAME --data-root DIR --checkpoint-dir CKPT --source D1 D2 --target D3``
trains one of the paper's configurations: Fusion (``fusion``, the official "Baseline": late
fusion, cross-entropy) or Fusion + MER-DG (``merdg``, lambda = 3), for the modality sets V+A,
V+F, A+F and V+A+F, on EPIC-Kitchens or HAC. Names: ``{epic,hac}-{va,vf,af,vaf}-{fusion,merdg}``.

A preset names a dataset, a modality set and an algorithm, and stores only where the paper's
run differs from merdg's declared defaults: every paper value lives in one place, next to what
uses it (``docs/paper-setting.md`` gives the sources):

- training (Adam lr 1e-4, weight decay 1e-4, batch 16 with 8 per source domain, 20 epochs,
  fusion MLP 512 with dropout 0.5, LayerNorm projection heads 2048 -> 128):
  :data:`merdg.hparams.TRAINING_HPARAMS`;
- MER-DG (lambda 3, alpha_marg 1, alpha_spec 1, on the projections):
  :data:`merdg.algorithms.mer.MER_HPARAMS`;
- encoders (SlowFast R101, SlowOnly R50, VGGSound ResNet-18; trunks frozen, BatchNorm of the
  video/flow trunks in train mode, audio trunk in eval mode):
  :data:`merdg.datasets.clips.PAPER_ENCODERS` and the encoder classes' defaults;
- the one difference: the audio ``layer4`` starts from random weights, as the released code
  effectively does (``--encoders '{"audio": {"layer4_init": "checkpoint"}}'`` loads it).

Where the release is ambiguous, the choice made here:

- optimizer: ``train_mer_dg.py`` defaults to LARS from a file missing from the release; the
  presets use Adam 1e-4 / wd 1e-4 (the SimMMDG scripts the release builds on);
- epochs: 20 for every split (``run_experiments.sh``), not SimMMDG's per-split 10-25;
- HAC target test set: target train + test clips (SimMMDG's loader; the MER-DG HAC loader is
  missing from the release), ``--dataset-option target_test=test`` for the test csv only.

The presets' values are applied by :func:`merdg.run.hparams.resolve_run_hparams`, between the
algorithm's declared defaults and the user's overrides.

**MMDG-Bench's HUST and MMSA configurations** (lihongzhao99/MMDG_Benchmark, arXiv 2605.06643;
``docs/mmdg-bench.md``): ``mmdg-hust`` and ``mmdg-mmsa`` run any algorithm (``--algorithm``,
or every one of a ``merdg bench``) and load no checkpoint. The benchmark's training
configuration of each task family is the data set's own defaults (``hust``: 10,000 steps with an
evaluation every 200, Adam 1e-3, weight decay 5e-4, batch 128, the inverse learning-rate
decay, the 1-D CNNs and a linear fusion;
``mmsa``: Adam 1e-4, batch 24, 15 epochs, gradient clip 0.8, the sequence Transformers and the
residual fusion head); the presets add, per method, the values of the benchmark's task scripts
that differ from the method's default elsewhere (the ones its search does not draw: HUST CMRF's
``--sma_start_step 100`` and ``--mix_alpha 1.0``, HUST MBCD's look-ahead ``--alpha 1e-3``,
``HUSTmotor/train_HUST_{CMRF,MBCD}.py``; the JAT projection width 128 of
``MMSA/train_MMSA_JAT.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARK_PRESETS", "CHECKPOINT_FILES", "PRESETS", "Preset", "get_preset",
           "resolve_checkpoints"]

MODALITY_SETS = {"va": ["video", "audio"], "vf": ["video", "flow"], "af": ["audio", "flow"],
                 "vaf": ["video", "audio", "flow"]}
ALGORITHMS = {"fusion": "ERM", "merdg": "MERDG"}
DATASETS = {"epic": "epic-kitchens", "hac": "hac"}

# where the paper's runs differ from the declared defaults (see the module docstring)
PAPER_ENCODER_CHANGES: dict[str, dict[str, Any]] = {"audio": {"layer4_init": "random"}}

CHECKPOINT_FILES: dict[str, tuple[str, ...]] = {
    "video": ("slowfast_r101_8x8x1_256e_kinetics400_rgb_20210218-0dd54025.pth",),
    "flow": ("slowonly_r50_8x8x1_256e_kinetics400_flow_20200704-6b384243.pth",),
    "audio": ("vggsound_avgpool.pth.tar", "H.pth.tar"),
}
"""Accepted file names per modality (the official code renames VGGSound's H.pth.tar)."""

CHECKPOINT_SOURCES = {
    "video": "https://download.openmmlab.com/mmaction/recognition/slowfast/"
             "slowfast_r101_8x8x1_256e_kinetics400_rgb/",
    "flow": "https://download.openmmlab.com/mmaction/recognition/slowonly/"
            "slowonly_r50_8x8x1_256e_kinetics400_flow/",
    "audio": "http://www.robots.ox.ac.uk/~vgg/data/vggsound/models/H.pth.tar",
}


@dataclass(frozen=True)
class Preset:
    """One paper configuration.

    Attributes:
        name: ``{dataset}-{modalities}-{method}`` (the paper's), ``mmdg-{dataset}``
            (MMDG-Bench's).
        dataset: Registered dataset name.
        modalities: Modalities used.
        algorithm: ``ERM`` (Fusion) or ``MERDG`` (Fusion + MER-DG); None: any (the run's).
        hparams: Hparam values that differ from the declared defaults.
        encoders: Encoder options (per modality) that differ from the dataset's defaults.
        eval_batch_size: Evaluation batch size (evaluation runs BN in eval mode, so it does not
            change the numbers).
        algorithm_hparams: Hparam values of one algorithm (its registered name; ``X+MER``
            takes those of ``X``) that differ from its declared defaults.
        checkpoints: The preset loads the paper encoders' public checkpoints
            (``--checkpoint-dir``).
        about: Its description (default: the paper's method, modalities and dataset).
    """

    name: str
    dataset: str
    modalities: list[str]
    algorithm: str | None
    hparams: dict[str, Any] = field(default_factory=dict)
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_batch_size: int = 16
    algorithm_hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: bool = True
    about: str = ""

    def hparams_for(self, algorithm: str) -> dict[str, Any]:
        """The preset's hparam values for a run of ``algorithm``."""
        base = algorithm[:-len("+MER")] if algorithm.endswith("+MER") else algorithm
        return {**self.hparams, **self.algorithm_hparams.get(base, {})}

    @property
    def description(self) -> str:
        if self.about:
            return self.about
        method = "Fusion + MER-DG" if self.algorithm == "MERDG" else "Fusion"
        mods = "+".join({"video": "V", "audio": "A", "flow": "F"}[m] for m in self.modalities)
        return f"{method}, {mods}, {self.dataset}"


def _build_presets() -> dict[str, Preset]:
    presets = {}
    for d_key, dataset in DATASETS.items():
        for m_key, modalities in MODALITY_SETS.items():
            for a_key, algorithm in ALGORITHMS.items():
                name = f"{d_key}-{m_key}-{a_key}"
                encoders = {m: dict(v) for m, v in PAPER_ENCODER_CHANGES.items()
                            if m in modalities}
                presets[name] = Preset(name, dataset, list(modalities), algorithm,
                                       encoders=encoders)
    return presets


BENCHMARK_PRESETS = {
    "mmdg-hust": Preset(
        "mmdg-hust", "hust", ["acoustic", "vibration"], None, eval_batch_size=256,
        algorithm_hparams={"CMRF": {"sma_start_step": 100, "mix_alpha": 1.0},
                           "MBCD": {"inner_lr": 1e-3}},
        checkpoints=False,
        about="MMDG-Bench HUST (vibration + acoustic, any algorithm; docs/mmdg-bench.md)"),
    "mmdg-mmsa": Preset(
        "mmdg-mmsa", "mmsa", ["audio", "text", "vision"], None, eval_batch_size=256,
        algorithm_hparams={"JAT": {"adv_proj_dim": 128}}, checkpoints=False,
        about="MMDG-Bench MMSA (text + audio + vision, any algorithm; docs/mmdg-bench.md)"),
}

PRESETS: dict[str, Preset] = {**_build_presets(), **BENCHMARK_PRESETS}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]


def resolve_checkpoints(checkpoint_dir: str, modalities: list[str]) -> dict[str, str]:
    """``{modality: path}`` of the public checkpoints found in ``checkpoint_dir``.

    Raises:
        FileNotFoundError: Listing every missing file and where it is published (nothing is
            downloaded).
    """
    folder = Path(checkpoint_dir)
    found, missing = {}, []
    for m in modalities:
        paths = [folder / name for name in CHECKPOINT_FILES[m] if (folder / name).is_file()]
        if paths:
            found[m] = str(paths[0])
        else:
            missing.append(f"{' or '.join(CHECKPOINT_FILES[m])} ({m}; published at "
                           f"{CHECKPOINT_SOURCES[m]})")
    if missing:
        raise FileNotFoundError(f"checkpoints missing from {folder}: " + "; ".join(missing))
    return found
