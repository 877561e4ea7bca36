"""`merdg train` under torchrun (2 gloo processes on CPU) versus one process on the whole batch.

Dropout is 0 here: each rank draws its own dropout masks (ranks > 0 are reseeded after the
identical initialization, see ``training._seed_rank``), so with dropout the two runs are
statistically, not numerically, equivalent. Everything else is deterministic: the balanced
sampler gives each rank half of every global batch, MER-DG statistics are computed on the
gathered batch, DDP averages gradients, and evaluation sums counts over ranks.

Forward passes agree to ~1e-8 (a run with lr 0 gives identical records); float32 summation
order then makes Adam's updates differ slightly (parameters with near-zero gradients get
noise-driven steps), so the loss trajectories agree to a few 1e-4 after two epochs.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import merdg
from merdg.run.config import RunConfig
from merdg.run.records import read_jsonl
from merdg.run.training import train

HPARAMS = {"epochs": 2, "lr": 1e-4, "batch_size": 12, "proj_hidden": 32, "proj_dim": 4,
           "fusion_hidden": 16, "dropout": 0.0,
           "encoders": {m: {"hidden": 16, "out_dim": 8} for m in ("m0", "m1", "m2")}}
OPTIONS = {"samples_per_domain": 60, "n_classes": 3}


def epoch_values(out: Path) -> list[dict]:
    return [{"train": r["train"], "val": r["val"], "target": r["target"]}
            for r in read_jsonl(out / "records.jsonl")]


def assert_close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_close(a[k], b[k], f"{path}/{k}")
    elif path.endswith("acc") or "acc/" in path or "per_domain" in path:
        assert a == pytest.approx(b, abs=1.01 / 36), path  # at most one sample flips
    elif path.rsplit("/", 1)[-1].startswith(("aurc", "auroc", "fpr95", "ece")):
        # rankings and bins of the fused logits: a ~1e-7 logit difference can swap two
        # near-tied samples (one swapped pair moves AUROC by 1 / (correct x wrong) ~ 1e-3)
        assert a == pytest.approx(b, abs=0.02), path
    else:
        assert a == pytest.approx(b, rel=1e-3, abs=1e-3), path


@pytest.mark.ddp
@pytest.mark.parametrize("regime", ["scratch", "unimodal"])
def test_torchrun_two_ranks_match_one_process(regime, tmp_path):
    """With --init unimodal, rank 0 runs the pretraining stage and sends the selected encoders
    to rank 1: the stage is the single process' exactly."""
    settings = {} if regime == "scratch" else {"init": "unimodal", "freeze": "all-but-last"}
    hparams = HPARAMS if regime == "scratch" else {**HPARAMS, "pretrain_epochs": 2}
    single = tmp_path / "single"
    train(RunConfig(dataset="synthetic", target="d1", algorithm="MERDG", hparams=hparams,
                    dataset_options=OPTIONS, out_dir=str(single), **settings), progress=False)
    ddp = tmp_path / "ddp"
    flags = [] if regime == "scratch" else ["--init", "unimodal", "--freeze", "all-but-last"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "merdg.cli", "train", "--dataset", "synthetic", "--target", "d1",
           "--algorithm", "MERDG", "--hparams", json.dumps(hparams), "--out", str(ddp),
           *flags, *[f"--dataset-option={k}={v}" for k, v in OPTIONS.items()]]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(merdg.__file__).parents[1])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("done: MERDG, ") == 1  # only rank 0 prints
    # rank 0 alone wrote: one record per epoch, the evaluation covers every sample once
    records = list(read_jsonl(ddp / "records.jsonl"))
    assert [r["epoch"] for r in records] == [1, 2] and (ddp / "done").exists()
    assert records[0]["target"]["n"] == 60 and records[0]["val"]["n"] == 36
    assert records[0]["steps"] == list(read_jsonl(single / "records.jsonl"))[0]["steps"]
    for got, want in zip(epoch_values(ddp), epoch_values(single)):
        assert_close(got, want)
    if regime == "unimodal":
        stage = [json.loads((d / "config.json").read_text())["init"] for d in (ddp, single)]
        assert stage[0]["selected"] == stage[1]["selected"]


TEARDOWN_SCRIPT = """
import gc, os, sys
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from merdg.run.config import RunConfig
from merdg.run.training import train
train(RunConfig(dataset="synthetic", target="d1", algorithm="MERDG", hparams={hparams},
                dataset_options={options}, out_dir=sys.argv[1], init="unimodal"),
      progress=False)
alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
print(f"rank {{os.environ['RANK']}}: alive {{alive}} initialized {{dist.is_initialized()}}")
"""


@pytest.mark.ddp
def test_torchrun_run_frees_its_process_group_before_returning(tmp_path):
    """The finished run's DDP wrapper (which holds the gloo group, in a reference cycle) is
    collected inside `train`, before the group is destroyed: a gloo group freed while the
    interpreter shuts down can abort a rank after a successful run (exit -6)."""
    script = tmp_path / "teardown.py"
    hparams = {**HPARAMS, "epochs": 1, "pretrain_epochs": 1}
    script.write_text(TEARDOWN_SCRIPT.format(hparams=repr(hparams), options=repr(OPTIONS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(merdg.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script), str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # the ranks share stdout: their lines can run together, so read each report by pattern
    reports = sorted(re.findall(r"rank \d: alive \d+ initialized \w+", done.stdout))
    assert reports == ["rank 0: alive 0 initialized False", "rank 1: alive 0 initialized False"]
