"""The merdg command line."""

import json
import logging
import re

from merdg.cli import main

TINY = json.dumps({"epochs": 1, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16})
OPTS = ["--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3"]


def test_list(capsys):
    assert main(["list", "algorithms"]) == 0
    out = capsys.readouterr().out
    assert "ERM:" in out and "MERDG:" in out and "mer_lambda = 3.0" in out
    assert main(["list", "datasets"]) == 0 and "synthetic" in capsys.readouterr().out
    assert main(["list", "encoders"]) == 0 and "tcn" in capsys.readouterr().out


def test_train_and_bench(tmp_path, capsys):
    assert main(["train", "--dataset", "synthetic", "--target", "d0", "--algorithm", "ERM+MER",
                 "--hparams", TINY, "--out", str(tmp_path / "run"), *OPTS]) == 0
    assert (tmp_path / "run" / "done").exists()
    out = tmp_path / "bench"
    args = ["bench", "--dataset", "synthetic", "--algorithms", "ERM", "MERDG", "--seeds", "2",
            "--targets", "d0", "d1", "--modality-sets", "m0+m1", "m0+m1+m2", "--hparams", TINY,
            "--out", str(out), *OPTS]
    assert main(args) == 0
    for name in ("report.md", "table.md", "results.csv", "accuracy.png", "experiment.json"):
        assert (out / name).exists(), name
    table = (out / "table.md").read_text()
    assert "| m0+m1 | ERM |" in table and "| m0+m1+m2 | MERDG |" in table and "±" in table
    assert "oracle" in (out / "report.md").read_text()
    # a second invocation reuses every finished run
    assert main(args) == 0
    assert json.loads((out / "experiment.json").read_text())["skipped"] == 16


def test_data_check(capsys):
    assert main(["data", "check", "--dataset", "synthetic", *OPTS]) == 0
    assert "OK: 160 readable samples in 4 domains" in capsys.readouterr().out


def test_user_errors_exit_2(capsys):
    assert main(["train", "--dataset", "nope", "--target", "d0", "--out", "x"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["bench", "--dataset", "synthetic", "--hparams", "{bad"]) == 2
    assert "--hparams must be a JSON object" in capsys.readouterr().err


def test_list_hparams_shows_the_resolved_values_and_their_origin(capsys):
    assert main(["list", "hparams", "--dataset", "synthetic", "--algorithm", "MERDG",
                 "--hparams", '{"lr": 0.01}', "--hparams-seed", "2",
                 "--encoders", '{"m0": {"hidden": 32}}']) == 0
    out = capsys.readouterr().out
    assert "lr = 0.01  (override)" in out
    assert "mer_eps = 0.0001  (algorithm)" in out
    assert "(trial 2)" in out.split("mer_lambda = ")[1].splitlines()[0]
    assert "epochs = " in out and "(dataset)" in out.split("epochs = ")[1].splitlines()[0]
    assert 'encoders.m0 = {"hidden": 32' in out


def test_cli_log_lines_mark_warnings(capsys):
    from merdg.cli.options import log_progress_to_stderr

    log_progress_to_stderr()
    logger = logging.getLogger("merdg.run.directory")
    logger.info("resuming after epoch 1 of 4")
    logger.warning("checkpoint.pt: damaged; resuming from checkpoint.previous.pt")
    info, warning = capsys.readouterr().err.splitlines()
    # stderr is captured (not a terminal): the progress line is timestamped, a warning is not
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d resuming after epoch 1 of 4", info)
    assert warning == "warning: checkpoint.pt: damaged; resuming from checkpoint.previous.pt"


def test_help_shows_no_placeholder_for_required_settings(capsys):
    """`--dataset` has no default: the help says nothing about one (issue 19: it printed
    `(default: <dataclasses._MISSING_TYPE object at 0x...>)`)."""
    for command in ("train", "bench", "sweep"):
        try:
            main([command, "--help"])
        except SystemExit as done:
            assert done.code == 0
        text = capsys.readouterr().out
        assert "MISSING" not in text and "object at 0x" not in text, command
        assert "registered dataset name (see `merdg list datasets`)" in " ".join(text.split())
