"""Every diagnostic number of one trained run, as a JSON-serializable dict.

Which samples each number uses (n per domain is recorded in the result):

- feature statistics (diversity, cross-modal dependence): every sample of each domain the run
  saw, i.e. a source domain's training and validation parts together, and the whole target
  domain. Both are passed through the model in eval mode; a dataset that augments its training
  part does so here as well (as the official feature extraction does);
- accuracies (fused, the model's unimodal heads, modality reliance): the sources' validation
  parts (never trained on) and the target;
- probes: fit on the sources' training parts, selected on their validation parts, reported on
  the target.

Stability: every feature statistic is also computed on two disjoint random halves of the
samples (``"half"``); the report shows how far the halves are from each other.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from merdg.diagnostics.features import LoadedRun, Outputs, extract
from merdg.evaluation import representation as metrics
from merdg.evaluation.probes import PROBES, LabeledFeatures, train_probe
from merdg.hparams import seed_hash

__all__ = ["DiagnoseOptions", "SPACES", "diagnose_run", "headline"]

SPACES = {
    "embedding": "encoder outputs, the fusion classifier's input",
    "projection": "projection-head outputs, what MER-DG regularizes in the official code",
}
ALL_SOURCES = "all sources"


@dataclass
class DiagnoseOptions:
    """Settings of a diagnosis.

    Attributes:
        probes: Probe kinds to train (keys of :data:`merdg.diagnostics.probes.PROBES`).
        probe_epochs: Epochs of every probe (official: 25).
        cca_components: Principal components per modality before canonical correlation.
        batch_draws: Random training-size batches over which L_spec at batch size is averaged.
        batch_size: Samples per forward pass.
        num_workers: DataLoader workers.
        seed: Seed of probes, half-sample splits and batch draws (None: the run's seed).
    """

    probes: list[str] = field(default_factory=lambda: ["linear", "mlp"])
    probe_epochs: int = 25
    cca_components: int = 10
    batch_draws: int = 20
    batch_size: int = 256
    num_workers: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown:
            raise ValueError(f"unknown probe kinds {unknown}; choose from {list(PROBES)}")
        counts = {"probe_epochs (--probe-epochs)": (self.probe_epochs, 1),
                  "cca_components": (self.cca_components, 1),
                  "batch_draws": (self.batch_draws, 1),
                  "batch_size (--batch-size)": (self.batch_size, 1),
                  "num_workers (--num-workers)": (self.num_workers, 0),
                  "seed": (0 if self.seed is None else self.seed, 0)}
        for name, (value, low) in counts.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class DomainOutputs:
    """Model outputs per domain: ``stats`` (all samples, features only) and ``eval`` (held-out
    samples, with logits); ``train`` for sources (the probes' training set)."""

    role: str
    stats: Outputs
    eval: Outputs
    train: Outputs | None = None


def _concat(a: Outputs, b: Outputs) -> Outputs:
    def cat(x: dict[str, Tensor], y: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: torch.cat([x[k], y[k]]) for k in x if k in y}

    return Outputs(torch.cat([a.y, b.y]), cat(a.embeddings, b.embeddings),
                   cat(a.projections, b.projections), {}, {})


def collect_outputs(run: LoadedRun, options: DiagnoseOptions) -> dict[str, DomainOutputs]:
    """Model outputs for every source (train + val parts) and the target (whole domain)."""
    kw = {"batch_size": options.batch_size, "num_workers": options.num_workers}
    domains = {}
    for d in run.sources:
        train = extract(run, run.split(d, "train"), with_logits=False, **kw)
        val = extract(run, run.split(d, "val"), **kw)
        domains[d] = DomainOutputs("source", _concat(train, val), val, train)
    target = extract(run, run.split(run.target, "test"), **kw)
    domains[run.target] = DomainOutputs("target", target, target)
    return domains


# ---------------------------------------------------------------------------------------------
# Accuracy and modality reliance


def _acc(logits: Tensor, y: Tensor) -> float:
    """Top-1 accuracy; one output (a regression model, ``y`` its targets' sign classes):
    Acc-2, output > 0 against a positive target."""
    if logits.shape[1] == 1:
        return float(((logits[:, 0] > 0) == (y == 2)).float().mean())
    return float((logits.argmax(1) == y).float().mean())


def _accuracies(out: Outputs) -> dict[str, Any]:
    return {"n": len(out), "fused": _acc(out.logits["all"], out.y),
            "heads": {m: _acc(v, out.y) for m, v in out.head_logits.items()},
            "variants": {k: _acc(v, out.y) for k, v in out.logits.items()}}


def _pooled(parts: list[Outputs]) -> Outputs:
    """Labels and logits of several parts in one (features are not needed for accuracy)."""
    def cat(key: str) -> dict[str, Tensor]:
        return {k: torch.cat([getattr(p, key)[k] for p in parts]) for k in getattr(parts[0], key)}

    return Outputs(torch.cat([p.y for p in parts]), {}, {}, cat("logits"), cat("head_logits"))


def accuracy_section(domains: dict[str, DomainOutputs]) -> dict[str, Any]:
    """Fused, head and zeroed-modality accuracies per domain (sources: validation parts) and
    pooled over the sources."""
    out = {d: {"role": o.role, **_accuracies(o.eval)} for d, o in domains.items()}
    sources = [o.eval for o in domains.values() if o.role == "source"]
    out[ALL_SOURCES] = {"role": "sources pooled", **_accuracies(_pooled(sources))}
    return out


# ---------------------------------------------------------------------------------------------
# Feature diversity


def _halves(n: int, seed: int) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n // 2], perm[n // 2: 2 * (n // 2)]


def _guarded(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a metric; a failure names the run, space, modality and domain it concerns."""
    try:
        return fn(*args)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from err


def diversity(z: Tensor, seed: int) -> dict[str, Any]:
    """Diversity statistics of one modality's features on one domain, with half-sample values."""
    std = metrics.feature_std(z)
    n, dim = z.shape
    result = {
        "n": n, "dim": dim, "std": std.tolist(), "std_mean": float(std.mean()),
        "std_min": float(std.min()),
        "dead_fraction": float((std < 0.01 * std.max()).float().mean()) if std.max() > 0 else 1.0,
        "effective_rank": metrics.effective_rank(z),
        "spectral_term": metrics.spectral_term(z),
        "spectral_floor": metrics.spectral_floor(n, dim),
        "marginal_term": metrics.marginal_term(z),
    }
    a, b = _halves(n, seed)
    result["half"] = {"n": len(a),
                      "effective_rank": [metrics.effective_rank(z[i]) for i in (a, b)],
                      "spectral_term": [metrics.spectral_term(z[i]) for i in (a, b)],
                      "std_mean": [float(metrics.feature_std(z[i]).mean()) for i in (a, b)]}
    return result


def _space(out: Outputs, space: str) -> dict[str, Tensor]:
    return out.embeddings if space == "embedding" else out.projections


def diversity_section(run: LoadedRun, domains: dict[str, DomainOutputs],
                      seed: int) -> dict[str, Any]:
    """``{space: {modality: {domain: diversity(...)}}}``."""
    return {space: {m: {d: _guarded(f"{run.path} {space} {m} {d}", diversity,
                                    _space(o.stats, space)[m], seed_hash("half", seed, d))
                        for d, o in domains.items()}
                    for m in run.modalities}
            for space in SPACES}


def batch_spectral(train: dict[str, Tensor], batch_size: int, draws: int,
                   seed: int) -> dict[str, Any]:
    """L_spec on training-size batches drawn like the balanced sampler (equal share per source).

    Args:
        train: ``{source domain: (n_d, D) features of its training part}``.
        batch_size: The run's global batch size.
        draws: Number of random batches.
        seed: Seed of the draws.
    """
    per_domain = max(batch_size // len(train), 1)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(draws):
        rows = [z[torch.randperm(len(z), generator=generator)[:per_domain]]
                for z in train.values()]
        values.append(metrics.spectral_term(torch.cat(rows)))
    n = sum(min(per_domain, len(z)) for z in train.values())
    dim = next(iter(train.values())).shape[1]
    return {"batch_size": n, "draws": draws, "mean": float(np.mean(values)),
            "std": float(np.std(values)), "floor": metrics.spectral_floor(n, dim)}


def batch_spectral_section(run: LoadedRun, domains: dict[str, DomainOutputs],
                           options: DiagnoseOptions, seed: int) -> dict[str, Any]:
    """``{space: {modality: batch_spectral(...)}}`` over the sources' training parts."""
    batch_size = int(run.info["hparams"]["batch_size"])
    sources = {d: o for d, o in domains.items() if o.role == "source"}
    return {space: {m: batch_spectral({d: _space(o.train, space)[m] for d, o in sources.items()},
                                      batch_size, options.batch_draws, seed_hash("batch", seed, m))
                    for m in run.modalities}
            for space in SPACES}


# ---------------------------------------------------------------------------------------------
# Cross-modal dependence


def dependence(x: Tensor, z: Tensor, y: Tensor, components: int, seed: int) -> dict[str, Any]:
    """CKA (debiased and plain), class-residual CKA and canonical correlations of two modalities'
    features of the same samples, with half-sample values."""
    cca = metrics.canonical_correlations(x, z, components)
    result = {
        "n": len(y), "cka": metrics.linear_cka(x, z), "cka_biased": metrics.linear_cka(x, z, False),
        "cka_within_class": metrics.linear_cka(metrics.remove_class_means(x, y),
                                               metrics.remove_class_means(z, y)),
        "cca": cca.tolist(), "cca_mean": float(cca.mean()) if len(cca) else 0.0,
        "cca_components": components,
    }
    a, b = _halves(len(y), seed)
    result["half"] = {
        "n": len(a), "cka": [metrics.linear_cka(x[i], z[i]) for i in (a, b)],
        "cca_mean": [float(metrics.canonical_correlations(x[i], z[i], components).mean())
                     for i in (a, b)]}
    return result


def modality_pairs(modalities: list[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(sorted(modalities), 2))


def dependence_section(run: LoadedRun, domains: dict[str, DomainOutputs],
                       options: DiagnoseOptions, seed: int) -> dict[str, Any]:
    """``{"a~b": {domain: dependence(...)}}`` on the encoder embeddings."""
    out = {}
    for a, b in modality_pairs(run.modalities):
        out[f"{a}~{b}"] = {
            d: _guarded(f"{run.path} embeddings {a}~{b} {d}", dependence, o.stats.embeddings[a],
                        o.stats.embeddings[b], o.stats.y, options.cca_components,
                        seed_hash("half", seed, d))
            for d, o in domains.items()}
    return out


# ---------------------------------------------------------------------------------------------
# Probes


def _probe_sets(domains: dict[str, DomainOutputs], modality: str | None) -> list[LabeledFeatures]:
    """(train, val, test) features of one modality, or of all modalities concatenated."""
    def feats(out: Outputs) -> Tensor:
        if modality is not None:
            return out.embeddings[modality]
        return torch.cat([out.embeddings[m] for m in sorted(out.embeddings)], dim=1)

    sources = [o for o in domains.values() if o.role == "source"]
    target = next(o for o in domains.values() if o.role == "target")
    train = LabeledFeatures(torch.cat([feats(o.train) for o in sources]),
                            torch.cat([o.train.y for o in sources]))
    val = LabeledFeatures(torch.cat([feats(o.eval) for o in sources]),
                          torch.cat([o.eval.y for o in sources]))
    return [train, val, LabeledFeatures(feats(target.eval), target.eval.y)]


def probe_section(run: LoadedRun, domains: dict[str, DomainOutputs], options: DiagnoseOptions,
                  seed: int) -> dict[str, Any]:
    """``{kind: {modality or "concat": train_probe(...)}}`` on frozen encoder embeddings."""
    keys: list[str | None] = list(run.modalities) + ([None] if len(run.modalities) > 1 else [])
    out: dict[str, Any] = {}
    for kind in options.probes:
        config = PROBES[kind]
        config = type(config)(**{**asdict(config), "epochs": options.probe_epochs})
        out[kind] = {}
        for m in keys:
            sets = _probe_sets(domains, m)
            out[kind][m or "concat"] = train_probe(*sets, run.dataset.num_classes, config,
                                                   seed_hash("probe", seed, kind, m))
    return out


# ---------------------------------------------------------------------------------------------
# One run


def run_summary(run: LoadedRun) -> dict[str, Any]:
    cfg = run.config
    return {"path": str(run.path), "algorithm": cfg["algorithm"], "dataset": cfg["dataset"],
            "dataset_options": cfg["dataset_options"], "target": run.target,
            "sources": run.sources, "modalities": run.modalities, "seed": cfg["seed"],
            "num_classes": run.dataset.num_classes,
            "hparams": run.info["hparams"], "epochs_trained": len(run.records)}


def diagnose_run(run: LoadedRun, options: DiagnoseOptions | None = None) -> dict[str, Any]:
    """All diagnostics of one loaded run (see the module docstring for the samples used)."""
    options = options or DiagnoseOptions()
    seed = int(run.config["seed"]) if options.seed is None else options.seed
    timings = {}
    start = time.perf_counter()
    domains = collect_outputs(run, options)
    timings["forward"] = time.perf_counter() - start
    result: dict[str, Any] = {"run": run_summary(run), "options": asdict(options),
                              "samples": {d: {"role": o.role, "stats": len(o.stats),
                                              "eval": len(o.eval)} for d, o in domains.items()}}
    sections = {
        "accuracy": lambda: accuracy_section(domains),
        "diversity": lambda: diversity_section(run, domains, seed),
        "training_batch": lambda: batch_spectral_section(run, domains, options, seed),
        "dependence": lambda: dependence_section(run, domains, options, seed),
        "probes": lambda: probe_section(run, domains, options, seed),
    }
    for name, compute in sections.items():
        start = time.perf_counter()
        result[name] = compute()
        timings[name] = time.perf_counter() - start
    result["time_s"] = timings
    result["headline"] = headline(result)
    return result


# ---------------------------------------------------------------------------------------------
# Headline numbers


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def _source_target_mean(per_key: dict[str, dict[str, dict[str, Any]]], metric: str,
                        sources: list[str], target: str) -> dict[str, float]:
    """Mean of ``metric`` over keys (modalities or pairs) and source domains, and on target."""
    return {"sources": _mean(v[d][metric] for v in per_key.values() for d in sources),
            "target": _mean(v[target][metric] for v in per_key.values())}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """A few numbers that summarize a run, each averaged over modalities (or modality pairs)."""
    sources, target = result["run"]["sources"], result["run"]["target"]
    acc = result["accuracy"]
    mods = result["run"]["modalities"]
    emb = result["diversity"]["embedding"]
    out = {
        "source_val_acc": acc[ALL_SOURCES]["fused"], "target_acc": acc[target]["fused"],
        "head_target_acc": _mean(acc[target]["heads"].values()),
        "reliance_drop_target": _mean(acc[target]["fused"] - acc[target]["variants"][f"without {m}"]
                                      for m in mods),
        "effective_rank": _source_target_mean(emb, "effective_rank", sources, target),
        "spectral_term": _source_target_mean(emb, "spectral_term", sources, target),
        "batch_spectral_gap": {space: _mean(v["mean"] - v["floor"] for v in per_m.values())
                               for space, per_m in result["training_batch"].items()},
    }
    if result["dependence"]:
        for metric in ("cka", "cka_within_class", "cca_mean"):
            out[metric] = _source_target_mean(result["dependence"], metric, sources, target)
    for kind, per_m in result["probes"].items():
        out[f"{kind}_probe_target_acc"] = _mean(per_m[m]["selected"]["test_acc"] for m in mods)
    return out
