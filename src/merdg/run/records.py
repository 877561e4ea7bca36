"""Run records and the one flattener from a run's records to its result rows.

**Records.** Every line of ``records.jsonl`` is one epoch (:class:`EpochRecord`): ``epoch``,
``steps``, the mean training terms (``train``), the clean evaluation after the epoch (``val``:
source validation pooled and per domain, ``target``; :mod:`merdg.evaluators.clean`) and the
epoch's wall time; the first line also holds the run's info (``run``: full config, resolved
hparams, sources, modalities, package version and git hash, DomainBed's convention), so tables
can be built from the records alone.

**Evaluations.** What an evaluator measured on a saved model (``evaluations/*.json`` of the run
directory, :mod:`merdg.run.evaluation`): ``{"evaluator", "settings", "model": {"epoch",
"digest", "rule"}, "columns": {...}, "details": {...}}``. An evaluation belongs to the epoch
whose weights it measured.

**Rows** (:func:`run_rows`): one flat dict per selection rule with the run's columns
(:func:`run_columns`: dataset, modalities, algorithm, target, seed, ...), the selected epoch's
clean columns, and the columns of the evaluations of that epoch's weights. ``summary.json``,
``results.csv``, every table and ``merdg collect`` read these rows, so a summary's keys are the
tables' column names. Records of earlier versions, which held the other evaluations inside the
epoch records, give the same columns (each evaluator's ``legacy_columns``).
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import merdg
from merdg.evaluators import EVALUATORS, ORDER, CleanAccuracy
from merdg.run.selection import SELECTION_RULES, select_epoch

__all__ = ["EpochRecord", "WriteFailedError", "append_jsonl", "fsync_file", "choose_evaluations",
           "fsync_dir", "git_revision", "json_safe", "read_jsonl", "run_columns", "run_info_of",
           "run_metadata", "run_rows", "writing", "write_json_atomic", "write_jsonl_atomic"]

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# what torch.save raises when its file's writes fail (e.g. on a full disk)
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


class WriteFailedError(OSError):
    """A run file could not be written (a full disk, a quota, an I/O error); what was on disk
    before is intact (every write goes to a temporary file first)."""


def write_failure(path: str | os.PathLike, err: BaseException, note: str = "") -> WriteFailedError:
    """The one-line error for a failed write of ``path`` (``note``: what is still intact)."""
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        reason = f"the disk is full ({os.strerror(err.errno)})"
    elif isinstance(err, OSError):
        reason = f"the write failed ({err.strerror or err})"
    else:
        reason = f"the write failed, most likely because the disk is full (torch: {err})"
    text = f"cannot write {path}: {reason}"
    return WriteFailedError(text + (f"; {note}" if note else ""))


@contextmanager
def writing(path: str | os.PathLike, note: str = "", cleanup: str | os.PathLike | None = None
            ) -> Iterator[None]:
    """Turn a failed write of ``path`` into one :class:`WriteFailedError` line.

    Args:
        path: The file being written (named in the message).
        note: What is still intact (appended to the message).
        cleanup: A temporary file to remove when the write fails (frees the space it took).
    """
    try:
        yield
    except WriteFailedError:
        raise
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not any(m in str(err)
                                                     for m in TORCH_WRITE_FAILURES):
            raise
        if cleanup is not None:
            Path(cleanup).unlink(missing_ok=True)
        raise write_failure(path, err, note) from err


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in directory ``path`` durable (a no-op where directories cannot be
    opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def git_revision() -> str | None:
    """The git commit of the merdg source tree (``+dirty`` if modified), or None outside git."""
    root = Path(merdg.__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_metadata() -> dict[str, Any]:
    import torch

    return {"merdg_version": merdg.__version__, "git": git_revision(),
            "torch_version": str(torch.__version__)}


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def append_jsonl(path: str | os.PathLike, record: dict[str, Any], note: str = "",
                 sync: bool = True) -> None:
    """Append one record as a line and flush it (and, with ``sync``, fsync it) to disk.

    Raises:
        WriteFailedError: The write failed (``note`` says what is intact); a half line may be
            left at the end, which :func:`read_jsonl` reports and a resumed run rewrites.
    """
    with writing(path, note), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(json_safe(record), sort_keys=True) + "\n")
        f.flush()
        if sync:
            os.fsync(f.fileno())


def fsync_file(path: str | os.PathLike, note: str = "") -> None:
    """Make what was written to ``path`` durable.

    Raises:
        WriteFailedError: The fsync failed.
    """
    with writing(path, note), open(path, "rb") as f:
        os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike, obj: Any, note: str = "") -> None:
    """Write JSON through a temporary file, fsync and a rename, so readers never see half a
    file (a crash leaves the old file or the new one).

    Raises:
        WriteFailedError: The write failed; ``path`` is unchanged.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n"
    with writing(path, note, cleanup=tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; a malformed line raises with the file and line number."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: malformed record ({err})") from err


def write_jsonl_atomic(path: str | os.PathLike, records: list[dict[str, Any]],
                       note: str = "") -> None:
    """Replace a JSON-lines file with ``records`` through a temporary file and a rename.

    Raises:
        WriteFailedError: The write failed; ``path`` is unchanged.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, note, cleanup=tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(json_safe(record), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


# --- the record schema -----------------------------------------------------------------------

@dataclass
class EpochRecord:
    """One line of ``records.jsonl`` (module docstring).

    Attributes:
        epoch: 1-based epoch.
        steps: Optimizer steps so far.
        train: Mean training terms of the epoch (``ce``, ``mer``, ...).
        val / target: The clean evaluation after the epoch (:mod:`merdg.evaluators.clean`).
        time_s: Wall time of the epoch (training and its evaluation).
        run: The run's info, in the first record only.
        extra: Other entries (``data_issues``; the in-record evaluations of earlier versions).
    """

    epoch: int
    steps: int
    train: dict[str, float]
    val: dict[str, Any]
    target: dict[str, Any]
    time_s: float = 0.0
    run: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    FIELDS = ("epoch", "steps", "train", "val", "target", "time_s", "run")

    def to_dict(self) -> dict[str, Any]:
        out = {"epoch": self.epoch, "steps": self.steps, "train": self.train, "val": self.val,
               "target": self.target, "time_s": self.time_s, **self.extra}
        if self.run is not None:
            out["run"] = self.run
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpochRecord:
        """A record from its JSON form.

        Raises:
            ValueError: A required entry is missing or malformed (named).
        """
        missing = [k for k in ("epoch", "val", "target") if k not in data]
        if missing or not isinstance(data.get("val"), dict) or not isinstance(
                data.get("target"), dict) or "acc" not in data["val"]:
            what = missing or "'val'/'target'"
            raise ValueError(f"not a merdg epoch record (missing or malformed {what})")
        return cls(int(data["epoch"]), int(data.get("steps", 0)), dict(data.get("train", {})),
                   dict(data["val"]), dict(data["target"]), float(data.get("time_s", 0.0)),
                   data.get("run"), {k: v for k, v in data.items() if k not in cls.FIELDS})


def run_info_of(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's info (the first record's ``run``).

    Raises:
        ValueError: The first record holds none.
    """
    if not records or not isinstance(records[0].get("run"), dict):
        raise ValueError("not a merdg run's records (the first record holds no 'run' entry)")
    return records[0]["run"]


# --- rows --------------------------------------------------------------------------------------

def _left_out(run: Mapping[str, Any]) -> str | None:
    """The one domain a run neither trained on nor evaluated (an inner run of a
    leave-one-domain-out search leaves out its task's target), else None."""
    domains = run.get("domains")
    if not domains or not run["config"].get("sources"):
        return None
    seen = {*run["sources"], run["config"]["target"]}
    left = [d for d in domains if d not in seen]
    return left[0] if len(left) == 1 else None


def run_columns(run: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                path: str = "") -> dict[str, Any]:
    """The columns every row of a run shares: what the run is (``dataset``, ``modalities``,
    ``algorithm``, ``target``, ``seed``, ``hparams_seed``, ``sources``, ``setting``: ``multi``
    or ``single``, ``column``: the table column, the target or ``source->target``,
    ``source_domains``, ``left_out`` for an inner run of a leave-one-domain-out search), what
    one epoch was (``steps_per_epoch``, ``seen_per_epoch``), ``num_classes``, ``task``
    (``classification``, or ``regression`` when the clean evaluation holds an MAE),
    ``train_time_s`` and ``path``."""
    cfg = run["config"]
    sources = list(run.get("sources") or cfg.get("sources") or [])  # older: config only
    single = len(cfg.get("sources") or []) == 1
    out: dict[str, Any] = {
        "dataset": cfg["dataset"], "modalities": "+".join(run["modalities"]),
        "algorithm": cfg["algorithm"], "target": cfg["target"], "seed": cfg["seed"],
        "hparams_seed": cfg["hparams_seed"], "sources": "+".join(sources),
        "setting": "single" if single else "multi",
        "column": f"{'+'.join(sources)}->{cfg['target']}" if single else cfg["target"],
        "source_domains": json.dumps(sources), "path": path}
    left_out = _left_out(run)
    if left_out is not None:
        out["left_out"] = left_out
    if run.get("num_classes"):
        out["num_classes"] = run["num_classes"]
    regression = bool(records) and "mae" in records[0].get("target", {})
    out["task"] = "regression" if regression else "classification"
    plan = run.get("epoch_plan")
    if plan:
        out["steps_per_epoch"] = plan["steps_per_epoch"]
        out["seen_per_epoch"] = json.dumps(plan["seen_per_epoch"])
    out["train_time_s"] = sum(r.get("time_s", 0.0) for r in records)
    return out


def choose_evaluations(evaluations: Sequence[Mapping[str, Any]],
                       wanted: Mapping[str, Mapping[str, Any]] | None = None
                       ) -> tuple[list[Mapping[str, Any]], list[str]]:
    """Per (evaluator, model epoch), the evaluation a row reports: the one with the settings
    ``wanted`` asks for (``{evaluator: canonical settings}``), else the newest; and the
    evaluators for which several settings were on offer without one wanted (to say so)."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for evaluation in evaluations:
        key = (evaluation["evaluator"], int(evaluation["model"]["epoch"]))
        groups.setdefault(key, []).append(evaluation)
    chosen, ambiguous = [], []
    for (name, _), group in sorted(groups.items()):
        if wanted is not None and name in wanted:
            group = [e for e in group if e.get("settings") == dict(wanted[name])]
            if not group:
                continue
        elif len({json.dumps(e.get("settings"), sort_keys=True) for e in group}) > 1:
            ambiguous.append(name)
        chosen.append(max(group, key=lambda e: (str(e.get("created", "")), e.get("file", ""))))
    return chosen, sorted(set(ambiguous))


def run_rows(records: Sequence[Mapping[str, Any]],
             evaluations: Sequence[Mapping[str, Any]] = (), path: str = "") -> list[dict]:
    """One flat row per selection rule (:data:`~merdg.run.selection.SELECTION_RULES`) of one
    run (module docstring); ``evaluations`` as chosen by :func:`choose_evaluations`.

    Raises:
        ValueError: A record that is not a merdg epoch record.
    """
    run = run_info_of(records)
    shared = run_columns(run, records, path)
    clean = CleanAccuracy()
    by_epoch: dict[int, dict[str, Any]] = {}
    for evaluation in evaluations:
        by_epoch.setdefault(int(evaluation["model"]["epoch"]), {}).update(
            evaluation["columns"])
    rows = []
    for rule in SELECTION_RULES:
        record = EpochRecord.from_dict(select_epoch(records, rule))
        row = {**shared, "selection": rule, "epoch": record.epoch}
        row.update(clean.epoch_columns(record.to_dict()))
        for name in ORDER:
            row.update(EVALUATORS.get(name).legacy_columns(record.to_dict(), run))
        row.update(by_epoch.get(record.epoch, {}))
        rows.append(row)
    return rows
