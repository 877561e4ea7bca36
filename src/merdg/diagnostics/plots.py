"""PNG figures of a diagnosis (matplotlib, the optional ``plot`` extra).

Every figure puts the compared runs side by side (one bar color per run) and reads only the
result dicts of :func:`merdg.diagnostics.analysis.diagnose_run`, so figures can be redrawn from
``diagnostics.json``. Each ``figure_*`` function returns the finished figure (laid out by
:func:`merdg.plotting.finish_figure`, so no text overlaps); each ``plot_*`` function writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merdg.diagnostics.analysis import ALL_SOURCES, SPACES
from merdg.evaluation.statistics import aggregate
from merdg.plotting import finish_figure, matplotlib_available, pyplot, save_figure

__all__ = ["figure_bench_summary", "figure_curves", "figure_dependence", "figure_diversity",
           "figure_reliance", "figure_unimodal", "matplotlib_available", "plot_all",
           "plot_bench_summary"]


def _color(k: int) -> str:
    return f"C{k % 10}"


def _bars(ax, groups: Sequence[str], series: dict[str, Sequence[float]],
          markers: dict[str, Sequence[float]] | None = None) -> None:
    """Grouped bars: one group per x label, one bar per series (run); optional black ticks
    (e.g. source-validation accuracy) drawn over the bars."""
    width = 0.8 / max(len(series), 1)
    xs = np.arange(len(groups))
    for k, (label, values) in enumerate(series.items()):
        pos = xs + (k - (len(series) - 1) / 2) * width
        ax.bar(pos, values, width, color=_color(k), label=label)
        if markers and label in markers:
            ax.scatter(pos, markers[label], marker="_", s=120, color="black", zorder=3,
                       linewidths=2)
    ax.set_xticks(xs, groups, fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _run_legend(fig, ax) -> None:
    """One legend of the runs' colors under the figure (never over bars or other text)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6),
                   fontsize=8)


def _domain_label(result: dict[str, Any], domain: str) -> str:
    return f"{domain} (T)" if domain == result["run"]["target"] else domain


def _figure(nrows: int, ncols: int, width: float, height: float, **kw):
    return pyplot().subplots(nrows, ncols, figsize=(width, height), squeeze=False,
                             layout="constrained", **kw)


def figure_unimodal(results: list[dict[str, Any]], labels: list[str]):
    """Target accuracy of the model's unimodal heads and of each probe kind, per modality."""
    first = results[0]
    mods = first["run"]["modalities"]
    kinds = list(first["probes"])
    target = first["run"]["target"]
    fig, axes = _figure(1, 1 + len(kinds), 4.2 * (1 + len(kinds)), 4.0)
    axes = axes[0]
    heads = {lab: [r["accuracy"][target]["heads"][m] * 100 for m in mods]
             for lab, r in zip(labels, results)}
    head_val = {lab: [r["accuracy"][ALL_SOURCES]["heads"][m] * 100 for m in mods]
                for lab, r in zip(labels, results)}
    _bars(axes[0], mods, heads, head_val)
    axes[0].set_title("model's unimodal heads", fontsize=10)
    for ax, kind in zip(axes[1:], kinds):
        keys = list(first["probes"][kind])
        test = {lab: [r["probes"][kind][k]["selected"]["test_acc"] * 100 for k in keys]
                for lab, r in zip(labels, results)}
        val = {lab: [r["probes"][kind][k]["selected"]["val_acc"] * 100 for k in keys]
               for lab, r in zip(labels, results)}
        _bars(ax, keys, test, val)
        ax.set_title(f"{kind} probe on frozen embeddings", fontsize=10)
    chance = 100.0 / _num_classes(first)
    for ax in axes:
        ax.axhline(chance, color="gray", ls=":", lw=1)
        ax.set_ylabel("target accuracy (%)")
    _run_legend(fig, axes[0])
    fig.suptitle(f"Unimodal accuracy on target {target} (bars); black ticks: source "
                 "validation; dotted: chance", fontsize=10)
    return finish_figure(fig)


def _num_classes(result: dict[str, Any]) -> int:
    return int(result["run"]["num_classes"])


def figure_reliance(results: list[dict[str, Any]], labels: list[str]):
    """Fused accuracy with modalities zeroed, on the pooled source validation and the target."""
    first = results[0]
    variants = list(first["accuracy"][first["run"]["target"]]["variants"])
    fig, axes = _figure(1, 2, max(9.0, 0.9 * len(variants) * 2), 4.2, sharey=True)
    for ax, domain, title in ((axes[0][0], ALL_SOURCES, "source validation (pooled)"),
                              (axes[0][1], first["run"]["target"], "target")):
        series = {lab: [r["accuracy"][domain]["variants"][v] * 100 for v in variants]
                  for lab, r in zip(labels, results)}
        _bars(ax, [v.replace(" ", "\n") for v in variants], series)
        ax.axhline(100.0 / _num_classes(first), color="gray", ls=":", lw=1)
        ax.set_title(f"fused accuracy, {title}", fontsize=10)
        ax.set_ylabel("accuracy (%)")
    _run_legend(fig, axes[0][0])
    fig.suptitle("Reliance on each modality: fused accuracy when modalities are zeroed "
                 "(dotted: chance)", fontsize=10)
    return finish_figure(fig)


def _domain_groups(result: dict[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
    domains = [*result["run"]["sources"], result["run"]["target"]]
    return [(k, d) for k in keys for d in domains]


def figure_diversity(results: list[dict[str, Any]], labels: list[str]):
    """Effective rank and L_spec per modality and domain, for embeddings and projections."""
    first = results[0]
    groups = _domain_groups(first, first["run"]["modalities"])
    ticks = [f"{m}\n{_domain_label(first, d)}" for m, d in groups]
    fig, axes = _figure(len(SPACES), 2, max(9.0, 0.55 * len(groups) * 2 + 3), 7.0)
    for row, space in enumerate(SPACES):
        for col, metric in enumerate(("effective_rank", "spectral_term")):
            series = {lab: [r["diversity"][space][m][d][metric] for m, d in groups]
                      for lab, r in zip(labels, results)}
            ax = axes[row][col]
            _bars(ax, ticks, series)
            dim = first["diversity"][space][groups[0][0]][groups[0][1]]["dim"]
            name = ("effective rank (higher = more diverse)" if metric == "effective_rank"
                    else "L_spec = -logdet(corr)/D (lower = more diverse)")
            ax.set_title(f"{space} (D={dim}): {name}", fontsize=9)
    _run_legend(fig, axes[0][0])
    fig.suptitle("Feature diversity per modality and domain ((T) = target)", fontsize=10)
    return finish_figure(fig)


def figure_dependence(results: list[dict[str, Any]], labels: list[str]):
    """Cross-modal dependence of the embeddings per modality pair and domain (None without
    modality pairs)."""
    first = results[0]
    pairs = list(first["dependence"])
    if not pairs:
        return None
    groups = _domain_groups(first, pairs)
    ticks = [f"{p.replace('~', ' ~ ')}\n{_domain_label(first, d)}" for p, d in groups]
    metrics = {"cka": "linear CKA (debiased)", "cka_within_class": "CKA of class residuals",
               "cca_mean": "mean canonical correlation"}
    fig, axes = _figure(len(metrics), 1, max(9.0, 0.6 * len(groups) + 2), 10.0)
    for ax, (metric, title) in zip(axes[:, 0], metrics.items()):
        series = {lab: [r["dependence"][p][d][metric] for p, d in groups]
                  for lab, r in zip(labels, results)}
        _bars(ax, ticks, series)
        ax.set_title(title, fontsize=10)
    _run_legend(fig, axes[0][0])
    fig.suptitle("Cross-modal dependence of encoder embeddings within each domain "
                 "((T) = target)", fontsize=10)
    return finish_figure(fig)


def _curve(ax, records: list[dict[str, Any]], get, **kw) -> None:
    xs = [r["epoch"] for r in records]
    ys = [get(r) for r in records]
    ax.plot(xs, ys, **kw)


def _mer_floor(results: list[dict[str, Any]]) -> float | None:
    """L_spec's floor at the training batch size in the space MER-DG regularized (if any run
    used MER-DG)."""
    for r in results:
        target = r["run"]["hparams"].get("mer_target")
        if target is not None:
            space = "embedding" if target == "embedding" else "projection"
            return next(iter(r["training_batch"][space].values()))["floor"]
    return None


CURVE_TITLES = [["fused accuracy (%): source val (solid), target (dashed)", "training CE (fused)"],
                ["MER L_spec per modality on training batches (MER runs)",
                 "unimodal head accuracy on target (%)"]]


def _run_curves(axes, label: str, records: list[dict[str, Any]], color: str) -> None:
    """One run's lines in the four panels of :func:`figure_curves`."""
    styles = ["-", "--", ":", "-."]
    _curve(axes[0][0], records, lambda r: r["val"]["acc"] * 100, color=color,
           label=f"{label} val")
    _curve(axes[0][0], records, lambda r: r["target"]["acc"] * 100, color=color, ls="--",
           label=f"{label} target")
    _curve(axes[0][1], records, lambda r: r["train"].get("ce", np.nan), color=color, label=label)
    for j, m in enumerate(sorted(records[0]["target"]["probe_acc"])):
        style = styles[j % len(styles)]
        if f"mer_spec/{m}" in records[0]["train"]:
            _curve(axes[1][0], records, lambda r, m=m: r["train"][f"mer_spec/{m}"], color=color,
                   ls=style, label=f"{label} {m}")
        _curve(axes[1][1], records, lambda r, m=m: r["target"]["probe_acc"][m] * 100,
               color=color, ls=style, label=f"{label} {m}")


def figure_curves(results: list[dict[str, Any]], labels: list[str],
                  records: list[list[dict[str, Any]]]):
    """Training curves from ``records.jsonl``: accuracies, CE, MER L_spec, head accuracies
    (None when no run has records), against whole epochs. Each panel's legend sits to the
    right of the panel."""
    if not any(records):
        return None
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(2, 2, 13.0, 7.5)
    floor = _mer_floor(results)
    if floor is not None:
        axes[1][0].axhline(floor, color="gray", ls=":", lw=1,
                           label=f"floor at the batch size ({floor:.3f})")
    for k, (label, recs) in enumerate(zip(labels, records)):
        if recs:
            _run_curves(axes, label, recs, _color(k))
    for ax, title in zip(axes.flat, [t for row in CURVE_TITLES for t in row]):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      borderaxespad=0.0)
    return finish_figure(fig)


def _save(fig, path: Path) -> Path | None:
    return None if fig is None else save_figure(fig, path, finish=False)


def plot_unimodal(results: list[dict[str, Any]], labels: list[str], path: Path) -> Path:
    return _save(figure_unimodal(results, labels), path)


def plot_reliance(results: list[dict[str, Any]], labels: list[str], path: Path) -> Path:
    return _save(figure_reliance(results, labels), path)


def plot_diversity(results: list[dict[str, Any]], labels: list[str], path: Path) -> Path:
    return _save(figure_diversity(results, labels), path)


def plot_dependence(results: list[dict[str, Any]], labels: list[str], path: Path) -> Path | None:
    return _save(figure_dependence(results, labels), path)


def plot_curves(results: list[dict[str, Any]], labels: list[str],
                records: list[list[dict[str, Any]]], path: Path) -> Path | None:
    return _save(figure_curves(results, labels, records), path)


def plot_all(results: list[dict[str, Any]], labels: list[str],
             records: list[list[dict[str, Any]]], out_dir: Path) -> dict[str, Path]:
    """Every figure into ``out_dir``; ``{name: path}`` of those drawn."""
    figures = {
        "unimodal": plot_unimodal(results, labels, out_dir / "unimodal.png"),
        "reliance": plot_reliance(results, labels, out_dir / "reliance.png"),
        "diversity": plot_diversity(results, labels, out_dir / "diversity.png"),
        "dependence": plot_dependence(results, labels, out_dir / "dependence.png"),
        "curves": plot_curves(results, labels, records, out_dir / "curves.png"),
    }
    return {k: v for k, v in figures.items() if v is not None}


BENCH_PANELS = {
    "accuracy on target (%)": {
        "fused": lambda h: 100 * h["target_acc"],
        "heads": lambda h: 100 * h["head_target_acc"],
        "linear probes": lambda h: 100 * h.get("linear_probe_target_acc", np.nan),
        "MLP probes": lambda h: 100 * h.get("mlp_probe_target_acc", np.nan)},
    "embedding effective rank": {
        "sources": lambda h: h["effective_rank"]["sources"],
        "target": lambda h: h["effective_rank"]["target"]},
    "cross-modal CKA of embeddings": {
        "sources": lambda h: h.get("cka", {}).get("sources", np.nan),
        "target": lambda h: h.get("cka", {}).get("target", np.nan)},
    "L_spec above floor, training batch": {
        "embedding": lambda h: h["batch_spectral_gap"]["embedding"],
        "projection": lambda h: h["batch_spectral_gap"]["projection"]},
}


def figure_bench_summary(per_key: dict[tuple[str, str], list[dict[str, Any]]]):
    """Headline numbers per (modalities, algorithm), mean ± sample std over the diagnosed
    comparisons (the title says over how many)."""
    fig, axes = _figure(1, len(BENCH_PANELS), 4.2 * len(BENCH_PANELS), 4.4)
    keys = sorted(per_key)
    for ax, (title, columns) in zip(axes[0], BENCH_PANELS.items()):
        width = 0.8 / len(keys)
        xs = np.arange(len(columns))
        for k, key in enumerate(keys):
            cells = [aggregate(fn(h) for h in per_key[key]) for fn in columns.values()]
            pos = xs + (k - (len(keys) - 1) / 2) * width
            ax.bar(pos, [c.mean for c in cells], width, yerr=[c.std for c in cells], capsize=2,
                   color=_color(k), label=" ".join(key))
        ax.set_xticks(xs, list(columns), fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    _run_legend(fig, axes[0][0])
    ns = sorted({len(v) for v in per_key.values()})
    n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]} to {ns[-1]}"
    spread = "one comparison each, no spread" if ns == [1] else (
        f"mean ± sample std over n = {n} comparisons")
    fig.suptitle(f"Diagnostics averaged over the diagnosed comparisons ({spread})", fontsize=10)
    return finish_figure(fig)


def plot_bench_summary(per_key: dict[tuple[str, str], list[dict[str, Any]]],
                       path: Path) -> Path:
    """Write :func:`figure_bench_summary` to ``path``."""
    return save_figure(figure_bench_summary(per_key), path, finish=False)
