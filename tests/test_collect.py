"""`merdg collect`: trial choice and tables from fixture run directories (exact text)."""

import json

import pytest

from merdg.cli import main
from merdg.experiments.report import write_tables
from merdg.experiments.results import build_tables, choose_trial, load_rows


def write_run(root, name, *, algo, target, seed, trial, epochs, mods=("a", "b"), done=True,
              **config):
    """A finished run: ``epochs`` = [(val acc, val loss, target acc), ...]."""
    cfg = {"dataset": "toy", "algorithm": algo, "target": target, "seed": seed,
           "hparams_seed": trial, "modalities": list(mods), "split_seed": 0, **config}
    path = root / name
    path.mkdir(parents=True)
    with open(path / "records.jsonl", "w") as f:
        for i, (val, loss, tgt) in enumerate(epochs):
            f.write(json.dumps({"epoch": i + 1, "val": {"acc": val, "loss": loss, "probe_acc": {}},
                                "target": {"acc": tgt, "probe_acc": {}},
                                "run": {"config": cfg, "modalities": list(mods)}}) + "\n")
    if done:
        (path / "done").write_text("done\n")


@pytest.fixture
def sweep_dir(tmp_path):
    w = lambda name, **kw: write_run(tmp_path, name, **kw)  # noqa: E731
    # ERM -> A: trials 1 and 2 tie on accuracy, 2 has the lower loss; 2 is retrained (seeds 3, 4)
    w("e-a-0", algo="ERM", target="A", seed=0, trial=0, epochs=[(0.80, 0.5, 0.70)])
    w("e-a-1", algo="ERM", target="A", seed=1, trial=1, epochs=[(0.85, 0.4, 0.90)])
    w("e-a-2", algo="ERM", target="A", seed=2, trial=2,
      epochs=[(0.70, 0.6, 0.99), (0.85, 0.3, 0.60)])  # source-val picks epoch 2, oracle 1
    w("e-a-2s3", algo="ERM", target="A", seed=3, trial=2, epochs=[(0.84, 0.3, 0.62)])
    w("e-a-2s4", algo="ERM", target="A", seed=4, trial=2, epochs=[(0.83, 0.3, 0.64)])
    # ERM -> B: trials 0 and 1 tie on accuracy and loss: the earlier index wins
    w("e-b-0", algo="ERM", target="B", seed=0, trial=0, epochs=[(0.90, 0.2, 0.50)])
    w("e-b-1", algo="ERM", target="B", seed=1, trial=1, epochs=[(0.90, 0.2, 0.95)])
    w("e-b-2", algo="ERM", target="B", seed=2, trial=2, epochs=[(0.70, 0.1, 0.99)])
    w("e-b-0s3", algo="ERM", target="B", seed=3, trial=0, epochs=[(0.88, 0.2, 0.55)])
    w("e-b-0s4", algo="ERM", target="B", seed=4, trial=0, epochs=[(0.89, 0.2, 0.45)])
    w("e-b-1s3", algo="ERM", target="B", seed=3, trial=1, epochs=[(0.99, 0.1, 0.10)])  # not chosen
    # MERDG: one run, one target only (no average)
    w("m-a-0", algo="MERDG", target="A", seed=0, trial=0, epochs=[(0.81, 0.4, 0.7123)])
    # another modality set
    w("e1-a-0", algo="ERM", target="A", seed=0, trial=0, epochs=[(0.6, 0.9, 0.40)], mods=("a",))
    w("e1-a-0s1", algo="ERM", target="A", seed=1, trial=0, epochs=[(0.6, 0.9, 0.50)],
      mods=("a",))
    # an unfinished run is ignored, however good
    w("unfinished", algo="ERM", target="A", seed=5, trial=2, epochs=[(1.0, 0.0, 1.0)], done=False)
    return tmp_path


def test_choose_trial_tie_breaks():
    row = lambda k, s, acc, loss: {"hparams_seed": k, "seed": s, "val_acc": acc,  # noqa: E731
                                   "val_loss": loss}
    assert choose_trial([row(0, 0, 0.8, 0.5), row(1, 1, 0.9, 0.9)]) == 1  # accuracy first
    assert choose_trial([row(0, 0, 0.9, 0.5), row(1, 1, 0.9, 0.4)]) == 1  # then lower loss
    assert choose_trial([row(1, 1, 0.9, 0.4), row(0, 0, 0.9, 0.4)]) == 0  # then lower index
    assert choose_trial([row(0, 0, 0.9, None), row(1, 1, 0.9, 0.4)]) == 1  # missing loss last
    # a trial is judged by its search run (lowest seed), not by its retrained seeds
    assert choose_trial([row(0, 0, 0.8, 0.5), row(1, 1, 0.7, 0.5), row(1, 5, 1.0, 0.0)]) == 0
    with pytest.raises(ValueError, match="no runs"):
        choose_trial([])


MARKDOWN = """\
**toy: target accuracy (%), mean ± std over the runs of the trial chosen on source validation; \
epochs: training-domain validation (best source-val accuracy, ties: later epoch)**

| modalities | algorithm | A | B | avg |
|---|---|---|---|---|
| a | ERM | 45.00 ± 7.07 | - | - |
| a+b | ERM | 62.00 ± 2.00 | 50.00 ± 5.00 | 56.00 ± 2.18 |
| a+b | MERDG | 71.23 | - | - |

**chosen trial (hparams_seed; chosen on source validation) and its number of runs**

| modalities | algorithm | A | B | avg |
|---|---|---|---|---|
| a | ERM | 0 (2) | - | - |
| a+b | ERM | 2 (3) | 0 (3) | - |
| a+b | MERDG | 0 (1) | - | - |
"""
# MERDG has one run (A, search run): it pairs with ERM's chosen-trial search run on A (trial 2,
# seed 2, target 0.60 at its source-val epoch); ERM's other 5 (column, replicate) pairs have no
# counterpart. One pair gives no interval.
PAIRED = """
**toy: paired difference in target accuracy against ERM (percentage points) over matched \
(column, seed) pairs of the table's runs; 95% paired t-interval (verdict) and paired bootstrap \
interval**

| group | algorithm | reference | pairs | mean difference | 95% CI (t) | 95% CI (bootstrap) | \
verdict |
|---|---|---|---|---|---|---|---|
| a+b | MERDG | ERM | 1 (5 unmatched) | +11.23 | [-, -] | [-, -] | too few pairs |
"""

TITLE = ("toy: target accuracy (%), mean ± std over the runs of the trial chosen on source "
         "validation; epochs: training-domain validation (best source-val accuracy, ties: later "
         "epoch)")
LATEX = "% " + TITLE + r"""
\begin{tabular}{llccc}
\toprule
Modalities & Algorithm & A & B & Avg \\
\midrule
a & ERM & 45.00 $\pm$ 7.07 & - & - \\
\midrule
a+b & ERM & 62.00 $\pm$ 2.00 & 50.00 $\pm$ 5.00 & 56.00 $\pm$ 2.18 \\
 & MERDG & 71.23 & - & - \\
\bottomrule
\end{tabular}
"""

CSV = """\
dataset,settings,modalities,algorithm,target,mean,std,se,std_population,n,hparams_seed,seeds
toy,"{""split_seed"": 0}",a,ERM,A,0.450000,0.070711,0.050000,0.050000,2,0,0 1
toy,"{""split_seed"": 0}",a+b,ERM,A,0.620000,0.020000,0.011547,0.016330,3,2,2 3 4
toy,"{""split_seed"": 0}",a+b,ERM,B,0.500000,0.050000,0.028868,0.040825,3,0,0 3 4
toy,"{""split_seed"": 0}",a+b,ERM,avg,0.560000,0.021794,0.012583,0.017795,3,,
toy,"{""split_seed"": 0}",a+b,MERDG,A,0.712300,0.000000,0.000000,0.000000,1,0,0
"""


def test_tables_from_fixture_records(sweep_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    result = write_tables(sweep_dir, out)
    assert (out / "table.md").read_text() == MARKDOWN + PAIRED
    assert (out / "table.tex").read_text() == LATEX
    assert (out / "cells.csv").read_text() == CSV
    runs = (out / "results.csv").read_text().splitlines()  # one row per (run, selection rule)
    assert len(runs) == 1 + 14 * 3 and runs[0].startswith("dataset,modalities,algorithm,target")
    assert result["markdown"] == MARKDOWN + PAIRED


def test_oracle_rule_and_separate_settings(sweep_dir):
    oracle = build_tables(load_rows(sweep_dir), rule="oracle")
    cell = oracle[("toy", '{"split_seed": 0}')][("a+b", "ERM")]["A"]
    assert cell.trial == 2 and cell.mean == pytest.approx((0.99 + 0.62 + 0.64) / 3)
    write_run(sweep_dir, "other", algo="ERM", target="A", seed=0, trial=0,
              epochs=[(0.5, 0.5, 0.33)], hparams={"lr": 0.1})
    text = write_tables(sweep_dir)["markdown"]
    assert '; settings {"hparams": {"lr": 0.1}, "split_seed": 0}**' in text
    assert '; settings {"split_seed": 0}**' in text and "| a+b | ERM | 33.00 | 33.00 |" in text


def test_collect_cli(sweep_dir, tmp_path, capsys):
    assert main(["collect", str(sweep_dir), "--out", str(tmp_path / "t")]) == 0
    assert "| a+b | ERM | 62.00 ± 2.00 | 50.00 ± 5.00 | 56.00 ± 2.18 |" in capsys.readouterr().out
    assert main(["collect", str(tmp_path / "t")]) == 2
    assert "no finished runs" in capsys.readouterr().err


# --- DomainBed's conventions: --error se, every rule side by side, averages over data sets ---

RULES_SE = """\
**toy: target accuracy (%) averaged over the targets (`avg`) under each epoch-selection rule, \
mean ± standard error over seeds**

| modalities | algorithm | source validation | oracle (target labels) | last epoch |
|---|---|---|---|---|
| a | ERM | - | - | - |
| a+b | ERM | 56.00 ± 1.26 | 62.50 ± 6.11 | 56.00 ± 1.26 |
| a+b | MERDG | - | - | - |
"""


def test_collect_prints_every_rule_side_by_side_and_the_standard_error(sweep_dir, tmp_path,
                                                                       capsys):
    assert main(["collect", str(sweep_dir), "--out", str(tmp_path / "t"), "--error", "se"]) == 0
    out = capsys.readouterr().out
    # the oracle picks epoch 1 of e-a-2 (target 0.99): replicates (0.99 + 0.50) / 2, 0.585 and
    # 0.545, mean 0.625, sample std 0.1058, standard error 0.0611
    assert RULES_SE in out
    assert ("**toy: target accuracy (%), mean ± standard error over the runs of the trial "
            "chosen on source validation;") in out
    assert "| a+b | ERM | 62.00 ± 1.15 | 50.00 ± 2.89 | 56.00 ± 1.26 |" in out  # cells.csv's se
    assert "56.00 ± 1.26" in (tmp_path / "t" / "table.md").read_text()
    assert "56.00 $\\pm$ 1.26" in (tmp_path / "t" / "table.tex").read_text()


def test_collect_reads_the_error_the_experiment_recorded(sweep_dir, capsys):
    (sweep_dir / "experiment.json").write_text(json.dumps({"experiment": {"error": "se"}}))
    assert main(["collect", str(sweep_dir)]) == 0
    assert "| a+b | ERM | 62.00 ± 1.15 | 50.00 ± 2.89 | 56.00 ± 1.26 |" in capsys.readouterr().out
    assert main(["collect", str(sweep_dir), "--error", "std"]) == 0
    assert "| a+b | ERM | 62.00 ± 2.00 | 50.00 ± 5.00 | 56.00 ± 2.18 |" in capsys.readouterr().out


DATASETS = """\
**Average over data sets: target accuracy (%) of each data set's `avg` column, mean ± std over \
seeds; `avg`: the mean over the data sets; epochs: training-domain validation (best source-val \
accuracy, ties: later epoch)**

| algorithm | toy (a+b) | toy2 (a+b) | avg |
|---|---|---|---|
| ERM | 56.00 ± 2.18 | 50.00 ± 10.00 | 53.00 |
"""


def test_the_tables_average_over_data_sets(sweep_dir):
    for seed, (a, b) in enumerate([(0.5, 0.3), (0.6, 0.4), (0.7, 0.5)]):
        for target, acc in (("A", a), ("B", b)):
            write_run(sweep_dir, f"toy2-{target}-{seed}", algo="ERM", target=target, seed=seed,
                      trial=0, epochs=[(0.9, 0.1, acc)], dataset="toy2")
    text = write_tables(sweep_dir)["markdown"]
    assert DATASETS in text
    assert "**toy2: target accuracy (%), mean ± std over" in text
    assert write_tables(sweep_dir / "e-a-0")["markdown"].count("Average over data sets") == 0
