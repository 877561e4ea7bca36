"""The command line behaves like the tools researchers already use (issue 20): no option is
matched by a prefix, a syntax error is one line, help texts show no internal names, lists have
one convention, and every ``merdg`` command written in the docs parses."""

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from merdg.cli import build_parser, main, parse
from merdg.cli.options import experiment_settings, run_settings

ROOT = Path(__file__).resolve().parents[1]
FAIL_FAST = ["--hparams", "{bad"]  # were the command accepted, it would stop before any work


def walk(parser: argparse.ArgumentParser):
    """``parser`` and every subcommand parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from walk(sub)


def syntax_error(argv, capsys) -> str:
    """The stderr of a command argparse refuses (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


# --- no prefix matching -------------------------------------------------------------------

def test_no_parser_matches_prefixes():
    parsers = list(walk(build_parser()))
    assert len(parsers) > 10  # merdg, every command, data check
    assert all(p.allow_abbrev is False for p in parsers), [p.prog for p in parsers
                                                           if p.allow_abbrev]


def test_every_parser_in_the_repository_refuses_prefixes():
    """The benchmark scripts' parsers too: `ArgumentParser(` is always given
    allow_abbrev=False (merdg's own commands use merdg.cli.parser.Parser, which sets it)."""
    calls = []
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        text = path.read_text()
        calls += [(path.name, text[m.start():m.start() + 80])
                  for m in re.finditer(r"ArgumentParser\(", text)]
    assert len(calls) >= 10
    assert all("allow_abbrev=False" in call for _, call in calls), [
        name for name, call in calls if "allow_abbrev=False" not in call]


@pytest.mark.parametrize("argv, flag, hint", [
    # the trap: on sweep and bench, --seed used to mean --seeds (three seeds)
    (["sweep", "--dataset", "synthetic", "--algorithms", "ERM", "--targets", "d0",
      "--trials", "0", "--seed", "3", "--dry-run", "--out", "x", *FAIL_FAST], "--seed 3",
     "--seed is an option of merdg train; merdg sweep gives each run its seed through --seeds "
     "N, which runs seeds 0 to N-1"),
    (["bench", "--dataset", "synthetic", "--seed", "3", *FAIL_FAST], "--seed 3",
     "merdg bench gives each run its seed through --seeds N"),
    (["bench", "--dataset", "synthetic", "--source", "d1", *FAIL_FAST], "--source d1",
     "--source is an option of merdg train; merdg bench gives each run its sources through "
     "--setting multi|single|all"),
    (["train", "--dataset", "synthetic", "--target", "d0", "--seeds", "3", *FAIL_FAST],
     "--seeds 3",
     "--seeds: did you mean --seed?"),
    (["bench", "--dataset", "synthetic", "--target", "d0", *FAIL_FAST], "--target d0",
     "merdg bench gives each run its target through --targets DOMAIN [DOMAIN ...]"),
    (["train", "--data", "synthetic", "--target", "d0", *FAIL_FAST], "--data synthetic", ""),
    (["sweep", "--dataset", "synthetic", "--out", "x", "--trial", "3", *FAIL_FAST],
     "--trial 3",
     "--trial: did you mean --trials?"),
])
def test_a_prefix_of_an_option_is_refused(argv, flag, hint, capsys):
    err = syntax_error(argv, capsys)
    command = argv[0]
    assert err.startswith(f"merdg {command}: error: unrecognized arguments: {flag}"), err
    assert hint in err
    assert err.endswith(f"; see merdg {command} --help\n")


# --- one-line syntax errors ---------------------------------------------------------------

@pytest.mark.parametrize("argv, prog, message", [
    (["train", "--dataset", "synthetic", "--target", "d0", "--out", "x", "--precision", "fp8"],
     "merdg train", "argument --precision: invalid choice: 'fp8' (choose from 'fp32', 'bf16', "
     "'fp16')"),
    (["train", "--dataset", "synthetic", "--out", "x"], "merdg train",
     "the following arguments are required: --target"),
    (["collect"], "merdg collect", "the following arguments are required: DIR"),
    (["sweep", "--dataset", "synthetic"], "merdg sweep",
     "the following arguments are required: --out"),
    (["list", "nothing"], "merdg list", "argument WHAT: invalid choice: 'nothing'"),
    (["data", "check"], "merdg data check", "the following arguments are required: --dataset"),
    (["data"], "merdg data", "the following arguments are required: ACTION"),
    (["evaluate"], "merdg evaluate", "the following arguments are required: RUN_DIR"),
    (["trian"], "merdg", "argument COMMAND: invalid choice: 'trian'"),
    ([], "merdg", "the following arguments are required: COMMAND"),
    (["bench", "--dataset", "synthetic", "--seeds", "three"], "merdg bench",
     "argument --seeds: invalid int value: 'three'"),
])
def test_a_syntax_error_is_one_line_from_the_command(argv, prog, message, capsys):
    err = syntax_error(argv, capsys)
    assert err.count("\n") == 1, err
    assert err.startswith(f"{prog}: error: {message}"), err
    assert err.endswith(f"; see {prog} --help\n")
    assert "usage:" not in err


def test_bench_needs_a_dataset_or_several(capsys):
    assert main(["bench", "--out", "never-written"]) == 2
    assert capsys.readouterr().err == ("merdg bench: error: --dataset is required (or "
                                       "--datasets for several; `merdg list datasets`)\n")
    assert not Path("never-written").exists()


def test_a_comma_in_a_modality_set_is_refused_with_both_readings(capsys):
    code = main(["bench", "--dataset", "synthetic", "--modality-sets", "m0,m1", "m0+m2",
                 "--out", "never-written", "--reference", "stops-before-any-work"])
    assert code == 2
    assert capsys.readouterr().err == (
        "merdg bench: error: --modality-sets m0,m1: a comma reads two ways, one set "
        "(--modality-sets m0+m1) or 2 sets (--modality-sets m0 m1); join a set's modalities "
        "with + and separate sets with spaces\n")
    assert not Path("never-written").exists()


def test_lists_are_space_separated():
    args = parse(["bench", "--dataset", "synthetic", "--algorithms", "ERM", "MERDG",
                  "--targets", "d0", "d1", "--modality-sets", "m0+m1", "m0+m1+m2",
                  "--severities", "1", "3", "--corruptions", "missing", "gaussian_noise"])
    axes = experiment_settings(args)
    assert axes["algorithms"] == ["ERM", "MERDG"] and axes["targets"] == ["d0", "d1"]
    assert axes["modality_sets"] == [["m0", "m1"], ["m0", "m1", "m2"]]
    corruptions = run_settings(args)["evaluations"]["corruptions"]
    assert corruptions["severities"] == [1, 3]
    assert corruptions["corruptions"] == ["missing", "gaussian_noise"]


def test_list_alone_lists_what_can_be_listed(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("merdg list WHAT, with WHAT one of:\n")
    for what in ("algorithms", "datasets", "encoders", "presets", "corruptions", "evaluators",
                 "hparams"):
        assert re.search(rf"^    {what} +\w", out, re.M), what


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`merdg list corruptions | head`: when the reader has left, merdg stops without a word
    (it printed `merdg list: error: [Errno 32] Broken pipe`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before merdg writes anything
    try:
        done = subprocess.run([sys.executable, "-m", "merdg.cli", "list", "corruptions"],
                              stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr.decode() == ""
    assert done.returncode == 141


# --- the end of merdg train ----------------------------------------------------------------

TINY = ["--hparams", '{"epochs": 2, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16}',
        "--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3"]


def test_train_ends_with_a_few_lines_and_json_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic", "--target", "d0", "--out", str(out), *TINY]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads((out / "summary.json").read_text())
    chosen, last = summary["selection"]["source_val"], summary["selection"]["last"]
    assert lines[0].startswith("done: ERM, m0+m1+m2, d1+d2+d3 -> d0, seed 0 (2 epochs, ")
    assert lines[1] == (f"selected epoch {chosen['epoch']} of 2 (best source-validation "
                        f"accuracy): source-val acc {100 * chosen['val_acc']:.2f}%, target acc "
                        f"{100 * chosen['target_acc']:.2f}%")
    assert lines[2].startswith(f"last epoch 2: target acc {100 * last['target_acc']:.2f}%; "
                               "oracle epoch ")
    assert lines[3].startswith(f"files: {out} (summary.json, records.jsonl, ")
    assert len(lines) == 4
    # the same command again: the finished run's summary, as JSON with --json
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == summary


# --- grammar ---------------------------------------------------------------------------------

def test_counts_agree_with_their_nouns(capsys, tmp_path):
    argv = ["sweep", "--dataset", "synthetic", "--algorithms", "ERM", "--targets", "d0",
            "--dry-run", "--out", str(tmp_path / "sweep")]
    assert main([*argv, "--trials", "1", "--seeds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == ["2 jobs: 2 pending",
                          "1 task waits for its search to finish before its retrain jobs exist"]
    assert main([*argv, "--trials", "0", "--seeds", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 job: 1 pending"
    assert not (tmp_path / "sweep").exists()  # a dry run writes nothing


def test_an_unfinished_run_takes_an(tmp_path):
    from merdg.run.config import RunConfig
    from merdg.run.directory import RunDir
    from merdg.words import a, count, enumeration

    assert [count(1, "job"), count(0, "job"), count(2, "directory", "directories")] == [
        "1 job", "0 jobs", "2 directories"]
    assert [a("unfinished"), a("finished")] == ["an unfinished", "a finished"]
    assert [enumeration(["x"]), enumeration(["x", "y"]), enumeration(["x", "y", "z"])] == [
        "x", "x and y", "x, y and z"]
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--target", "d0", "--out", str(out),
                 *TINY]) == 0
    (out / "done").unlink()  # as if it had been interrupted
    other = RunConfig(dataset="synthetic", target="d1", out_dir=str(out))
    assert f"{out} holds an unfinished run of another config (" in (
        RunDir(out).conflict_message(other))


# --- help texts -----------------------------------------------------------------------------

def _options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction,
                                                             argparse._SubParsersAction))]


def _help_of(parser: argparse.ArgumentParser) -> str:
    with contextlib.redirect_stdout(io.StringIO()):
        return parser.format_help()


@pytest.mark.parametrize("parser", list(walk(build_parser())), ids=lambda p: p.prog)
def test_help_texts_show_no_internal_names(parser):
    text = _help_of(parser)
    for internal in ("EVAL_", "__", "MISSING", "object at 0x", "%("):
        assert internal not in text, (parser.prog, internal)
    assert not re.search(r"RUN_(?!DIR)", text), parser.prog  # RUN_DIR: a run directory
    for action in _options(parser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{parser.prog} {name} has no help"
        formatter = parser._get_formatter()
        shown = formatter._get_help_string(action) % {**vars(action), "prog": parser.prog}
        default = action.default
        if action.option_strings and not (default is None or default is False
                                          or default == [] or default == argparse.SUPPRESS):
            assert "(default: " in shown, f"{parser.prog} {name}: default {default!r} not shown"
        # one way to write a default: "(default: VALUE)"
        assert not re.search(r"\(default[^:]|[^(]default: |; default\)", shown), (name, shown)
        if action.required and action.option_strings:
            assert "(required)" in shown, name
        metavar = action.metavar if isinstance(action.metavar, str) else ""
        assert metavar == metavar.strip() and "_" not in metavar.replace("RUN_DIR", ""), (
            name, metavar)


def test_required_and_conditionally_required_options_are_marked():
    train = _help_of(next(p for p in walk(build_parser()) if p.prog == "merdg train"))
    flat = " ".join(train.split())
    assert "registered dataset name (see `merdg list datasets`) (required unless --preset)" in flat
    assert "held-out target domain (required)" in flat
    assert "run directory (nothing is written without it) (required unless --preset)" in flat
    sweep = " ".join(_help_of(next(p for p in walk(build_parser())
                                   if p.prog == "merdg sweep")).split())
    assert "experiment directory (required)" in sweep
    assert "--trials N random hparam trials per task besides the default hparams" in sweep


# --- the commands in the docs --------------------------------------------------------------

def _documented_commands():
    """Every ``merdg ...`` command line in the code blocks of README.md and docs/."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
             *sorted((ROOT / "docs").glob("*.sh"))]
    prefix = re.compile(r"(?:\$ )?(?:\w+=\S+ )*(?:merdg|python -m merdg\.cli|torchrun .* -m "
                        r"merdg\.cli) (\w.*)")
    for path in files:
        text = path.read_text()
        blocks = ([text] if path.suffix == ".sh"
                  else re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M))
        for block in blocks:
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = re.sub(r"\s#\s.*$", "", line.strip())
                match = prefix.match(line)
                if not match or re.match(r"\w+( \w+)?: error", match.group(1)):
                    continue  # not a command, or an error message shown in the docs
                command = re.split(r"\s(?:&&|\||;|>|2>)\s?", match.group(1))[0]
                if "..." in command or "$" in command:
                    continue  # an elided or shell-computed command line
                yield path.relative_to(ROOT), shlex.split(command)


def test_every_command_in_the_docs_parses():
    commands = list(_documented_commands())
    assert len(commands) > 40
    failures = []
    for path, argv in commands:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                args = parse(argv)
                if args.command in ("bench", "sweep"):
                    experiment_settings(args)
        except (SystemExit, ValueError) as problem:
            failures.append(f"{path}: merdg {shlex.join(argv)}: {err.getvalue() or problem}")
    assert not failures, "\n".join(failures)


def test_train_closing_lines_of_a_step_budget_name_evaluations_and_steps(tmp_path, capsys):
    out = tmp_path / "run"
    hparams = '{"steps": 20, "eval_every": 8, "batch_size": 12, "proj_hidden": 16, ' \
              '"fusion_hidden": 16}'
    argv = ["train", "--dataset", "synthetic", "--target", "d0", "--out", str(out),
            "--hparams", hparams, "--dataset-option", "samples_per_domain=40",
            "--dataset-option", "n_classes=3"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluation_steps"] == [8, 16, 20]  # every 8 steps and at the budget's end
    chosen = summary["selection"]["source_val"]
    step = [8, 16, 20][chosen["epoch"] - 1]
    assert lines[0].startswith("done: ERM, m0+m1+m2, d1+d2+d3 -> d0, seed 0 (3 evaluations "
                               "over 20 steps, ")
    assert lines[1].startswith(f"selected evaluation {chosen['epoch']} (step {step}) of 3 "
                               "(best source-validation accuracy): source-val acc ")
    assert lines[2].startswith("last evaluation 3 (step 20): target acc ")


def test_train_closing_lines_of_a_regression_task_say_acc2_and_mae(tmp_path, capsys):
    from merdg.testing import make_mmsa_fixture

    root = make_mmsa_fixture(str(tmp_path / "mmsa"))
    out = tmp_path / "run"
    argv = ["train", "--dataset", "mmsa", "--data-root", str(root), "--target", "sims",
            "--out", str(out), "--hparams", '{"epochs": 2, "batch_size": 8}',
            "--encoders", '{"text": {"layers": 1}, "audio": {"layers": 1}, '
            '"vision": {"layers": 1}}']
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads((out / "summary.json").read_text())
    chosen, last = summary["selection"]["source_val"], summary["selection"]["last"]
    assert lines[1] == (f"selected epoch {chosen['epoch']} of 2 (best source-validation Acc-2): "
                        f"source-val Acc-2 {100 * chosen['val_acc']:.2f}%, target Acc-2 "
                        f"{100 * chosen['target_acc']:.2f}%, target MAE "
                        f"{chosen['target_mae']:.4f}")
    assert lines[2].startswith(f"last epoch 2: target Acc-2 {100 * last['target_acc']:.2f}%, "
                               f"target MAE {last['target_mae']:.4f}; oracle epoch ")


@pytest.mark.parametrize("argv, hint", [
    (["sweep", "--n_trials", "3"], "--n_trials: DomainBed's --n_trials (runs of each hparam "
     "setting) is --seeds here; --trials is the hparam search"),
    (["sweep", "--n_hparams", "20"], "--n_hparams: DomainBed's --n_hparams counts the default "
     "hparams among the settings; --trials counts the random ones besides it (--trials N-1)"),
    (["bench", "--test_envs", "2"], "--test_envs: domains are named here: --targets NAME "
     "[NAME ...] (merdg train: --target NAME)"),
    (["train", "--nepochs", "20"], "--nepochs: --hparams '{\"epochs\": N}'"),
    (["bench", "--steps", "500"], "--steps: a step budget is an hparam: --hparams "
     "'{\"steps\": N}'"),
    # the counterpart belongs to other commands: which ones, not a look-alike of this one
    (["bench", "--n_hparams", "20"], "--n_hparams: DomainBed's --n_hparams counts the default "
     "hparams among the settings; --trials counts the random ones besides it (--trials N-1); "
     "--trials is an option of merdg sweep, merdg bench has none"),
    (["train", "--n_trials", "3"], "--n_trials: DomainBed's --n_trials (runs of each hparam "
     "setting) is --seeds here; --trials is the hparam search; --seeds is an option of merdg "
     "bench, merdg demo and merdg sweep, merdg train has none"),
    # a counterpart of another spelling in this command
    (["train", "--test_envs", "0"], "--test_envs: domains are named here: --targets NAME "
     "[NAME ...] (merdg train: --target NAME)")])
def test_domainbed_and_mmdg_bench_flags_point_to_their_counterpart(argv, hint, capsys, tmp_path):
    required = {"train": ["--target", "d0"], "bench": ["--out", str(tmp_path / "o")],
                "sweep": ["--out", str(tmp_path / "o")]}[argv[0]]
    with pytest.raises(SystemExit) as stop:
        main([*argv, *required])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"merdg {argv[0]}: error: unrecognized arguments: {' '.join(argv[1:])}; "
                   f"{hint}; see merdg {argv[0]} --help")


def test_python_warnings_of_the_command_are_one_line(capsys):
    from merdg.cli import show_warning

    show_warning(UserWarning("runs/b is a copy of the run in runs/a;\n counted once"),
                 UserWarning, "/x/src/merdg/experiments/results.py", 156)
    show_warning(DeprecationWarning("old API"), DeprecationWarning,
                 "/x/site-packages/torch/utils/data.py", 12)
    assert capsys.readouterr().err.splitlines() == [
        "warning: runs/b is a copy of the run in runs/a; counted once",
        "warning: old API (DeprecationWarning, data.py:12)"]


def test_the_merdg_command_shows_python_warnings_in_one_line(tmp_path):
    """A copied run directory warns once through the command, as one ``warning:`` line."""
    import shutil
    import subprocess
    import sys

    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--target", "d0", "--out", str(out),
                 *TINY]) == 0
    shutil.copytree(out, tmp_path / "run.bak")
    done = subprocess.run([sys.executable, "-m", "merdg.cli", "collect", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "copy of the run" in line]
    assert warnings == [f"warning: {tmp_path / 'run.bak'} is a copy of the run in {out}; "
                        "counted once"], done.stderr
