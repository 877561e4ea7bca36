"""Every user mistake: one line naming the culprit, exit status 2, before any work.

Each case runs the command line and checks the whole error message (or its telling part), that
nothing else was printed as an error, and that nothing was written where the run would go.
"""

import json
import re

import pytest

import merdg.run.training as training
from merdg.cli import main
from merdg.losses.mer import MERLoss
from merdg.run.directory import RunDir
from merdg.run.records import read_jsonl

TINY = {"batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16}
OPTS = ["--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3"]
# (a progress line in a file or pipe starts with its timestamp)
PROGRESS = re.compile(r"it/s|^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d )?epoch \d+/|resuming|"
                      r": an epoch is \d+ steps of|^warning: \w+ (side probe|encoder) \(")


def errors(capsys) -> list[str]:
    """The lines a command printed to stderr, without progress bars, epoch logs (the epoch
    plan and one line per epoch) and the near-chance probe warnings of tiny runs."""
    return [line for line in capsys.readouterr().err.splitlines()
            if line.strip() and not PROGRESS.search(line)]


def run(args, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(args)
    return code, errors(capsys)


def train_args(out, hparams=None, *extra):
    return ["train", "--dataset", "synthetic", "--target", "d1", "--hparams",
            json.dumps({**TINY, "epochs": 1, **(hparams or {})}), "--out", str(out), *OPTS,
            "--checkpoint-every", "0", *extra]


@pytest.mark.parametrize("hparams, message", [
    ({"epochs": 0}, "hparam epochs (override) must be an integer >= 1, got 0"),
    ({"epochs": -1}, "hparam epochs (override) must be an integer >= 1, got -1"),
    ({"epochs": 1.5}, "hparam epochs (override) must be an integer >= 1, got 1.5"),
    ({"mer_lambda": float("nan")}, "hparam mer_lambda (override) must be a finite number >= 0, "
     "got nan"),
    ({"mer_lambda": float("inf")}, "hparam mer_lambda (override) must be a finite number >= 0, "
     "got inf"),
    ({"mer_lambda": "abc"}, "hparam mer_lambda (override) must be a finite number >= 0, got "
     "'abc'"),
    ({"mer_lambda": -1}, "hparam mer_lambda (override) must be a finite number >= 0, got -1"),
    ({"mer_eps": 0}, "hparam mer_eps (override) must be a finite number > 0 and < 1, got 0"),
    ({"dropout": 1.5}, "hparam dropout (override) must be a finite number >= 0 and < 1, got 1.5"),
    ({"batch_size": 0}, "hparam batch_size (override) must be an integer >= 1, got 0"),
    ({"proj_dim": 0}, "hparam proj_dim (override) must be an integer >= 1, got 0"),
    ({"lr": -0.001}, "hparam lr (override) must be a finite number >= 0, got -0.001"),
])
def test_hparams_of_the_wrong_type_or_range(hparams, message, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run(train_args(out, hparams, "--algorithm", "MERDG"), capsys)
    assert (code, err) == (2, [f"merdg train: error: {message}"])
    assert not out.exists()  # refused before anything was written


def test_hparams_are_checked_before_a_bench_or_sweep_starts(tmp_path, capsys):
    for command in (["bench"], ["sweep", "--trials", "1"]):
        out = tmp_path / command[0]
        code, err = run([*command, "--dataset", "synthetic", "--hparams", '{"epochs": 0}',
                         "--out", str(out), *OPTS], capsys)
        assert (code, err) == (2, [f"merdg {command[0]}: error: hparam epochs (override) must "
                                   "be an integer >= 1, got 0"])
        assert not out.exists()


@pytest.mark.parametrize("algorithm, reason", [
    ("MERDG", "the MER-DG terms are batch statistics, 0 for a single sample: the run would be "
     "plain ERM"),
    ("SimMMDG", "its projection heads use BatchNorm and SupCon needs other samples"),
])
def test_a_batch_too_small_for_the_algorithm(algorithm, reason, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run(train_args(out, {"batch_size": 1}, "--algorithm", algorithm, "--source",
                               "d0"), capsys)
    assert (code, err) == (2, [f"merdg train: error: hparam batch_size = 1: {algorithm} needs "
                               f"a global batch of at least 2 ({reason})"])
    assert not out.exists()


@pytest.mark.parametrize("options, extra, message", [
    (["samples_per_domain=40"], ["--holdout-fraction", "0.01"],
     "source domain 'd0' has no validation samples (--holdout-fraction 0.01 of its 40 samples "
     "rounds to 0); raise --holdout-fraction, or leave the domain out (merdg train --source)"),
    (["samples_per_domain=1"], [],
     "source domain 'd0' has 1 sample: too few for a training and a validation split; leave "
     "it out (merdg train --source)"),
    (["samples_per_domain=4"], ["--source", "d0", "d2"],
     "source domains with fewer training samples than their share of one batch of 12: 'd0' has "
     "3 training samples, its share of a batch is 6; 'd2' has 3 training samples, its share of "
     "a batch is 6; lower batch_size, or leave the domain out (merdg train --source)"),
])
def test_empty_or_small_source_domains_are_named_before_training(options, extra, message,
                                                                 tmp_path, capsys, monkeypatch):
    def no_training(*args):
        raise AssertionError("an epoch started")

    monkeypatch.setattr(training, "_train_and_evaluate", no_training)
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", "--target", "d1", "--hparams", json.dumps(TINY),
            "--out", str(out), *[x for o in options for x in ("--dataset-option", o)], *extra]
    code, err = run(args, capsys)
    assert (code, err) == (2, [f"merdg train: error: {message}"])
    assert not (out / RunDir.CONFIG).exists()


def test_settings_checked_by_the_run_config_and_the_command(tmp_path, capsys):
    """Refused since the run-config refactor (issue 11); kept here with the other cases."""
    out = tmp_path / "run"
    cases = [
        (train_args(out, None, "--source", "d0", "d0"),
         "merdg train: error: sources (--source) lists a name twice: ['d0', 'd0']"),
        (train_args(out, None, "--threads", "-1"),
         "merdg train: error: --threads must be >= 0 (0 keeps torch's default), got -1"),
        (train_args(out, None, "--holdout-fraction", "0"),
         "merdg train: error: holdout_fraction (--holdout-fraction) must be > 0 and < 1, got 0.0"),
        (["bench", "--dataset", "synthetic", "--seeds", "0", "--out", str(out)],
         "merdg bench: error: --seeds must be an integer >= 1, got 0"),
        (["sweep", "--dataset", "synthetic", "--trials", "-1", "--out", str(out)],
         "merdg sweep: error: --trials must be an integer >= 0, got -1"),
        (["bench", "--dataset", "synthetic", "--workers", "0", "--out", str(out), *OPTS],
         "merdg bench: error: --workers must be an integer >= 1, got 0"),
        (["bench", "--dataset", "synthetic", "--targets", "d9", "--out", str(out), *OPTS],
         "merdg bench: error: unknown domains ['d9']; this dataset has ['d0', 'd1', 'd2', 'd3']"),
    ]
    for args, message in cases:
        assert run(args, capsys) == (2, [message]), args
    assert not out.exists()


def test_unknown_dataset_and_encoder_options_name_the_valid_ones(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run(["train", "--dataset", "synthetic", "--target", "d1", "--out", str(out),
                     "--dataset-option", "samples_per_domian=40"], capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("merdg train: error: dataset 'synthetic' has no option "
                             "'samples_per_domian' (--dataset-option); its options: n_domains,")
    assert "samples_per_domain" in err[0]
    code, err = run(["data", "check", "--dataset", "synthetic", "--dataset-option", "n_clases=3"],
                    capsys)
    assert code == 2 and "has no option 'n_clases'" in err[0] and len(err) == 1
    assert err[0].startswith("merdg data check: error: ")
    code, err = run([*train_args(out), "--encoders", '{"m0": {"hiden": 8}}'], capsys)
    assert (code, err) == (2, ["merdg train: error: encoders['m0']: encoder 'mlp' has no option "
                               "'hiden'; its options: hidden, out_dim, layers, dropout"])
    code, err = run(["bench", "--dataset", "synthetic", "--out", str(out), *OPTS,
                     "--encoders", '{"m0": {"name": "nope"}}'], capsys)
    assert code == 2 and len(err) == 1 and "unknown encoder 'nope'; registered:" in err[0]
    assert not out.exists()


# --- a loss that becomes NaN / Inf -----------------------------------------------------------

def test_non_finite_loss_names_the_term_step_and_epoch_and_keeps_the_last_epoch(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = train_args(out, {"epochs": 3}, "--algorithm", "MERDG")
    real_reduce, calls = MERLoss.reduce, {"n": 0}

    def reduce(self, terms):  # the MER-DG term overflows at step 3 of epoch 2 (8 steps each)
        calls["n"] += 1
        value = real_reduce(self, terms)
        return value * float("inf") if calls["n"] == 8 + 3 else value

    with monkeypatch.context() as patch:
        patch.setattr(MERLoss, "reduce", reduce)
        code, err = run(args, capsys)
    assert code == 2 and len(err) == 1
    assert err[0] == (f"merdg train: error: non-finite training loss at step 3 of 8 in epoch 2 "
                      f"of 3: non-finite terms: mer=inf; lower lr (or the weights of the loss "
                      f"terms) (the records and checkpoint of epoch 1 stay in {out}; with "
                      "changed hparams, start over with --restart)")
    assert [r["epoch"] for r in read_jsonl(out / RunDir.RECORDS)] == [1]
    assert (out / RunDir.CHECKPOINT).exists() and not (out / RunDir.DONE).exists()
    # the same command resumes from epoch 1
    assert run(args, capsys) == (0, [])
    assert [r["epoch"] for r in read_jsonl(out / RunDir.RECORDS)] == [1, 2, 3]


def test_a_diverging_run_stops_in_one_line_and_restarts_with_a_lower_lr(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run(train_args(out, {"epochs": 2, "lr": 1e30}, "--algorithm", "MERDG"), capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("merdg train: error: non-finite training loss at step 2 of 8 in "
                             "epoch 1 of 2: the projection representations of m0, m1, m2 that "
                             "MER-DG regularizes hold NaN/Inf (the weights diverged)")
    assert "no checkpoint had been written, so nothing is kept to resume from" in err[0]
    fixed = train_args(out, {"epochs": 2, "lr": 1e-3}, "--algorithm", "MERDG")
    assert run([*fixed, "--restart"], capsys) == (0, [])
    assert [r["epoch"] for r in read_jsonl(out / RunDir.RECORDS)] == [1, 2]


def test_a_diverging_unimodal_pretraining_stage_stops_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    args = train_args(out, {"pretrain_epochs": 2, "pretrain_lr": 1e30}, "--init", "unimodal")
    code, err = run(args, capsys)
    assert (code, err) == (2, ["merdg train: error: non-finite training loss at step 2 of 8 in "
                               "epoch 1 of 2 of unimodal pretraining: non-finite terms: "
                               "ce/m0=nan, ce/m1=nan, ce/m2=nan; lower pretrain_lr"])


def test_changed_hparams_after_a_non_finite_loss_need_restart(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_reduce, calls = MERLoss.reduce, {"n": 0}

    def reduce(self, terms):
        calls["n"] += 1
        value = real_reduce(self, terms)
        return value * float("nan") if calls["n"] == 10 else value

    with monkeypatch.context() as patch:
        patch.setattr(MERLoss, "reduce", reduce)
        assert run(train_args(out, {"epochs": 2}, "--algorithm", "MERDG"), capsys)[0] == 2
    lower = train_args(out, {"epochs": 2, "lr": 1e-4}, "--algorithm", "MERDG")
    code, err = run(lower, capsys)
    assert code == 2 and len(err) == 1 and "hparams.lr: 0.001 (checkpoint) vs 0.0001" in err[0]
    assert "--restart" in err[0]
    assert run([*lower, "--restart"], capsys) == (0, [])
    config = json.loads((out / RunDir.CONFIG).read_text())
    assert config["hparams"]["lr"] == 1e-4


# --- files the commands read ---------------------------------------------------------------

def test_truncated_or_foreign_json_files_are_named(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(train_args(out), capsys)[0] == 0
    summary = out / RunDir.SUMMARY
    summary.write_text(summary.read_text()[:40])
    code, err = run(train_args(out), capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"merdg train: error: {summary}: unreadable or truncated JSON")
    summary.write_text('{"epochs": 1}')
    assert run(train_args(out), capsys) == (2, [f"merdg train: error: {summary} is not a merdg "
                                                "summary (no 'selection' entry); rerun with "
                                                "--overwrite to train it again"])
    config = out / RunDir.CONFIG
    info = json.loads(config.read_text())
    info["config"]["seed"] = "x"
    config.write_text(json.dumps(info))
    code, err = run(["diagnose", str(out)], capsys)
    assert (code, err) == (2, [f"merdg diagnose: error: {config}: not a valid run config (seed "
                               "(--seed) must be an integer, got 'x')"])
    config.write_text('{"config": {')
    code, err = run(["diagnose", str(out)], capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"merdg diagnose: error: {config}: unreadable or truncated JSON")
    code, err = run(train_args(out), capsys)  # not replaced: named, with what is wrong
    assert code == 2 and len(err) == 1 and f"({config}: unreadable or truncated JSON" in err[0]
    assert err[0].endswith("use another --out, or --overwrite to replace them")
    job = RunDir(tmp_path / "job")
    job.write_job({"config": {}})
    (job.path / RunDir.JOB).write_text('{"config": ')
    with pytest.raises(ValueError, match=f"^{re.escape(str(job.path / RunDir.JOB))}: unreadable"):
        job.read_job()


def test_collect_names_the_directory_or_the_record_at_fault(tmp_path, capsys):
    code, err = run(["collect", str(tmp_path / "missing")], capsys)
    assert (code, err) == (2, [f"merdg collect: error: {tmp_path / 'missing'} is not a "
                               "directory (a bench or sweep directory, or a folder of run "
                               "directories)"])
    out = tmp_path / "runs" / "a"
    assert run(train_args(out, {"epochs": 2}), capsys)[0] == 0
    records = out / RunDir.RECORDS
    good = records.read_text().splitlines()
    records.write_text(good[0] + "\n" + good[1][:50] + "\n")
    code, err = run(["collect", str(tmp_path / "runs")], capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"merdg collect: error: {records}:2: malformed record")
    records.write_text('{"epoch": 1}\n')
    code, err = run(["collect", str(tmp_path / "runs")], capsys)
    assert (code, err) == (2, [f"merdg collect: error: {records}: not a merdg epoch record "
                               "(missing or malformed entry 'run'); move the directory out of "
                               f"{tmp_path / 'runs'}, or rerun it"])


def test_diagnose_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    code, err = run(["diagnose", str(tmp_path)], capsys)
    assert (code, err) == (2, [f"merdg diagnose: error: {tmp_path / RunDir.CONFIG} not found: "
                               f"{tmp_path} is not a merdg run directory"])


@pytest.mark.parametrize("option, message", [
    (["--probe-epochs", "0"], "probe_epochs (--probe-epochs) must be an integer >= 1, got 0"),
    (["--batch-size", "0"], "batch_size (--batch-size) must be an integer >= 1, got 0"),
    (["--num-workers", "-1"], "num_workers (--num-workers) must be an integer >= 0, got -1"),
])
def test_diagnose_options_are_checked_first(option, message, tmp_path, capsys):
    assert run(["diagnose", str(tmp_path), *option], capsys) == (
        2, [f"merdg diagnose: error: {message}"])


@pytest.mark.parametrize("option, message", [
    (["--timeout-min", "0"], "--timeout-min must be an integer >= 1, got 0"),
    (["--cpus-per-job", "0"], "--cpus-per-job must be an integer >= 1, got 0"),
    (["--gpus-per-job", "-1"], "--gpus-per-job must be an integer >= 0, got -1"),
    (["--max-parallel", "0"], "--max-parallel must be an integer >= 1, got 0"),
    (["--mem-gb", "0"], "--mem-gb must be > 0, got 0.0"),
])
def test_launcher_options_are_checked_before_the_experiment(option, message, tmp_path, capsys):
    out = tmp_path / "bench"
    assert run(["bench", "--dataset", "synthetic", "--out", str(out), *OPTS, *option],
               capsys) == (2, [f"merdg bench: error: {message}"])
    assert not out.exists()


def test_interrupted_command_says_what_is_kept(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_train_loop", interrupted)
    code, err = run(train_args(tmp_path / "run"), capsys)
    assert code == 130 and len(err) == 1
    assert err[0].startswith("merdg train: interrupted; what was written so far is intact")
