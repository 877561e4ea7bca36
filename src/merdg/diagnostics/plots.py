"""PNG figures of a diagnosis (matplotlib, the optional ``plot`` extra).

Every figure puts the compared runs side by side (one bar color per run) and reads only the
result dicts of :func:`merdg.diagnostics.analysis.diagnose_run`, so figures can be redrawn from
``diagnostics.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merdg.diagnostics.analysis import ALL_SOURCES, SPACES

__all__ = ["matplotlib_available", "plot_all", "plot_bench_summary"]


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def _domain_label(result: dict[str, Any], domain: str) -> str:
    return f"{domain} (T)" if domain == result["run"]["target"] else domain


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_unimodal(results: list[dict[str, Any]], labels: list[str], path: Path) -> Path:
    """Target accuracy of the model's unimodal heads and of each probe kind, per modality."""
    plt = _pyplot()
    first = results[0]
    mods = first["run"]["modalities"]
    kinds = list(first["probes"])
    target = first["run"]["target"]
    fig, axes = plt.subplots(1, 1 + len(kinds), figsize=(4.2 * (1 + len(kinds)), 3.6),
                             squeeze=False)
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
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"Unimodal accuracy on target {target} (bars); black ticks: source "
                 "validation; dotted: chance", fontsize=10)
    return _save(fig, path)


def _num_classes(result: dict[str, Any]) -> int:
    return int(result["run"]["num_classes"])


def plot_reliance(results: list[dict[str, Any]], labels: list[str], path: Path) -> Path:
    """Fused accuracy with modalities zeroed, on the pooled source validation and the target."""
    plt = _pyplot()
    first = results[0]
    variants = list(first["accuracy"][first["run"]["target"]]["variants"])
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 0.9 * len(variants) * 2), 3.8), sharey=True)
    for ax, domain, title in ((axes[0], ALL_SOURCES, "source validation (pooled)"),
                              (axes[1], first["run"]["target"], "target")):
        series = {lab: [r["accuracy"][domain]["variants"][v] * 100 for v in variants]
                  for lab, r in zip(labels, results)}
        _bars(ax, [v.replace(" ", "\n") for v in variants], series)
        ax.axhline(100.0 / _num_classes(first), color="gray", ls=":", lw=1)
        ax.set_title(f"fused accuracy, {title}", fontsize=10)
        ax.set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Reliance on each modality: fused accuracy when modalities are zeroed "
                 "(dotted: chance)", fontsize=10)
    return _save(fig, path)


def _domain_groups(result: dict[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
    domains = [*result["run"]["sources"], result["run"]["target"]]
    return [(k, d) for k in keys for d in domains]


def plot_diversity(results: list[dict[str, Any]], labels: list[str], path: Path) -> Path:
    """Effective rank and L_spec per modality and domain, for embeddings and projections."""
    plt = _pyplot()
    first = results[0]
    groups = _domain_groups(first, first["run"]["modalities"])
    ticks = [f"{m}\n{_domain_label(first, d)}" for m, d in groups]
    fig, axes = plt.subplots(len(SPACES), 2, figsize=(max(9, 0.55 * len(groups) * 2 + 3), 6.5))
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
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Feature diversity per modality and domain ((T) = target)", fontsize=10)
    return _save(fig, path)


def plot_dependence(results: list[dict[str, Any]], labels: list[str], path: Path) -> Path | None:
    """Cross-modal dependence of the embeddings per modality pair and domain."""
    first = results[0]
    pairs = list(first["dependence"])
    if not pairs:
        return None
    plt = _pyplot()
    groups = _domain_groups(first, pairs)
    ticks = [f"{p}\n{_domain_label(first, d)}" for p, d in groups]
    metrics = {"cka": "linear CKA (debiased)", "cka_within_class": "CKA of class residuals",
               "cca_mean": "mean canonical correlation"}
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(9, 0.6 * len(groups) + 2), 9))
    for ax, (metric, title) in zip(axes, metrics.items()):
        series = {lab: [r["dependence"][p][d][metric] for p, d in groups]
                  for lab, r in zip(labels, results)}
        _bars(ax, ticks, series)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle("Cross-modal dependence of encoder embeddings within each domain "
                 "((T) = target)", fontsize=10)
    return _save(fig, path)


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
    """One run's lines in the four panels of :func:`plot_curves`."""
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


def plot_curves(results: list[dict[str, Any]], labels: list[str],
                records: list[list[dict[str, Any]]], path: Path) -> Path | None:
    """Training curves from ``records.jsonl``: accuracies, CE, MER L_spec, head accuracies."""
    if not any(records):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
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
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    return _save(fig, path)


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


def plot_bench_summary(per_key: dict[tuple[str, str], list[dict[str, Any]]],
                       path: Path) -> Path:
    """Headline numbers per (modalities, algorithm), mean ± std over diagnosed comparisons."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(BENCH_PANELS), figsize=(4.2 * len(BENCH_PANELS), 3.8))
    keys = sorted(per_key)
    for ax, (title, columns) in zip(axes, BENCH_PANELS.items()):
        width = 0.8 / len(keys)
        xs = np.arange(len(columns))
        for k, key in enumerate(keys):
            values = np.array([[fn(h) for fn in columns.values()] for h in per_key[key]])
            std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(len(columns))
            pos = xs + (k - (len(keys) - 1) / 2) * width
            ax.bar(pos, values.mean(axis=0), width, yerr=std, capsize=2, color=_color(k),
                   label=" ".join(key))
        ax.set_xticks(xs, list(columns), fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Diagnostics averaged over the diagnosed comparisons (mean ± std)", fontsize=10)
    return _save(fig, path)
