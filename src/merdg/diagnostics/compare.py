"""``diagnose(run_dirs)``: load one or more comparable runs, analyze each, write the report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from merdg.datasets import DomainDataset, build_dataset
from merdg.diagnostics.analysis import DiagnoseOptions, diagnose_run
from merdg.diagnostics.features import load_run
from merdg.diagnostics.plots import matplotlib_available, plot_all
from merdg.diagnostics.report import markdown_report, run_labels
from merdg.progress import progress_bar
from merdg.run.directory import RunDir
from merdg.run.records import run_metadata, write_json_atomic

__all__ = ["diagnose"]

# what must agree for runs to be shown side by side
COMPARABLE = ("dataset", "dataset_options", "target")


def _read_info(path: Path) -> dict[str, Any]:
    return RunDir(path).read_info()


def check_comparable(infos: Sequence[dict[str, Any]], paths: Sequence[Path]) -> None:
    """Runs compared side by side must share dataset, options, target, sources, modalities."""
    def key(info: dict[str, Any]) -> dict[str, Any]:
        cfg = info["config"]
        return {**{k: cfg[k] for k in COMPARABLE}, "sources": sorted(info["sources"]),
                "modalities": sorted(info["modalities"])}

    first = key(infos[0])
    for info, path in zip(infos[1:], paths[1:]):
        other = key(info)
        diff = {k: (first[k], other[k]) for k in first if first[k] != other[k]}
        if diff:
            raise ValueError(f"runs {paths[0]} and {path} are not comparable; they differ in "
                             + "; ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items()))


def _shared_dataset(info: dict[str, Any], data_root: str | None) -> DomainDataset:
    cfg = info["config"]
    return build_dataset(cfg["dataset"], data_root or cfg["data_root"], info["modalities"],
                         **cfg["dataset_options"])


def diagnose(run_dirs: str | Path | Sequence[str | Path], out_dir: str | Path | None = None,
             options: DiagnoseOptions | None = None, device: str = "cpu",
             data_root: str | None = None, progress: bool = True,
             figures: bool = True) -> dict[str, Any]:
    """Diagnose trained runs and write ``report.md``, ``diagnostics.json`` and PNG figures.

    Args:
        run_dirs: One run directory, or several comparable ones (same dataset, options, target,
            sources and modalities; e.g. ERM and MER-DG), shown side by side.
        out_dir: Where to write (None: compute only, write nothing).
        options: What to compute (:class:`~merdg.diagnostics.analysis.DiagnoseOptions`).
        device: Device for the forward passes and probes' features.
        data_root: Overrides the runs' recorded ``data_root``.
        progress: Show a progress bar over runs.
        figures: Draw the PNG figures (needs matplotlib; a few seconds on a CPU).

    Returns:
        ``{"runs": [per-run results], "labels": [...], "files": {name: path}}``; the same
        content (without ``files``) is ``diagnostics.json``.

    Raises:
        FileNotFoundError: A run lacks ``config.json`` or ``model.pt``.
        ValueError: The runs are not comparable, or a file is malformed.
    """
    paths = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(p) for p in run_dirs]
    if not paths:
        raise ValueError("no run directory given")
    infos = [_read_info(p) for p in paths]
    check_comparable(infos, paths)
    options = options or DiagnoseOptions()
    dataset = _shared_dataset(infos[0], data_root)
    results, records = [], []
    for path in progress_bar(paths, desc="diagnose", shown=progress):
        run = load_run(path, device, data_root, dataset=dataset)
        results.append(diagnose_run(run, options))
        records.append(run.records)
    labels = run_labels(results)
    output = {"runs": results, "labels": labels, **run_metadata()}
    if out_dir is not None:
        output["files"] = write_outputs(results, labels, records, Path(out_dir), output,
                                        figures)
    return output


def write_outputs(results: list[dict[str, Any]], labels: list[str],
                  records: list[list[dict[str, Any]]], out: Path,
                  output: dict[str, Any], figures: bool = True) -> dict[str, Path]:
    """``diagnostics.json``, the figures (when matplotlib is installed) and ``report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "diagnostics.json", output)
    drawn: dict[str, Path] = {}
    if figures and matplotlib_available():
        drawn = plot_all(results, labels, records, out)
    elif figures:
        print("note: matplotlib is not installed (pip install 'merdg[plot]'); no figures")
    (out / "report.md").write_text(markdown_report(results, labels, drawn))
    return {"report": out / "report.md", "json": out / "diagnostics.json", **drawn}
