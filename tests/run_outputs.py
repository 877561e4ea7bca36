"""What a finished run computed, comparable between two run directories: its records, the rows
of its summary and its evaluations, without wall times and what names the directory."""

import json
from pathlib import Path

from merdg.run.directory import RunDir
from merdg.run.records import read_jsonl

PLACE = ("path", "train_time_s")  # row columns that depend on where and how fast a run ran


def records(out: Path) -> list[dict]:
    """The records without wall times and the run block (it names the directory)."""
    return [{k: v for k, v in r.items() if k not in ("time_s", "run")}
            for r in read_jsonl(Path(out) / RunDir.RECORDS)]


def summary_rows(out: Path) -> dict[str, dict]:
    """``summary.json``'s row of each selection rule, without ``path`` and ``train_time_s``."""
    summary = json.loads((Path(out) / RunDir.SUMMARY).read_text())
    return {rule: {k: v for k, v in row.items() if k not in PLACE}
            for rule, row in summary["selection"].items()}


def evaluations(out: Path) -> dict[str, dict]:
    """``{evaluation file: its columns}``."""
    return {e["file"]: e["columns"] for e in RunDir(out).read_evaluations()}


def evaluation(out: Path, evaluator: str) -> dict:
    """The one evaluation of ``evaluator`` in a run directory (fails when there are several)."""
    (found,) = [e for e in RunDir(out).read_evaluations() if e["evaluator"] == evaluator]
    return found
