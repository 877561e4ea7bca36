"""MMDG-Bench's other task families end to end: the regression task kind (every algorithm's
statement, the L1 loss, HUST's learning-rate schedule) and benches of ERM, MER-DG and two
baselines on the HUST and MMSA fixtures through bench, collect, evaluate, sweep and
diagnose."""

import csv
import json

import pytest
import torch

from merdg.algorithms import ALGORITHMS, check_task, get_algorithm_class
from merdg.cli import main
from merdg.datasets.base import Batch, sign_classes
from merdg.models import MultimodalNet
from merdg.models.encoders import MLPEncoder
from merdg.testing import make_hust_fixture, make_mmsa_fixture

MMSA_TINY = ["--hparams", json.dumps({"epochs": 2, "batch_size": 8, "proj_hidden": 16,
                                      "proj_dim": 8, "fusion_hidden": 8}),
             "--encoders", json.dumps({m: {"dim": 8, "heads": 2, "layers": 1}
                                       for m in ("text", "audio", "vision")})]
HUST_TINY = ["--dataset-option", "window=64", "--dataset-option", "train_windows=12",
             "--dataset-option", "test_windows=6", "--dataset-option", "val_per_class=3",
             "--hparams", json.dumps({"steps": 16, "eval_every": 4, "batch_size": 18,
                                      "proj_hidden": 16, "proj_dim": 8})]
BASELINES = "ERM,MERDG,SimMMDG,CMRF"


def regression_setup(name: str, **overrides):
    torch.manual_seed(0)
    encoders = {m: MLPEncoder((5,), hidden=8, out_dim=8) for m in ("a", "b")}
    net = MultimodalNet(encoders, 3, fusion_hidden=8, proj_hidden=8, proj_dim=4,
                        task="regression", fusion="residual")
    cls = get_algorithm_class(name)
    from merdg.hparams import TRAINING_HPARAMS, resolve_hparams

    hparams = resolve_hparams(TRAINING_HPARAMS, cls.HPARAMS, overrides=overrides)
    hparams.update(batch_size=12, proj_hidden=8, proj_dim=4, fusion_hidden=8)
    algorithm = cls(net, 2, hparams)
    target = torch.linspace(-3, 3, 12)
    batch = Batch({m: torch.randn(12, 5) for m in ("a", "b")}, sign_classes(target),
                  torch.arange(12) % 2, target)
    return algorithm, batch


@pytest.mark.parametrize("name", sorted(ALGORITHMS.names()))
def test_every_algorithm_says_how_it_runs_on_regression_or_refuses(name):
    cls = ALGORITHMS.get(name)
    if cls.REGRESSION is None:
        assert cls.REGRESSION_REFUSAL
        with pytest.raises(ValueError, match=f"^{name} does not run on a regression task: "):
            check_task(name, cls, "regression")
        return
    check_task(name, cls, "regression")
    check_task(name + "+MER", get_algorithm_class(name + "+MER"), "regression")
    if cls.OPEN_SET_ONLY:
        return
    algorithm, batch = regression_setup(name)
    logs = algorithm.update(batch)
    assert "l1" in logs and "ce" not in logs and all(map(torch.isfinite, torch.tensor(
        list(logs.values()))))
    assert algorithm.evaluate(batch.x).logits.shape == (12, 1)


def test_the_fused_term_is_the_l1_of_the_one_output():
    algorithm, batch = regression_setup("ERM")
    objective = algorithm.objective(batch)
    output = objective.out.logits[:, 0]
    assert float(objective.logs["l1"].detach()) == pytest.approx(
        float((output - batch.target).abs().mean().detach()))
    assert objective.out.probe_logits["a"].shape == (12, 3)  # probes: the sign classes


def test_the_inverse_schedule_of_hust():
    algorithm, batch = regression_setup("ERM", lr=1e-3)
    algorithm.lr_schedule, algorithm.lr_decay_steps = "inverse", 10
    for step in range(1, 5):
        algorithm.update(batch)  # step i uses lr / (1 + 10 (i - 1) / I) ** 0.75
        expected = 1e-3 / (1 + 10 * (step - 1) / 10) ** 0.75
        assert algorithm.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_mmsa_bench_collect_evaluate_and_sweep(tmp_path, capsys):
    data = make_mmsa_fixture(tmp_path / "data", counts=(16, 8, 8))
    base = ["--dataset", "mmsa", "--data-root", str(data), *MMSA_TINY]
    assert main(["bench", *base, "--algorithms", "ERM,MBCD", "--targets", "sims", "--seeds", "1",
                 "--out", str(tmp_path / "refused")]) == 2
    assert "MBCD does not run on a regression task" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "bench"
    assert main(["bench", *base, "--algorithms", BASELINES, "--targets", "sims", "--seeds", "2",
                 "--workers", "1", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    for words in ("target Acc-2 (prediction > 0 vs label > 0)", "target MAE, ",
                  "paired difference in target MAE against ERM (its own units)",
                  "paired difference in target F1", "target Acc-7", "target Acc-5",
                  "target Corr"):
        assert words in table, words
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["task"] for r in rows} == {"regression"} and len(rows) == 4 * 2 * 3
    assert all(float(r["target_mae"]) > 0 for r in rows)
    capsys.readouterr()
    assert main(["collect", str(out)]) == 0
    assert "paired difference in target MAE" in capsys.readouterr().out
    run = out / "runs" / "audio+text+vision" / "CMRF" / "sims" / "seed0"
    assert main(["evaluate", str(run), "--corruptions", "token_drop,missing",
                 "--severities", "2"]) == 0
    evaluation = json.loads(next((run / "evaluations").glob("corruptions-*.json")).read_text())
    assert evaluation["columns"]["target_corruption_mae"] > 0
    sweep = tmp_path / "sweep"
    assert main(["sweep", *base, "--algorithms", "ERM", "--trials", "1", "--seeds", "1",
                 "--setting", "single", "--targets", "sims", "--out", str(sweep)]) == 0
    assert "mosei->sims" in (sweep / "table.md").read_text()


def test_hust_bench_with_diagnostics(tmp_path):
    data = make_hust_fixture(tmp_path / "data", window=64, train_windows=12, test_windows=6)
    assert main(["data", "check", "--dataset", "hust", "--data-root", str(data),
                 *HUST_TINY[:8]]) == 0
    out = tmp_path / "bench"
    assert main(["bench", "--preset", "mmdg-hust", "--data-root", str(data), *HUST_TINY,
                 "--algorithms", BASELINES, "--targets", "D1", "--seeds", "1",
                 "--workers", "1", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "hust: target accuracy (%)" in table and "paired difference" in table
    runs = [str(out / "runs" / "acoustic+vibration" / a / "D1" / "seed0") for a in ("ERM", "MERDG")]
    assert main(["diagnose", *runs, "--out", str(tmp_path / "diagnosis"), "--probes", "linear",
                 "--probe-epochs", "2", "--no-figures"]) == 0
    assert "MERDG" in (tmp_path / "diagnosis" / "report.md").read_text()
    record = json.loads((out / "runs" / "acoustic+vibration" / "ERM" / "D1" / "seed0"
                         / "records.jsonl").read_text().splitlines()[0])
    assert record["run"]["hparams"]["fusion"] == "linear"
    assert (record["epoch"], record["steps"]) == (1, 4)  # the first of 4 evaluations, 4 steps
    hust = json.loads((out / "runs" / "acoustic+vibration" / "ERM" / "D1" / "seed0"
                       / "summary.json").read_text())
    assert hust["epochs"] == 4 and hust["run"]["hparams"]["lr_schedule"] == "inverse"
    cmrf = json.loads((out / "runs" / "acoustic+vibration" / "CMRF" / "D1" / "seed0"
                       / "records.jsonl").read_text().splitlines()[0])["run"]["hparams"]
    assert (cmrf["sma_start_step"], cmrf["mix_alpha"]) == (100, 1.0)  # the preset's HUST values
    assert record["run"]["hparams"]["encoders"]["vibration"]["name"] == "cnn1d"


def test_the_docs_state_every_algorithms_regression_behaviour():
    from pathlib import Path

    docs = (Path(__file__).parents[1] / "docs" / "mmdg-bench.md").read_text()
    rows = {line for line in docs.splitlines() if line.startswith("| `")}
    for name in ALGORITHMS.names():
        cls = ALGORITHMS.get(name)
        text = cls.REGRESSION or f"refused: {cls.REGRESSION_REFUSAL}"
        assert f"| `{name}` | {text} |" in rows, name


def test_husts_step_budget_and_its_schedule_are_checked_before_a_run(tmp_path, capsys):
    data = make_hust_fixture(tmp_path / "data", window=64, train_windows=12, test_windows=6)
    base = ["train", "--preset", "mmdg-hust", "--data-root", str(data), "--target", "D1",
            *HUST_TINY[:8], "--out", str(tmp_path / "run")]
    assert main([*base, "--hparams", '{"epochs": 3}']) == 2
    assert "this run has a step budget, steps = 10000" in capsys.readouterr().err
    assert main([*base, "--hparams", '{"steps": 0, "epochs": 3}']) == 2
    assert "lr_schedule = 'inverse' needs its length" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
