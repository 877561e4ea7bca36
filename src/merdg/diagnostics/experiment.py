"""Diagnostics inside ``merdg bench --diagnose``: one comparison per (modality set, target, seed).

Every algorithm of the bench trained on the same modality set, target and seed is diagnosed side
by side (:func:`merdg.diagnostics.diagnose`) into
``<out>/diagnostics/<modalities>/<target>/seed<k>/``; the bench report gets a section with the
headline numbers averaged over the diagnosed comparisons, a summary figure and links to every
comparison's report and figures.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merdg.diagnostics.analysis import DiagnoseOptions
from merdg.diagnostics.compare import diagnose
from merdg.diagnostics.plots import matplotlib_available, plot_bench_summary
from merdg.evaluation.statistics import aggregate
from merdg.progress import progress_bar

__all__ = ["diagnose_experiment", "diagnostics_section"]


def comparisons(configs: Sequence[Any], seeds: int) -> dict[tuple[str, str, int], list[Any]]:
    """Run configs grouped by (modalities, target, seed) for seeds below ``seeds``."""
    groups: dict[tuple[str, str, int], list[Any]] = defaultdict(list)
    for config in configs:
        if config.seed < seeds:
            groups[("+".join(config.modalities), config.target, config.seed)].append(config)
    return dict(groups)


def diagnose_experiment(experiment: Any, configs: Sequence[Any],
                        progress: bool = True) -> list[str]:
    """Diagnose every comparison of a finished experiment; returns the report section's lines.

    Args:
        experiment: The :class:`merdg.experiments.plan.ExperimentConfig` (``diagnose_seeds``
            > 0).
        configs: Its run configs (trained with ``save_model``).
        progress: Show a progress bar over comparisons.
    """
    out = Path(experiment.out_dir)
    done = []
    groups = comparisons(configs, experiment.diagnose_seeds)
    for (mods, target, seed), group in progress_bar(groups.items(), desc="diagnose",
                                            shown=progress):
        rel = Path("diagnostics", mods, target, f"seed{seed}")
        result = diagnose([c.out_dir for c in group], out / rel, DiagnoseOptions(),
                          device=experiment.base.device, data_root=experiment.base.data_root,
                          progress=False)
        done.append((mods, target, seed, rel, result))
    return diagnostics_section(done, out)


SUMMARY_COLUMNS = [
    ("target acc", lambda h: 100 * h["target_acc"]),
    ("heads, target", lambda h: 100 * h["head_target_acc"]),
    ("MLP probes, target", lambda h: 100 * h.get("mlp_probe_target_acc", np.nan)),
    ("zeroing drop, target", lambda h: 100 * h["reliance_drop_target"]),
    ("eff. rank, src", lambda h: h["effective_rank"]["sources"]),
    ("eff. rank, tgt", lambda h: h["effective_rank"]["target"]),
    ("CKA, src", lambda h: h.get("cka", {}).get("sources", np.nan)),
    ("CKA, tgt", lambda h: h.get("cka", {}).get("target", np.nan)),
    ("L_spec gap at batch, proj.", lambda h: h["batch_spectral_gap"]["projection"]),
]


def _summary_rows(done: list[tuple]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Headline dicts per (modalities, algorithm) over the diagnosed comparisons."""
    per_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for mods, _, _, _, result in done:
        for run in result["runs"]:
            per_key[(mods, run["run"]["algorithm"])].append(run["headline"])
    return dict(per_key)


def _cell(values: list[float]) -> str:
    s = aggregate(values)  # the finite values
    if not s.n:
        return "-"
    return f"{s.mean:.2f} ± {s.std:.2f}" if s.n > 1 else f"{s.mean:.2f}"


def diagnostics_section(done: list[tuple], out: Path) -> list[str]:
    """Markdown lines: summary table, summary figure, links per comparison."""
    per_key = _summary_rows(done)
    n = len(done)
    lines = ["## Diagnostics", "",
             f"`merdg diagnose` on {n} comparison(s) (every algorithm of one modality set, "
             "target and seed side by side). Mean ± std over the comparisons; accuracies and "
             "drops in %, the others as defined in `docs/diagnostics.md` (eff. rank and CKA of "
             "encoder embeddings averaged over modalities/pairs and source domains; L_spec gap: "
             "distance of MER-DG's spectral term on training-size batches of projections from "
             "its floor).", "",
             "| modalities | algorithm | " + " | ".join(c for c, _ in SUMMARY_COLUMNS) + " |",
             "|---|---|" + "---|" * len(SUMMARY_COLUMNS)]
    for (mods, algo), heads in sorted(per_key.items()):
        cells = [_cell([fn(h) for h in heads]) for _, fn in SUMMARY_COLUMNS]
        lines.append(f"| {mods} | {algo} | " + " | ".join(cells) + " |")
    lines.append("")
    if matplotlib_available():
        plot_bench_summary(per_key, out / "diagnostics_summary.png")
        lines += ["![diagnostics summary](diagnostics_summary.png)", ""]
    for mods, target, seed, rel, result in done:
        figures = [k for k in result["files"] if k not in ("report", "json")]
        links = " · ".join(f"[{k}]({(rel / f'{k}.png').as_posix()})" for k in figures)
        lines.append(f"- {mods}, target {target}, seed {seed}: "
                     f"[report]({(rel / 'report.md').as_posix()})" + (f" · {links}" if links
                                                                      else ""))
    return lines + [""]
