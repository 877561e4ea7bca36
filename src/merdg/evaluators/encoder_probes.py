"""What each encoder knows on its own (``--encoder-probes``), at initialization and after
training.

The paper's account of fusion overfitting (MER-DG, Yarici & AlRegib, ICML 2026, arXiv
2605.01967, Sections 1 and 3) is that joint training erodes what pretrained encoders knew. To
test it, a run measures every encoder alone at initialization (after ``--init`` and
``--freeze``, before the first fused step) and on the selected model, with one recipe at both
times:

- **probe accuracy**: a linear probe on the encoder's embedding (the fusion classifier's input),
  trained on the sources' training split, its epoch chosen on the sources' validation split,
  reported on the target (:func:`merdg.evaluation.probes.train_probe`, the linear recipe);
- **effective rank** of the target embeddings (Roy & Vetterli, EUSIPCO 2007;
  :func:`merdg.evaluation.representation.effective_rank`): how many directions they spread
  over.

Unlike the ``probe_acc`` of every epoch record (probes trained along with the model, at the
model's learning rate), these probes are fit after the fact on frozen embeddings, so the number
at initialization and the number after training are comparable. The measurement at
initialization happens during training only (it is kept in the run's ``config.json``,
``encoders_at_init``); ``merdg evaluate --encoder-probes`` on a run trained without it measures
the trained encoders alone.

The probe's optimization defaults to the official recipe (:data:`merdg.evaluation.probes.PROBES`
``"linear"``: 25 epochs, Adam lr 1e-3, batch 256), sized for thousands of training samples. On
a few hundred (UTD-MHAD with single subjects as domains: 258 samples, 2 steps per epoch) it
stops far from convergence and reports near-chance accuracy for encoders that know the task
(docs/regimes.md, section 7); the settings ``probe_epochs``, ``probe_lr`` and
``probe_batch_size`` (``--probe-epochs``, ...) set it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from merdg.datasets.base import DomainConcat, collate
from merdg.datasets.open_set import known_class_part
from merdg.evaluation.chance import ChanceTest, near_chance_probes
from merdg.evaluation.probes import PROBES, LabeledFeatures, ProbeConfig, train_probe
from merdg.evaluation.representation import effective_rank
from merdg.evaluators.base import (
    EVALUATORS,
    INIT,
    MODEL,
    Column,
    Evaluator,
    Measurement,
    ResultView,
)
from merdg.evaluators.context import leaves_random_state
from merdg.hparams import seed_hash
from merdg.options import Settings, setting

__all__ = ["EncoderProbes", "chance_probes", "encoder_embeddings", "near_chance_warnings",
           "probe_encoders"]

INIT_PROBE = Column("init_probe_acc", "probe at init", family=True)
INIT_RANK = Column("init_erank", "eff. rank at init", None, False, family=True)
PROBE = Column("encoder_probe_acc", "probe after", family=True)
RANK = Column("encoder_erank", "eff. rank after", None, False, family=True)
# the same probe's source-validation accuracy (at its epoch chosen there): the chance test's
VAL_PROBE = Column("encoder_val_probe_acc", "probe after, source val", family=True)
SIDE_PROBE = "val_probe_acc"  # the clean evaluator's side probes (trained with the model)


@torch.no_grad()  # not inference mode: the probes train on these tensors
def encoder_embeddings(encoders: Mapping[str, nn.Module], data: Dataset | Sequence[Dataset],
                       device: torch.device, batch_size: int = 256,
                       num_workers: int = 0) -> tuple[dict[str, Tensor], Tensor]:
    """Every sample's embedding per encoder, in eval mode.

    Returns:
        ``({modality: (n, dim) float32 on CPU}, labels (n,))``.
    """
    parts = [data] if isinstance(data, Dataset) else list(data)
    loader = DataLoader(DomainConcat(parts), batch_size=batch_size, shuffle=False,
                        collate_fn=collate, num_workers=num_workers)
    modes = {m: e.training for m, e in encoders.items()}
    for encoder in encoders.values():
        encoder.eval()
    z: dict[str, list[Tensor]] = {m: [] for m in encoders}
    ys = []
    try:
        for batch in loader:
            batch = batch.to(device)
            for m, encoder in encoders.items():
                z[m].append(encoder(batch.x[m]).float().cpu())
            ys.append(batch.y.cpu())
    finally:
        for m, encoder in encoders.items():
            encoder.train(modes[m])
    return {m: torch.cat(v) for m, v in z.items()}, torch.cat(ys)


def probe_encoders(encoders: Mapping[str, nn.Module], train: Sequence[Dataset],
                   val: Sequence[Dataset], target: Dataset, num_classes: int,
                   device: torch.device, seed: int, batch_size: int = 256,
                   num_workers: int = 0, recipe: ProbeConfig = PROBES["linear"]
                   ) -> dict[str, dict[str, float]]:
    """Probe accuracy and effective rank of every encoder (module docstring).

    Args:
        encoders: ``{modality: encoder}`` (left in the train/eval mode they had).
        train / val: The sources' training and validation splits.
        target: The target domain (known classes only).
        num_classes: Classes of the task.
        device: Where the encoders are.
        seed: Seeds the probes (the same seed at initialization and after training).
        batch_size / num_workers: Forward passes.
        recipe: The probes' recipe (default: the linear one of
            :data:`merdg.evaluation.probes.PROBES`).

    Returns:
        ``{modality: {"probe_acc": target accuracy, "val_probe_acc": source-validation accuracy
        at the chosen probe epoch, "erank": effective rank of the target embeddings}}``.
    """
    with leaves_random_state(device):
        fit = encoder_embeddings(encoders, train, device, batch_size, num_workers)
        select = encoder_embeddings(encoders, val, device, batch_size, num_workers)
        report = encoder_embeddings(encoders, target, device, batch_size, num_workers)
        out = {}
        for m in encoders:
            probe = train_probe(LabeledFeatures(fit[0][m], fit[1]),
                                LabeledFeatures(select[0][m], select[1]),
                                LabeledFeatures(report[0][m], report[1]), num_classes,
                                recipe, seed=seed_hash("encoder-probe", seed, m))
            out[m] = {"probe_acc": probe["selected"]["test_acc"],
                      "val_probe_acc": probe["selected"]["val_acc"],
                      "erank": effective_rank(report[0][m])}
    return out


LINEAR = PROBES["linear"]


@dataclass
class EncoderProbeSettings(Settings):
    probe_epochs: int = setting(
        LINEAR.epochs, help="epochs of each encoder probe (the default is the official "
        "recipe's; raise it with --probe-lr on small data, docs/regimes.md)",
        flag="--probe-epochs", kind="int", low=1, metavar="EPOCHS")
    probe_lr: float = setting(
        LINEAR.lr, help="Adam learning rate of each encoder probe",
        flag="--probe-lr", kind="float", low=0, low_open=True, metavar="LR")
    probe_batch_size: int = setting(
        LINEAR.batch_size, help="batch size of each encoder probe",
        flag="--probe-batch-size", kind="int", low=1, metavar="SIZE")


@EVALUATORS.register("encoder_probes")
class EncoderProbes(Evaluator):
    """Linear-probe accuracy and effective rank of each encoder alone, at initialization and
    on the selected model."""

    name = "encoder_probes"
    description = ("each encoder alone: linear-probe accuracy on the target and effective rank, "
                   "at initialization and on the selected model")
    times = frozenset({INIT, MODEL})
    Settings = EncoderProbeSettings
    request_flag = "--encoder-probes"
    request_help = ("measure each encoder alone (a linear probe on its embedding: fit on the "
                    "sources' training split, epoch chosen on their validation split, accuracy "
                    "on the target; and the effective rank of its target embeddings) at "
                    "initialization and on the selected model (docs/regimes.md)")
    columns = (INIT_PROBE, INIT_RANK, PROBE, RANK, VAL_PROBE)

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Only the settings that differ from the official recipe: ``--encoder-probes`` alone
        stays ``{}``, as before these settings existed (same settings hash, so evaluations
        already written are found again)."""
        defaults = {n: d for n, _, d in cls.Settings.options()}
        return {n: v for n, v in values.items() if v != defaults[n]}

    @property
    def settings_dict(self) -> dict[str, Any]:
        """The canonical settings (:meth:`normalize`), which name the evaluation files."""
        return self.normalize(super().settings_dict)

    def probe_config(self) -> ProbeConfig:
        """The probes' recipe: the linear one with these settings."""
        return dataclasses.replace(LINEAR, epochs=self.settings.probe_epochs,
                                   lr=self.settings.probe_lr,
                                   batch_size=self.settings.probe_batch_size)

    def _measure(self, context: Any) -> dict[str, dict[str, float]]:
        run = context.run
        target = context.target_set
        if run.known_classes is not None:  # open set: the probes see the known classes only
            target = known_class_part(run.dataset.split(run.target, "test",
                                                         run.config.holdout_seed(),
                                                         run.config.holdout_fraction),
                                      run.known_classes)
        return probe_encoders(dict(context.algorithm.net.encoders.items()),
                              context.train_parts, list(context.val_sets.values()), target,
                              run.num_classes, context.device, context.seed,
                              context.batch_size, context.num_workers, self.probe_config())

    def measure_init(self, context: Any) -> dict[str, Any]:
        """``{"encoders_at_init": {modality: {"probe_acc", "val_probe_acc", "erank"}}}`` of
        the untrained encoders (an entry of the run's info)."""
        return {"encoders_at_init": self._measure(context)}

    def measure(self, context: Any) -> Measurement:
        after = self._measure(context)
        columns: dict[str, float | None] = {}
        for m, values in after.items():
            columns[PROBE.key(m)], columns[RANK.key(m)] = values["probe_acc"], values["erank"]
            columns[VAL_PROBE.key(m)] = values["val_probe_acc"]
        at_init = context.run_info.get("encoders_at_init") or {}
        for m, values in at_init.items():
            columns[INIT_PROBE.key(m)] = values["probe_acc"]
            columns[INIT_RANK.key(m)] = values["erank"]
        return Measurement(columns, {"after": after, "at_init": at_init})

    @classmethod
    def legacy_columns(cls, record: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (probe, rank), measured in (((INIT_PROBE, INIT_RANK), run.get("encoders_at_init")),
                                        ((PROBE, RANK), record.get("encoders"))):
            for m, values in (measured or {}).items():
                out[probe.key(m)], out[rank.key(m)] = values["probe_acc"], values["erank"]
        for m, values in (record.get("encoders") or {}).items():
            if "val_probe_acc" in values:
                out[VAL_PROBE.key(m)] = values["val_probe_acc"]
        return out

    def report(self, view: ResultView) -> list[str]:
        modalities = sorted(set(view.members(PROBE)) | set(view.members(INIT_PROBE)))
        if not modalities:
            return []
        keys = []
        for m in modalities:
            keys += [(INIT_PROBE.key(m), f"{m} probe at init"), (PROBE.key(m), f"{m} probe after"),
                     (INIT_RANK.key(m), f"{m} eff. rank at init"),
                     (RANK.key(m), f"{m} eff. rank after")]
        return ["## Encoders alone (--encoder-probes)", "",
                "Each encoder alone at initialization and on the selected model: target "
                "accuracy of a linear probe fit on its frozen source embeddings (%), and the "
                "effective rank of its target embeddings (docs/regimes.md).", "",
                view.average_tables(keys, "encoders alone")]


# --- the chance test of each encoder ---------------------------------------------------------

def chance_probes(row: Mapping[str, Any]) -> tuple[str, dict[str, ChanceTest]]:
    """Which probe a run's chance test reads, and the modalities whose probe is within noise
    of chance on source validation (:func:`merdg.evaluation.chance.near_chance_probes`).

    The test reads the encoder: the linear probe fit on the frozen encoder of the selected
    model (``encoder_val_probe_acc/<m>``, ``--encoder-probes``) when the row has it. Otherwise
    it reads the side probe trained along with the model (``val_probe_acc/<m>``), which may
    not have converged (few epochs, a learning rate tuned for the fused model), and says so.

    Args:
        row: A row of :func:`merdg.run.records.run_rows` (``val_n``, ``num_classes``).

    Returns:
        ``("encoder" | "side", {modality: test})`` (``{}`` without what the test needs).
    """
    num_classes = int(row.get("num_classes") or 0)
    encoder = VAL_PROBE.members(row)
    which, prefix = ("encoder", VAL_PROBE.name) if encoder else ("side", SIDE_PROBE)
    if num_classes < 2 or not row.get("val_n"):
        return which, {}
    probes = {k.split("/", 1)[1]: v for k, v in row.items()
              if k.startswith(prefix + "/") and v is not None}
    return which, near_chance_probes(probes, int(row["val_n"]), num_classes)


PROBE_WORDS = {
    "encoder": ("{m} encoder (a linear probe fit on the frozen encoder, --encoder-probes) on "
                "source validation", "the encoder"),
    "side": ("{m} side probe (the linear head trained along with the model, which may not have "
             "converged; --encoder-probes fits one on the frozen encoder) on source validation",
             "the side probe"),
}


def near_chance_warnings(row: Mapping[str, Any]) -> list[str]:
    """One line per modality whose probe is within noise of chance at the selected epoch
    (:func:`chance_probes`), naming the probe it read: the encoder may have learned nothing
    measurable, and the fused model may silently ignore the modality."""
    which, flagged = chance_probes(row)
    name, subject = PROBE_WORDS[which]
    return [test.describe(name.format(m=m), subject) for m, test in flagged.items()]
