"""tools/mutation.py's own failure reporting: a module whose mutmut run failed is shown as
failed (not as 100%), the run fails, and a missing mutmut stops it before any work."""

import importlib.util
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "mutation.py"


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("merdg_mutation_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_a_module_without_verdicts_is_shown_failed_and_fails_the_run(mutation, capsys):
    failed = mutation.Score("run.schedule", error="mutmut exited 1 (see log): No module")
    assert not mutation.report([failed], 0.9)
    out = capsys.readouterr().out
    assert "run.schedule: mutmut exited 1 (see log): No module" in out
    row = next(line for line in out.splitlines() if line.startswith("run.schedule "))
    assert row.split() == ["run.schedule", "0", "0", "0", "0", "failed"]
    assert "100.0%" not in out


def test_a_scored_module_shows_its_score(mutation, capsys):
    scored = mutation.Score("losses.mer", total=10, killed=8, equivalent=1)
    assert not mutation.report([scored], 0.9)  # 8 of 9: 88.9% < 90%
    assert mutation.report([scored], 0.85)
    row = [line for line in capsys.readouterr().out.splitlines()
           if line.startswith("losses.mer ")][-1]
    assert row.split() == ["losses.mer", "10", "8", "1", "0", "88.9%"]


def test_without_mutmut_nothing_runs(mutation, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(mutation.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mutmut" else real(name, *a))
    monkeypatch.setattr(mutation, "prepare", lambda *a: pytest.fail("work started"))
    assert mutation.main(["run.schedule"]) == 2
    assert "mutmut is not installed" in capsys.readouterr().err
