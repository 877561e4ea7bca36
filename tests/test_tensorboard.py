"""Optional TensorBoard logging of training runs."""

import pytest

from merdg.run.config import RunConfig
from merdg.run.records import read_jsonl
from merdg.run.tensorboard import flatten_scalars
from merdg.run.training import train

pytest.importorskip("tensorboard")


def event_scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_flatten_scalars():
    tree = {"a": 1, "b": {"c": 2.5, "d": {"e": 3}}, "s": "x", "flag": True, "n": None}
    assert dict(flatten_scalars(tree, "p")) == {"p/a": 1.0, "p/b/c": 2.5, "p/b/d/e": 3.0}


def test_training_logs_every_scalar(tmp_path, tiny_hparams, tiny_synthetic_options):
    config = RunConfig(dataset="synthetic", target="d1", algorithm="MERDG", hparams=tiny_hparams,
                       dataset_options=tiny_synthetic_options, out_dir=str(tmp_path),
                       tensorboard=True)
    train(config, progress=False)
    scalars = event_scalars(tmp_path / "tensorboard")
    records = list(read_jsonl(tmp_path / "records.jsonl"))
    steps_per_epoch = records[0]["steps"]
    # per epoch: what records.jsonl holds, at the step count of the epoch's end
    for tag in ("val/acc", "target/acc", "target/loss", "train/ce", "train/mer",
                "train/mer_spec/m0", "train/mer_marg/m2", "target/probe_acc/m1",
                "val/per_domain/d0", "time_s", "epoch"):
        assert [s for s, _ in scalars[tag]] == [r["steps"] for r in records], tag
    assert scalars["val/acc"][-1][1] == pytest.approx(records[-1]["val"]["acc"])
    assert scalars["train/mer_spec/m1"][0][1] == pytest.approx(
        records[0]["train"]["mer_spec/m1"], rel=1e-6)
    # per step: every training step's terms
    assert [s for s, _ in scalars["step/ce"]] == list(range(1, 2 * steps_per_epoch + 1))
    assert "step/mer_spec/m2" in scalars
    # a rerun replaces the previous events instead of mixing two runs
    train(config, progress=False)
    assert len(event_scalars(tmp_path / "tensorboard")["val/acc"]) == len(records)


def test_tensorboard_needs_an_output_directory(tiny_hparams, tiny_synthetic_options):
    with pytest.raises(ValueError, match="needs an out_dir"):
        train(RunConfig(dataset="synthetic", target="d1", hparams=tiny_hparams,
                        dataset_options=tiny_synthetic_options, tensorboard=True),
              progress=False)
