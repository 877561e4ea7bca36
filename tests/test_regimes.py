"""Training regimes of a run: --init scratch|unimodal|PATH, --freeze, --freeze-bn,
--encoder-probes, and `merdg pretrain` (docs/regimes.md)."""

import hashlib
import json
from typing import ClassVar

import pytest
import torch

import merdg.run.training as training
import run_outputs
from merdg.cli import main
from merdg.datasets import DATASETS, DomainDataset
from merdg.datasets.base import TensorSamples
from merdg.models.transfer import encoder_blocks
from merdg.run.checkpoint import CheckpointMismatchError
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.pretraining import UnimodalPretraining
from merdg.run.records import read_jsonl
from merdg.run.training import train


class Crash(Exception):
    """Stands in for the process dying."""


def config(out, tiny_hparams, tiny_synthetic_options, **kw):
    hparams = {**tiny_hparams, **kw.pop("hparams", {})}
    return RunConfig(dataset="synthetic", target="d2", algorithm=kw.pop("algorithm", "MERDG"),
                     hparams=hparams, dataset_options=tiny_synthetic_options,
                     out_dir=None if out is None else str(out), **kw)


def built(cfg):
    """The run's algorithm as it starts fused training (no run directory)."""
    training.seed_everything(cfg.seed)
    run = training._setup_run(cfg, torch.device("cpu"), None)
    training._build(run, resume=True)
    return run


def without_times(value):
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k != "time_s"}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# --init unimodal


def test_unimodal_stage_changes_only_the_encoders(tiny_hparams, tiny_synthetic_options):
    """The stage trains the encoders (and heads of its own that the run does not keep); the
    fusion classifier, projection heads and probes start exactly as from scratch."""
    scratch = built(config(None, tiny_hparams, tiny_synthetic_options))
    unimodal = built(config(None, tiny_hparams, tiny_synthetic_options, init="unimodal",
                            hparams={"pretrain_epochs": 2}))
    a, b = scratch.algorithm.state_dict(), unimodal.algorithm.state_dict()
    assert a.keys() == b.keys()
    encoder_keys = [k for k in a if k.startswith("net.encoders.")]
    others = [k for k in a if k not in encoder_keys]
    assert others and all(torch.equal(a[k], b[k]) for k in others)
    weights = [k for k in encoder_keys if k.endswith("weight")]
    assert weights and all(not torch.equal(a[k], b[k]) for k in weights)
    stage = unimodal.run_info["init"]
    assert stage["kind"] == "unimodal" and stage["epochs"] == 2 and len(stage["records"]) == 2
    assert set(stage["selected"]) == {"m0", "m1", "m2"}
    assert stage["hparams"]["lr"] == unimodal.hparams["pretrain_lr"] == unimodal.hparams["lr"]


def test_pretrain_hparams_need_the_unimodal_stage(tiny_hparams, tiny_synthetic_options):
    cfg = config(None, tiny_hparams, tiny_synthetic_options, hparams={"pretrain_epochs": 2})
    with pytest.raises(ValueError, match=r"\['pretrain_epochs'\].*--init unimodal only"):
        training._setup_run(cfg, torch.device("cpu"), None)


def stage_crash_at(epoch, monkeypatch):
    """Kill the run when the pretraining stage starts its ``epoch``-th epoch (1-based)."""
    original = UnimodalPretraining.run_epoch
    calls = []

    def run_epoch(self):
        calls.append(self.epochs_done + 1)
        if self.epochs_done + 1 == epoch:
            raise Crash
        return original(self)

    monkeypatch.setattr(UnimodalPretraining, "run_epoch", run_epoch)
    return calls


def outcome(out):
    info = json.loads((out / RunDir.CONFIG).read_text())
    return (run_outputs.records(out), run_outputs.summary_rows(out),
            run_outputs.evaluations(out), without_times(info["init"]))


def test_resume_in_the_middle_of_the_pretraining_stage(tmp_path, tiny_hparams,
                                                       tiny_synthetic_options, monkeypatch):
    kw = {"init": "unimodal", "hparams": {"pretrain_epochs": 3, "epochs": 2}}
    reference = tmp_path / "uninterrupted"
    train(config(reference, tiny_hparams, tiny_synthetic_options, **kw), progress=False)
    out = tmp_path / "killed"
    cfg = config(out, tiny_hparams, tiny_synthetic_options, **kw)
    with monkeypatch.context() as patch:
        stage_crash_at(3, patch)  # after the stage saved epochs 1 and 2
        with pytest.raises(Crash):
            train(cfg, progress=False)
    assert (out / RunDir.PRETRAINING).exists() and (out / RunDir.CONFIG).exists()
    assert not (out / RunDir.RECORDS).exists()
    assert RunDir(out).status(cfg) == "incomplete"
    with monkeypatch.context() as patch:
        calls = stage_crash_at(0, patch)  # never crashes; counts the epochs run
        train(cfg, progress=False)
    assert calls == [3]
    assert outcome(out) == outcome(reference)
    assert not (out / RunDir.PRETRAINING).exists() and (out / RunDir.DONE).exists()


def test_a_pretraining_state_of_another_run_is_refused(tmp_path, tiny_hparams,
                                                       tiny_synthetic_options, monkeypatch):
    out = tmp_path / "run"
    kw = {"init": "unimodal", "hparams": {"pretrain_epochs": 3}}
    with monkeypatch.context() as patch:
        stage_crash_at(2, patch)
        with pytest.raises(Crash):
            train(config(out, tiny_hparams, tiny_synthetic_options, **kw), progress=False)
    other = config(out, tiny_hparams, tiny_synthetic_options, init="unimodal",
                   hparams={"pretrain_epochs": 3, "pretrain_lr": 0.5})
    with pytest.raises(CheckpointMismatchError, match=r"pretrain_lr: 0\.001 .* vs 0\.5"):
        train(other, progress=False)
    train(other, progress=False, resume=False)  # an explicit restart starts the stage over
    assert json.loads((out / RunDir.CONFIG).read_text())["init"]["hparams"]["lr"] == 0.5


def test_a_damaged_pretraining_state_stops_with_one_line(tmp_path, tiny_hparams,
                                                         tiny_synthetic_options, monkeypatch):
    out = tmp_path / "run"
    cfg = config(out, tiny_hparams, tiny_synthetic_options, init="unimodal",
                 hparams={"pretrain_epochs": 3, "epochs": 1})
    with monkeypatch.context() as patch:
        stage_crash_at(2, patch)
        with pytest.raises(Crash):
            train(cfg, progress=False)
    state = out / RunDir.PRETRAINING
    assert (out / RunDir.PRETRAINING_DIGEST).exists()
    data = bytearray(state.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    state.write_bytes(bytes(data))
    with pytest.raises(ValueError) as raised:
        train(cfg, progress=False)
    assert str(raised.value).startswith(f"{state}: damaged (its sha256")
    assert str(raised.value).endswith(f"delete {state} to run the pretraining stage again, or "
                                      "start the run over with --restart")
    state.unlink()
    train(cfg, progress=False)  # the stage runs again from its start
    assert (out / RunDir.DONE).exists()
    assert not (out / RunDir.PRETRAINING_DIGEST).exists()


# --------------------------------------------------------------------------------------------
# --init PATH


def encoder_state(model_file):
    state = torch.load(model_file, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.encoders.")}


def test_init_path_round_trips_a_runs_encoders_through_merdg_train(tmp_path, tiny_hparams):
    common = ["train", "--dataset", "synthetic", "--target", "d1", "--dataset-option",
              "samples_per_domain=60", "--dataset-option", "n_classes=3", "--hparams",
              json.dumps(tiny_hparams), "--save-model", "selected"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main([*common, "--algorithm", "MERDG", "--seed", "1", "--out", str(first)]) == 0
    weights = first / RunDir.MODEL
    # a different algorithm and seed, every encoder tensor loaded and frozen
    assert main([*common, "--algorithm", "ERM", "--init", str(weights), "--freeze",
                 "m0,m1,m2", "--encoder-probes", "--out", str(second)]) == 0
    a, b = encoder_state(weights), encoder_state(second / RunDir.MODEL)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((second / RunDir.CONFIG).read_text())
    assert info["init"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert info["identity"]["init_sha256"] == info["init"]["sha256"]
    assert info["init"]["load"]["layout"] == "run"
    assert {m: e["loaded"] for m, e in info["init"]["load"]["encoders"].items()} == {
        m: sum(1 for k in a if k.startswith(f"net.encoders.{m}.")) for m in ("m0", "m1", "m2")}
    assert all(e["trainable_tensors"] == 0 for e in info["freeze"]["encoders"].values())
    # frozen encoders: the measurement after training equals the one at initialization
    probes = [e for e in RunDir(second).read_evaluations() if e["evaluator"] == "encoder_probes"]
    assert len(probes) == 1 and probes[0]["details"]["after"] == info["encoders_at_init"]
    assert probes[0]["details"]["at_init"] == info["encoders_at_init"]


def test_init_path_errors_name_the_culprit(tmp_path, tiny_hparams, tiny_synthetic_options,
                                           capsys):
    with pytest.raises(ValueError, match=r"init \(--init\) '.*missing.pt': no such file"):
        config(None, tiny_hparams, tiny_synthetic_options, init=str(tmp_path / "missing.pt"))
    small = {m: {"hidden": 4, "out_dim": 8} for m in ("m0", "m1", "m2")}
    other = {m: torch.zeros(2) for m in small}
    torch.save({f"{m}.net.1.weight": v for m, v in other.items()}, tmp_path / "other.pt")
    code = main(["train", "--dataset", "synthetic", "--target", "d1", "--init",
                 str(tmp_path / "other.pt"), "--out", str(tmp_path / "run"), "--dataset-option",
                 "samples_per_domain=60", "--hparams", json.dumps(tiny_hparams)])
    assert code == 2
    assert "other.pt does not match the m0 encoder" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"freeze_bn \(--freeze-bn\) 'train' needs --freeze"):
        config(None, tiny_hparams, tiny_synthetic_options, freeze_bn="train")


def test_merdg_pretrain_writes_what_init_loads(tmp_path, tiny_hparams, capsys):
    encoders = json.dumps(tiny_hparams["encoders"])
    file = tmp_path / "encoders.pt"
    assert main(["pretrain", "--out", str(file), "--epochs", "1", "--encoders", encoders,
                 "--dataset-option", "n_classes=3", "--dataset-option", "corpus_domains=2",
                 "--dataset-option", "samples_per_domain=60"]) == 0
    assert main(["pretrain", "--out", str(file), "--epochs", "1"]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--target", "d1", "--init", str(file),
                 "--out", str(out), "--dataset-option", "samples_per_domain=60",
                 "--dataset-option", "n_classes=3", "--hparams", json.dumps(tiny_hparams)]) == 0
    info = json.loads((out / RunDir.CONFIG).read_text())
    assert info["init"]["load"]["layout"] == "encoders"
    assert sorted(info["init"]["load"]["encoders"]) == ["m0", "m1", "m2"]


# --------------------------------------------------------------------------------------------
# --freeze over a whole run


class SequenceDomains(DomainDataset):
    """Three domains of (T, C) sequences for a BatchNorm encoder (TCN) and vectors (MLP)."""

    ALL_MODALITIES = ("seq", "vec")
    ENCODERS: ClassVar[dict] = {"seq": {"name": "tcn", "channels": [4, 6, 8]},
                                "vec": {"name": "mlp", "hidden": 8, "out_dim": 8}}

    def __init__(self, root=None, modalities=None):
        self.modalities = self.select_modalities(modalities)
        self.domains, self.num_classes, self.class_names = ["a", "b", "c"], 3, ["x", "y", "z"]
        g = torch.Generator().manual_seed(0)
        self._samples = {d: TensorSamples({"seq": torch.randn(30, 16, 4, generator=g),
                                           "vec": torch.randn(30, 5, generator=g)},
                                          torch.arange(30) % 3) for d in self.domains}

    def input_shape(self, modality):
        return {"seq": (16, 4), "vec": (5,)}[modality]

    def domain_samples(self, domain):
        return self._samples[domain]


@pytest.fixture
def sequence_dataset(monkeypatch):
    monkeypatch.setitem(DATASETS._items, "test-sequences", SequenceDomains)
    return "test-sequences"


def batchnorm_buffers(state, frozen_prefixes):
    return {k: v for k, v in state.items() if "running" in k
            and any(k.startswith(p + ".") for p in frozen_prefixes)}


@pytest.mark.parametrize("bn", ["frozen", "train"])
def test_frozen_parameters_stay_over_a_training_run(bn, tmp_path, sequence_dataset):
    cfg = RunConfig(dataset=sequence_dataset, target="c", algorithm="MERDG", freeze="all-but-last",
                    freeze_bn=bn, save_model="selected+last", out_dir=str(tmp_path / "run"),
                    hparams={"epochs": 2, "batch_size": 8, "proj_hidden": 8,
                             "fusion_hidden": 8})
    start = built(RunConfig(**{**cfg.to_dict(), "out_dir": None}))
    initial = {k: v.clone() for k, v in start.algorithm.state_dict().items()}
    frozen = [n for n, p in start.algorithm.named_parameters() if not p.requires_grad]
    blocks = {m: encoder_blocks(e) for m, e in start.algorithm.net.encoders.items()}
    frozen_blocks = [f"net.encoders.{m}.{name}" for m, b in blocks.items()
                     for block in b[:-1] for name in block]
    last_blocks = [f"net.encoders.{m}.{name}" for m, b in blocks.items() for name in b[-1]]
    train(cfg, progress=False)
    final = RunDir(tmp_path / "run").read_model_state("last")  # the last epoch's weights
    assert frozen and {n.rsplit(".", 1)[0].rsplit(".", 1)[0] for n in frozen} >= {
        "net.encoders.vec.net", "net.encoders.seq.blocks"}
    assert all(torch.equal(initial[n], final[n]) for n in frozen)
    trainable_encoder = [n for n, p in start.algorithm.named_parameters()
                         if p.requires_grad and n.startswith("net.encoders.")]
    assert trainable_encoder and all(any(n.startswith(b + ".") for b in last_blocks)
                                     for n in trainable_encoder)
    assert any(not torch.equal(initial[n], final[n]) for n in trainable_encoder)
    held = batchnorm_buffers(initial, frozen_blocks)
    assert held
    unchanged = [torch.equal(v, final[k]) for k, v in held.items()]
    assert all(unchanged) if bn == "frozen" else not any(unchanged)
    last = batchnorm_buffers(initial, last_blocks)
    assert last and all(not torch.equal(v, final[k]) for k, v in last.items())
    info = json.loads((tmp_path / "run" / RunDir.CONFIG).read_text())
    assert info["freeze"]["bn"] == bn and info["freeze"]["spec"] == "all-but-last"
    assert info["freeze"]["encoders"]["seq"]["held_batchnorm"] == (2 if bn == "frozen" else 0)


def test_encoder_probes_do_not_change_training(tmp_path, tiny_hparams, tiny_synthetic_options):
    plain = tmp_path / "plain"
    probed = tmp_path / "probed"
    train(config(plain, tiny_hparams, tiny_synthetic_options), progress=False)
    train(config(probed, tiny_hparams, tiny_synthetic_options,
                 evaluations={"encoder_probes": {}}), progress=False)
    assert run_outputs.records(plain) == run_outputs.records(probed)
    plain_rows, probed_rows = run_outputs.summary_rows(plain), run_outputs.summary_rows(probed)
    for rule, row in plain_rows.items():  # the same, plus the probes' columns
        assert {k: v for k, v in probed_rows[rule].items() if k in row} == row
    selected = probed_rows["source_val"]
    assert {k for k in selected if k not in plain_rows["source_val"]} == {
        f"{c}/{m}" for c in ("init_probe_acc", "init_erank", "encoder_probe_acc",
                             "encoder_erank", "encoder_val_probe_acc") for m in ("m0", "m1", "m2")}
    init = list(read_jsonl(probed / RunDir.RECORDS))[0]["run"]["encoders_at_init"]
    assert all(0 <= e["probe_acc"] <= 1 and 1 <= e["erank"] <= 8 for e in init.values())
    assert {m: selected[f"init_probe_acc/{m}"] for m in init} == {
        m: e["probe_acc"] for m, e in init.items()}



def test_encoder_probe_recipe_is_a_setting_that_small_data_needs(tmp_path):
    """The official probe recipe (25 epochs, lr 1e-3, batch 256) takes 2 steps per epoch on 270
    samples and stays near chance on classes a linear readout separates perfectly; the
    evaluator's settings give a recipe that converges."""
    from merdg.evaluators import canonical_evaluations
    from merdg.evaluators.base import settings_hash
    from merdg.evaluators.encoder_probes import EncoderProbes, probe_encoders

    generator = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(27, 16, generator=generator)

    def part(per_class: int) -> TensorSamples:  # 27 well-separated classes in 16 dimensions
        y = torch.arange(27).repeat(per_class)
        return TensorSamples({"m": centers[y] + torch.randn(len(y), 16, generator=generator)}, y)

    train_part, val, target = part(10), part(3), part(4)

    def accuracy(settings: dict) -> float:
        recipe = EncoderProbes.from_settings(settings).probe_config()
        return probe_encoders({"m": torch.nn.Identity()}, [train_part], [val], target, 27,
                              torch.device("cpu"), seed=0, recipe=recipe)["m"]["probe_acc"]

    assert accuracy({}) < 0.3
    assert accuracy({"probe_epochs": 100, "probe_lr": 1e-2, "probe_batch_size": 64}) > 0.95
    # the official recipe stays `{}`, and its evaluation files keep their names
    assert canonical_evaluations({"encoder_probes": {"probe_epochs": 25, "probe_lr": 1e-3}}) == {
        "encoder_probes": {}}
    assert EncoderProbes.from_settings({}).file_key() == (
        f"encoder_probes-{settings_hash('encoder_probes', {})}")
    tuned = EncoderProbes.from_settings({"probe_lr": 0.01, "probe_batch_size": 256})
    assert tuned.settings_dict == {"probe_lr": 0.01}
    with pytest.raises(ValueError, match=r"probe_epochs \(--probe-epochs\) must be >= 1"):
        canonical_evaluations({"encoder_probes": {"probe_epochs": 0}})
    # on the command line: a probe setting asks for the evaluation
    run_dir = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--target", "d0", "--hparams",
                 '{"epochs": 1}', "--dataset-option", "samples_per_domain=60",
                 "--dataset-option", "n_classes=3", "--probe-epochs", "2", "--out",
                 str(run_dir)]) == 0
    config = json.loads((run_dir / RunDir.CONFIG).read_text())
    assert config["config"]["evaluations"]["encoder_probes"] == {"probe_epochs": 2}
    assert set(config["encoders_at_init"]) == {"m0", "m1", "m2"}
