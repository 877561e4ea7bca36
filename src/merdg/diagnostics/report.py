"""The markdown report of a diagnosis (numbers from the result dicts, figures linked)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from merdg.diagnostics.analysis import ALL_SOURCES, SPACES

__all__ = ["markdown_report", "run_labels"]


def run_labels(results: Sequence[dict[str, Any]]) -> list[str]:
    """Short unique names of the compared runs (the algorithm, then seed or index if needed)."""
    names = [r["run"]["algorithm"] for r in results]
    if len(set(names)) == len(names):
        return names
    names = [f"{r['run']['algorithm']} s{r['run']['seed']}" for r in results]
    if len(set(names)) == len(names):
        return names
    return [f"{n} #{k + 1}" for k, n in enumerate(names)]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _num(x: float, digits: int = 3) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _domain(result: dict[str, Any], d: str) -> str:
    return f"{d} (target)" if d == result["run"]["target"] else d


def _header(results: list[dict[str, Any]], labels: list[str]) -> list[str]:
    run = results[0]["run"]
    lines = [f"# merdg diagnostics: {run['dataset']}, target {run['target']}", "",
             f"Sources {', '.join(run['sources'])}; target {run['target']}; modalities "
             f"{', '.join(run['modalities'])}; {run['num_classes']} classes.", ""]
    rows = [[lab, r["run"]["algorithm"], r["run"]["seed"], r["run"]["epochs_trained"],
             f"`{r['run']['path']}`"] for lab, r in zip(labels, results)]
    lines += _table(["run", "algorithm", "seed", "epochs", "directory"], rows)
    samples = results[0]["samples"]
    per_domain = ", ".join(f"{_domain(results[0], d)}: {s['stats']} ({s['eval']} held out)"
                           if s["role"] == "source" else f"{_domain(results[0], d)}: {s['stats']}"
                           for d, s in samples.items())
    lines += ["The model is each run's `model.pt`: the weights of the epoch source validation "
              "selects, the epoch the run's tables report (not necessarily the last).", "",
              f"Samples per domain: {per_domain}. Feature statistics use all of them; "
              "accuracies use the held-out part of each source and the whole target.", ""]
    return lines


HEADLINE_ROWS = [
    ("fused accuracy, source val (%)", lambda h: _pct(h["source_val_acc"])),
    ("fused accuracy, target (%)", lambda h: _pct(h["target_acc"])),
    ("unimodal heads, target (%)", lambda h: _pct(h["head_target_acc"])),
    ("linear probes, target (%)", lambda h: _pct(h.get("linear_probe_target_acc", np.nan))),
    ("MLP probes, target (%)", lambda h: _pct(h.get("mlp_probe_target_acc", np.nan))),
    ("drop when one modality is zeroed, target (pts)", lambda h: _pct(h["reliance_drop_target"])),
    ("embedding effective rank, sources / target",
     lambda h: f"{h['effective_rank']['sources']:.1f} / {h['effective_rank']['target']:.1f}"),
    ("embedding L_spec, sources / target",
     lambda h: f"{h['spectral_term']['sources']:.3f} / {h['spectral_term']['target']:.3f}"),
    ("cross-modal CKA, sources / target",
     lambda h: f"{h['cka']['sources']:.3f} / {h['cka']['target']:.3f}" if "cka" in h else "-"),
    ("CKA of class residuals, sources / target",
     lambda h: (f"{h['cka_within_class']['sources']:.3f} / "
                f"{h['cka_within_class']['target']:.3f}") if "cka" in h else "-"),
    ("L_spec above its floor at the training batch size, projection",
     lambda h: _num(h["batch_spectral_gap"]["projection"])),
]


def _summary(results: list[dict[str, Any]], labels: list[str]) -> list[str]:
    rows = [[name, *[fmt(r["headline"]) for r in results]] for name, fmt in HEADLINE_ROWS]
    return (["## Summary", "", "Averages over modalities (or modality pairs) and over source "
             "domains; sections below give every value.", ""]
            + _table(["", *labels], rows))


def _accuracy(results: list[dict[str, Any]], labels: list[str]) -> list[str]:
    target = results[0]["run"]["target"]
    variants = list(results[0]["accuracy"][target]["variants"])
    rows = []
    for lab, r in zip(labels, results):
        for d in (ALL_SOURCES, target):
            acc = r["accuracy"][d]
            rows.append([lab, "source val (pooled)" if d == ALL_SOURCES else f"{d} (target)",
                         *[_pct(acc["variants"][v]) for v in variants]])
    return (["## 1. How much the fused prediction relies on each modality", "",
             "Fused accuracy (%) when the listed modalities' embeddings are replaced by zeros "
             "before the fusion classifier (`Algorithm.evaluate(x, zero=...)`). A large drop "
             "for one modality means the fusion depends on it.", ""]
            + _table(["run", "domain", *variants], rows)
            + ["![reliance](reliance.png)", ""])


def _probe_cell(probe: dict[str, Any]) -> str:
    sel, oracle = probe["selected"], probe["oracle"]
    return f"{_pct(sel['test_acc'])} ({_pct(sel['val_acc'])}; oracle {_pct(oracle['test_acc'])})"


def _unimodal(results: list[dict[str, Any]], labels: list[str]) -> list[str]:
    target = results[0]["run"]["target"]
    kinds = list(results[0]["probes"])
    keys = list(results[0]["probes"][kinds[0]]) if kinds else results[0]["run"]["modalities"]
    rows = []
    for lab, r in zip(labels, results):
        for k in keys:
            heads = r["accuracy"]
            head = (f"{_pct(heads[target]['heads'][k])} ({_pct(heads[ALL_SOURCES]['heads'][k])})"
                    if k in heads[target]["heads"] else "-")
            rows.append([lab, k, head, *[_probe_cell(r["probes"][kind][k]) for kind in kinds]])
    epochs = results[0]["options"]["probe_epochs"]
    return (["## 2. Unimodal generalization", "",
             "Target accuracy (%) with source-validation accuracy in parentheses. *Head*: the "
             "model's own linear head on each detached embedding, trained along with the model. "
             f"*Probes*: trained for {epochs} epochs on the frozen embeddings of the sources' "
             "training parts, reported at the epoch with the best source-validation accuracy; "
             "*oracle* is the best target accuracy over epochs, the official release's "
             "selection, shown for comparison only. `concat` probes all embeddings "
             "concatenated.", ""]
            + _table(["run", "features", "head", *[f"{k} probe" for k in kinds]], rows)
            + ["![unimodal](unimodal.png)", ""])


def _diversity(results: list[dict[str, Any]], labels: list[str]) -> list[str]:
    first = results[0]
    domains = list(first["samples"])
    lines = ["## 3. Feature diversity", "",
             "Effective rank: exp of the entropy of the normalized covariance eigenvalues "
             "(between 1 and D). L_spec: MER-DG's spectral term -logdet(corr + 1e-4 I)/D, "
             "computed by `merdg.losses.mer` on all samples of the domain (0 for uncorrelated "
             "features; it rises as features become correlated). Mean std: per-dimension "
             "standard deviation averaged over dimensions; dead: share of dimensions with less "
             "than 1% of the largest dimension's std.", ""]
    for space, what in SPACES.items():
        dim = first["diversity"][space][first["run"]["modalities"][0]][domains[0]]["dim"]
        lines += [f"**{space}s** ({what}; D = {dim}): effective rank / L_spec / mean std / dead",
                  ""]
        rows = []
        for m in first["run"]["modalities"]:
            for d in domains:
                cells = []
                for r in results:
                    v = r["diversity"][space][m][d]
                    cells.append(f"{v['effective_rank']:.1f} / {v['spectral_term']:.3f} / "
                                 f"{v['std_mean']:.3g} / {100 * v['dead_fraction']:.0f}%")
                rows.append([m, _domain(first, d), *cells])
        lines += _table(["modality", "domain", *labels], rows)
    return lines + _batch_table(results, labels) + ["![diversity](diversity.png)", ""]


def _batch_table(results: list[dict[str, Any]], labels: list[str]) -> list[str]:
    first = results[0]
    rows = []
    for space in SPACES:
        for m in first["run"]["modalities"]:
            floor = first["training_batch"][space][m]["floor"]
            cells = [f"{v['mean']:.3f} ± {v['std']:.3f} (+{v['mean'] - v['floor']:.3f})"
                     for v in (r["training_batch"][space][m] for r in results)]
            rows.append([space, m, f"{floor:.3f}", *cells])
    info = first["training_batch"]["projection"][first["run"]["modalities"][0]]
    return ([f"**L_spec at the training batch size** ({info['batch_size']} samples, balanced "
             f"over the sources, mean ± std over {info['draws']} draws; in parentheses the "
             "distance to the floor, the smallest value possible at that batch size). When the "
             "batch is smaller than D, the floor is far above 0 and MER-DG's spectral gradient "
             "can only act on the batch's few non-null directions.", ""]
            + _table(["space", "modality", "floor", *labels], rows))


def _dependence(results: list[dict[str, Any]], labels: list[str]) -> list[str]:
    first = results[0]
    if not first["dependence"]:
        return ["## 4. Cross-modal dependence", "", "Only one modality: nothing to compare.", ""]
    k = first["options"]["cca_components"]
    rows = []
    for pair, per_domain in first["dependence"].items():
        for d in per_domain:
            cells = [f"{v['cka']:.3f} / {v['cka_within_class']:.3f} / {v['cca_mean']:.3f}"
                     for v in (r["dependence"][pair][d] for r in results)]
            rows.append([pair, _domain(first, d), *cells])
    return (["## 4. Cross-modal dependence", "",
             "How strongly two modalities' embeddings co-vary over the samples of one domain: "
             "debiased linear CKA (0 for independent features, 1 for features equal up to a "
             "rotation and scale) / CKA after subtracting each class's mean (co-variation "
             f"beyond the shared label) / mean canonical correlation of the top {k} principal "
             "components of each side. Fusion overfitting predicts strong dependence on the "
             "sources that weakens on the target.", ""]
            + _table(["pair", "domain", *labels], rows)
            + ["![dependence](dependence.png)", ""])


def _estimates(results: list[dict[str, Any]]) -> dict[str, list[tuple[float, float, float]]]:
    """``{statistic: [(full-sample value, half A, half B), ...]}`` over every run, space,
    modality (pair) and domain."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for r in results:
        for space in SPACES:
            for per_d in r["diversity"][space].values():
                for v in per_d.values():
                    for metric in ("effective_rank", "spectral_term"):
                        out.setdefault(f"{space} {metric}", []).append((v[metric],
                                                                        *v["half"][metric]))
        for per_d in r["dependence"].values():
            for v in per_d.values():
                for metric in ("cka", "cca_mean"):
                    out.setdefault(f"embedding {metric}", []).append((v[metric],
                                                                      *v["half"][metric]))
    return out


def _stability(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for metric, values in _estimates(results).items():
        full, a, b = (np.array(col) for col in zip(*values))
        spread, shift = np.abs(a - b), full - (a + b) / 2
        rows.append([metric, f"{full.min():.3f} .. {full.max():.3f}", f"{np.median(spread):.3f}",
                     f"{spread.max():.3f}", f"{np.median(shift):+.3f}"])
    sizes = sorted({s["stats"] for s in results[0]["samples"].values()})
    return (["## 5. Stability of the estimates", "",
             f"Each statistic is computed on all samples of a domain (n = "
             f"{', '.join(map(str, sizes))}) and on two disjoint random halves (A, B). Over every "
             "run, space, modality (pair) and domain: the range of the full-sample values, how "
             "far the halves are from each other (sampling noise at n/2; the full-sample noise "
             "is smaller), and the median of full minus the halves' mean (the drift from "
             "doubling n: effective rank and L_spec depend on n when n is not much larger than "
             "D, so compare them at equal n). Differences between runs or domains much larger "
             "than the half-vs-half gap are not sampling noise.", ""]
            + _table(["statistic", "range (full sample)", "median gap A-B", "max gap A-B",
                      "median full - halves"], rows))


def markdown_report(results: list[dict[str, Any]], labels: list[str],
                    figures: dict[str, Any]) -> str:
    """The report text; figure links are dropped for figures that were not drawn."""
    lines = (_header(results, labels) + _summary(results, labels) + _accuracy(results, labels)
             + _unimodal(results, labels) + _diversity(results, labels)
             + _dependence(results, labels) + _stability(results))
    if "curves" in figures:
        lines += ["## 6. Training curves", "", "From each run's `records.jsonl` (per epoch).", "",
                  "![curves](curves.png)", ""]
    lines += ["Every number is in `diagnostics.json`. See `docs/diagnostics.md` for the "
              "definitions and references.", ""]
    text = "\n".join(lines)
    for name in ("reliance", "unimodal", "diversity", "dependence"):
        if name not in figures:
            text = text.replace(f"![{name}]({name}.png)\n", "")
    return text
