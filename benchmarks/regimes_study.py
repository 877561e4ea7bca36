"""The regime study of docs/regimes.md: does MER-DG help when the encoders start pretrained?

For each study part and each regime (encoders from scratch, pretrained alone on the sources
(``--init unimodal``), pretrained on an external corpus (``--init FILE``), with nothing frozen or
with every encoder block but the last frozen), every target domain:

- a bench: ERM, MERDG (official lambda = 3), SimMMDG, SimMMDG+MER;
- a sweep: MERDG with lambda chosen by leave-one-domain-out cross-validation on the sources
  (``merdg sweep --selection lodo``; the target is never used);

every run measuring each encoder alone at initialization and on the selected model
(``--encoder-probes``). Then ``report`` writes the tables (target accuracy, paired differences
with 95% t-intervals, the mechanism's probe accuracy and effective rank) and the figures. Every
step is resumable: run the same command again to continue (with more ``--seeds``, the runs of
the seeds already done are kept).

The parts (``--datasets``; docs/regimes.md sections 6 and 7):

- ``synthetic``: the built-in benchmark, 6 regimes; external = the shortcut-free
  ``synthetic-pretrain`` corpus;
- ``utd-mhad``: UTD-MHAD inertial+skeleton, subject-pair domains, scratch and unimodal regimes;
- ``utd-pre1234`` / ``utd-pre5678``: UTD-MHAD inertial+skeleton, encoders pretrained (``merdg
  pretrain``) on subjects 1-4 / 5-8, the other four subjects the domains (``where=subject:...``,
  ``domains=each``); regimes scratch, unimodal, external, external frozen;
- ``synthetic-shortcut``: the built-in benchmark with encoders pretrained on a corpus that
  carries a shortcut of its own (``shortcut_strength`` 0.9, the benchmark's); external regimes.

    /usr/bin/time -v python benchmarks/regimes_study.py run \\
        --out regimes-study --data-root DATA_DIR
    python benchmarks/regimes_study.py report --out regimes-study --figures docs/regimes
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merdg.datasets import build_dataset
from merdg.evaluation.statistics import aggregate, paired_difference
from merdg.experiments.launchers import LauncherOptions
from merdg.experiments.plan import ExperimentConfig
from merdg.experiments.results import chosen_runs, load_rows
from merdg.experiments.runner import run_experiment
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.pretraining import pretrain_encoders

BENCH = ["ERM", "MERDG", "SimMMDG", "SimMMDG+MER"]
LODO = "MERDG (lambda by LODO)"
REFERENCE = {"MERDG": "ERM", LODO: "ERM", "SimMMDG+MER": "SimMMDG"}
SMOKE_OPTIONS = {"samples_per_domain": 60, "n_classes": 3}
REGIMES = {  # name: (init, freeze); "external" is the corpus file
    "scratch": ("scratch", None),
    "scratch, frozen": ("scratch", "all-but-last"),
    "unimodal": ("unimodal", None),
    "unimodal, frozen": ("unimodal", "all-but-last"),
    "external": ("external", None),
    "external, frozen": ("external", "all-but-last"),
}


UTD_MODALITIES = ["inertial", "skeleton"]
SUBJECT_HALVES = {"utd-pre1234": ("s1,s2,s3,s4", "s5,s6,s7,s8"),
                  "utd-pre5678": ("s5,s6,s7,s8", "s1,s2,s3,s4")}  # part: (pretrain, domains)
HALF_REGIMES = ["scratch", "unimodal", "external", "external, frozen"]
CORPUS_SHORTCUT = 0.9  # the corpus's shortcut strength in "synthetic-shortcut" (the benchmark's)
# the encoder probes' recipe on the UTD-MHAD halves: the official one (25 epochs, lr 1e-3, batch
# 256) takes 2 steps per epoch on their 258 training samples and stays near chance
# (merdg.evaluators.encoder_probes; docs/regimes.md section 7)
SMALL_DATA_PROBES = {"probe_epochs": 100, "probe_lr": 1e-2, "probe_batch_size": 64}


def datasets(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per study part: run settings, modality set, regimes and how its external encoders are
    pretrained (``corpus``: dataset, options and epochs of :func:`external_encoders`)."""
    synthetic_corpus = {"dataset": "synthetic-pretrain", "options": {},
                        "epochs": args.corpus_epochs}
    out = {
        "synthetic": {"settings": {"dataset": "synthetic"}, "modalities": None,
                      "hparams": {}, "pretrain": {"pretrain_epochs": args.synthetic_pretrain},
                      "regimes": list(REGIMES), "corpus": synthetic_corpus},
        "utd-mhad": {"settings": {"dataset": "utd-mhad", "data_root": args.data_root},
                     "modalities": UTD_MODALITIES,
                     "hparams": {"epochs": args.utd_epochs},
                     "pretrain": {"pretrain_epochs": args.utd_pretrain},
                     "regimes": [r for r in REGIMES if not r.startswith("external")]},
        "synthetic-shortcut": {
            "settings": {"dataset": "synthetic"}, "modalities": None, "hparams": {},
            "pretrain": {"pretrain_epochs": args.synthetic_pretrain},
            "regimes": ["external", "external, frozen"],
            "corpus": {**synthetic_corpus,
                       "options": {"shortcut_strength": CORPUS_SHORTCUT}}},
    }
    for name, (pretrain_subjects, domain_subjects) in SUBJECT_HALVES.items():
        out[name] = {
            "settings": {"dataset": "utd-mhad", "data_root": args.data_root,
                         "dataset_options": {"domains": "each",
                                             "where": f"subject:{domain_subjects}"}},
            "modalities": UTD_MODALITIES, "hparams": {"epochs": args.utd_epochs},
            "pretrain": {"pretrain_epochs": args.utd_pretrain}, "regimes": HALF_REGIMES,
            "probes": SMALL_DATA_PROBES,
            "corpus": {"dataset": "utd-mhad", "root": args.data_root,
                       "modalities": UTD_MODALITIES, "epochs": args.utd_corpus_epochs,
                       "options": {"domains": "each",
                                   "where": f"subject:{pretrain_subjects}"}}}
    if args.smoke:  # a minute-long check of the whole pipeline, not a result
        for name in ("synthetic", "synthetic-shortcut"):
            out[name]["settings"]["dataset_options"] = SMOKE_OPTIONS
            out[name]["corpus"]["options"] = {**out[name]["corpus"]["options"],
                                              **SMOKE_OPTIONS, "corpus_domains": 2}
        for spec in out.values():
            spec["hparams"] = {**spec["hparams"], "epochs": 1}
            spec["pretrain"] = {"pretrain_epochs": 1}
            if "corpus" in spec:
                spec["corpus"]["epochs"] = 1
    for spec in out.values():
        if args.regimes:
            spec["regimes"] = [r for r in spec["regimes"] if r in args.regimes]
    return {k: v for k, v in out.items() if k in args.datasets}


def slug(regime: str) -> str:
    return regime.replace(", ", "-")


def external_encoders(root: Path, name: str, corpus: dict[str, Any]) -> Path:
    """The part's encoders pretrained on its external corpus: what ``merdg pretrain --dataset
    DATASET --dataset-option KEY=VALUE ... --epochs EPOCHS --out FILE`` writes (for UTD-MHAD
    with ``--modalities inertial skeleton``)."""
    path = root / name / "external_encoders.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        dataset = build_dataset(corpus["dataset"], corpus.get("root"), **corpus["options"])
        result = pretrain_encoders(dataset, path, modalities=corpus.get("modalities"),
                                   epochs=corpus["epochs"], dataset_options=corpus["options"])
        print(f"external encoders: {path}, selected {result.selected} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
    return path


def base_config(spec: dict[str, Any], regime: str, external: Path | None) -> RunConfig:
    init, freeze = REGIMES[regime]
    if init == "external":
        init = str(external)
    hparams = {**spec["hparams"], **(spec["pretrain"] if init == "unimodal" else {})}
    return RunConfig(**spec["settings"], init=init, freeze=freeze, hparams=hparams,
                     evaluations={"encoder_probes": spec.get("probes", {})}, split_seed=0)


def experiments(args: argparse.Namespace, phase: str) -> list[ExperimentConfig]:
    """The experiments of one phase: ``core`` (ERM, MERDG; ``--seeds``), ``lodo`` and
    ``simmmdg`` (``--secondary-seeds``)."""
    root = Path(args.out)
    seeds = args.seeds if phase == "core" else (args.secondary_seeds or args.seeds)
    out = []
    for name, spec in datasets(args).items():
        external = external_encoders(root, name, spec["corpus"]) if any(
            r.startswith("external") for r in spec["regimes"]) else None
        mods = [spec["modalities"]] if spec["modalities"] else None
        for regime in spec["regimes"]:
            base = base_config(spec, regime, external)
            where = root / name / slug(regime)
            if phase == "lodo":
                out.append(ExperimentConfig(base, str(where / "lodo"), algorithms=["MERDG"],
                                            modality_sets=mods, seeds=seeds,
                                            trials=args.trials, selection="lodo",
                                            layout="hashed"))
            else:
                algorithms = BENCH[:2] if phase == "core" else BENCH[2:]
                out.append(ExperimentConfig(base, str(where / "bench"), algorithms=algorithms,
                                            modality_sets=mods, seeds=seeds))
    return out


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    for phase in args.phases:
        for experiment in experiments(args, phase):
            t = time.perf_counter()
            result = run_experiment(experiment, LauncherOptions(workers=1), progress=False)
            print(f"{phase} {experiment.out_dir}: {result.status} "
                  f"({(time.perf_counter() - t) / 60:.1f} min)", flush=True)
    print(f"study: {(time.perf_counter() - start) / 60:.1f} min", flush=True)



# ---------------------------------------------------------------------------------------------
# Report


def bench_values(rows: list[dict], algorithm: str, key: str = "target_acc",
                 rule: str = "source_val") -> dict[tuple[str, int], float]:
    return {(r["target"], r["seed"]): r[key] for r in rows
            if r["algorithm"] == algorithm and r["selection"] == rule and key in r}


def lodo_values(root: Path) -> tuple[dict[tuple[str, int], float], dict[str, list[float]]]:
    """Reported runs of the LODO sweep: ``{(target, seed): acc}`` and the chosen lambda per
    target."""
    if not root.exists():
        return {}, {}
    values, lambdas = {}, defaultdict(list)
    for (_, _, _, _, target), (_, runs) in chosen_runs(load_rows(root), "source_val").items():
        for r in runs:
            values[(target, r["seed"])] = r["target_acc"]
            lam = RunDir(r["path"]).read_info()["hparams"]["mer_lambda"]
            if lam not in lambdas[target]:
                lambdas[target].append(lam)
    return values, dict(lambdas)


def mean_std(values: list[float]) -> str:
    s = aggregate(100 * v for v in values)
    return f"{s.mean:.2f} ± {s.std:.2f}" if s.n > 1 else f"{s.mean:.2f}"


def seed_std(values: dict[tuple[str, int], float]) -> str:
    """Mean over targets of the standard deviation over seeds (points): the spread that the
    training randomness alone gives."""
    by_target = defaultdict(list)
    for (target, _), v in values.items():
        by_target[target].append(100 * v)
    stds = [np.std(v, ddof=1) for v in by_target.values() if len(v) > 1]
    return f"{np.mean(stds):.2f}" if stds else ""


def difference_cells(d: Any, scale: float = 100) -> str:
    return (f"{scale * d.mean:+.2f} [{scale * d.t_low:+.2f}, {scale * d.t_high:+.2f}] "
            f"(n {d.n_pairs})")


def mechanism_rows(name: str, regime: str, rows: list[dict], numbers: dict
                   ) -> tuple[list[str], list[str]]:
    """Per modality: the long rows (each algorithm's probe accuracy and effective rank at
    initialization and on the selected model) and the paired rows (MER-DG minus ERM after
    training, on the same (target, seed) pairs, whose encoders started the same)."""
    long_rows, paired = [], []
    mods = sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("init_probe_acc/")})
    for m in mods:
        measured = {}
        for algo in BENCH:
            # the selected model's measurement (runs of earlier versions measured the last
            # epoch's, which their rows hold under the "last" rule)
            rule = "source_val" if bench_values(rows, algo, f"encoder_probe_acc/{m}") else "last"
            keys = [f"{c}/{m}" for c in ("init_probe_acc", "encoder_probe_acc", "init_erank",
                                         "encoder_erank")]
            vals = [bench_values(rows, algo, k, rule) for k in keys]
            if not vals[1]:
                continue
            measured[algo] = vals
            a0, a1, r0, r1 = (np.mean(list(v.values())) for v in vals)
            numbers[name].setdefault("mechanism", {})[(regime, algo, m)] = (a0, a1, r0, r1)
            long_rows.append(f"| {name} | {regime} | {algo} | {m} | {100 * a0:.1f} | "
                             f"{100 * a1:.1f} | {100 * (a1 - a0):+.1f} | {r0:.1f} | "
                             f"{r1:.1f} | {r1 - r0:+.1f} |")
        if "ERM" in measured and "MERDG" in measured:
            erm, mer = measured["ERM"], measured["MERDG"]
            same_start = all(abs(erm[0][k] - mer[0][k]) < 1e-9 for k in set(erm[0]) & set(mer[0]))
            probe = paired_difference(mer[1], erm[1], algorithm="MERDG", reference="ERM")
            rank = paired_difference(mer[3], erm[3], algorithm="MERDG", reference="ERM")
            numbers[name].setdefault("mechanism_paired", {})[(regime, m)] = (probe, rank)
            paired.append(
                f"| {name} | {regime} | {m} | {100 * np.mean(list(erm[0].values())):.1f} | "
                f"{100 * np.mean(list(erm[1].values())):.1f} | "
                f"{100 * np.mean(list(mer[1].values())):.1f} | {difference_cells(probe)} | "
                f"{np.mean(list(erm[2].values())):.1f} | {np.mean(list(erm[3].values())):.1f} | "
                f"{np.mean(list(mer[3].values())):.1f} | {difference_cells(rank, 1)} |"
                + ("" if same_start else " (starts differ)"))
    return long_rows, paired


def per_target_rows(name: str, regime: str, values: dict[str, dict]) -> list[str]:
    """MER-DG minus ERM per target, over seeds."""
    out = []
    targets = sorted({t for t, _ in values["MERDG"]} & {t for t, _ in values["ERM"]})
    for target in targets:
        mer = {k: v for k, v in values["MERDG"].items() if k[0] == target}
        erm = {k: v for k, v in values["ERM"].items() if k[0] == target}
        d = paired_difference(mer, erm, algorithm="MERDG", reference="ERM")
        out.append(f"| {name} | {regime} | {target} | {mean_std(list(erm.values()))} | "
                   f"{mean_std(list(mer.values()))} | {difference_cells(d)} |")
    return out


def study_tables(args: argparse.Namespace) -> tuple[str, dict]:
    """Markdown of the accuracy tables and the mechanism tables; the numbers for the plots."""
    root = Path(args.out)
    acc = ["| dataset | regime | algorithm | n | target acc. (%) | seed std | "
           "Δ vs reference (points) | 95% CI (t) | verdict |",
           "|---|---|---|---|---|---|---|---|---|"]
    per_target = ["| dataset | regime | target | ERM (%) | MERDG (%) | Δ [95% CI] (n) |",
                  "|---|---|---|---|---|---|"]
    mech = ["| dataset | regime | algorithm | modality | probe acc. at init (%) | after (%) | "
            "change | eff. rank at init | after | change |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    mech_paired = ["| dataset | regime | modality | probe at init (%) | after ERM | after MERDG "
                   "| Δ MERDG − ERM [95% CI] (n) | eff. rank at init | after ERM | after MERDG "
                   "| Δ [95% CI] (n) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    numbers: dict = defaultdict(dict)
    lambdas_text = []
    for name, spec in datasets(args).items():
        for regime in spec["regimes"]:
            where = root / name / slug(regime)
            rows = load_rows(where / "bench") if (where / "bench").exists() else []
            values = {a: bench_values(rows, a) for a in BENCH}
            values[LODO], lambdas = lodo_values(where / "lodo")
            if lambdas:
                lambdas_text.append(f"- {name}, {regime}: " + ", ".join(
                    f"{t}: {'/'.join(f'{x:.2g}' for x in v)}" for t, v in sorted(lambdas.items())))
            for algo in [*BENCH[:2], LODO, *BENCH[2:]]:
                if not values[algo]:
                    continue
                cells = [name, regime, algo, str(len(values[algo])),
                         mean_std(list(values[algo].values())), seed_std(values[algo])]
                reference = REFERENCE.get(algo)
                if reference and values[reference]:
                    d = paired_difference(values[algo], values[reference], algorithm=algo,
                                          reference=reference)
                    numbers[name][(regime, algo)] = d
                    cells += [f"{100 * d.mean:+.2f} vs {reference}",
                              f"[{100 * d.t_low:+.2f}, {100 * d.t_high:+.2f}]", d.verdict()]
                else:
                    cells += ["", "", ""]
                acc.append("| " + " | ".join(cells) + " |")
            if values["ERM"] and values["MERDG"]:
                per_target += per_target_rows(name, regime, values)
            long_rows, paired = mechanism_rows(name, regime, rows, numbers)
            mech += long_rows
            mech_paired += paired
    text = ["## Target accuracy", "",
            "Each run's epoch chosen on source validation; n = (target, seed) pairs; mean ± "
            "sample std over them; seed std = mean over targets of the std over seeds; Δ = mean "
            "paired difference against the reference algorithm on the same (target, seed) "
            "pairs, 95% paired t-interval (merdg.evaluation.statistics).", "", *acc, "",
            "Lambda chosen by leave-one-domain-out cross-validation, per target:", "",
            *lambdas_text, "", "## MER-DG minus ERM per target", "",
            "Mean ± std over seeds; Δ over the seeds of that target (points).", "",
            *per_target, "", "## Each encoder alone: at initialization and after fused "
            "training", "",
            "Linear probe on each encoder's embedding (fit on the sources' training split, "
            "epoch chosen on their validation split, accuracy on the target) and effective "
            "rank of the target embeddings; at initialization (after pretraining and freezing, "
            "before the first fused step) and on the selected model; mean over targets and "
            "seeds.", "", *mech, "", "## The mechanism: MER-DG minus ERM after training", "",
            "Per (target, seed) pair both runs start from the same encoders (the probe at "
            "initialization is the same); Δ = MER-DG minus ERM on the selected model, 95% "
            "paired t-interval (probe accuracy in points, effective rank in dimensions).", "",
            *mech_paired, ""]
    return "\n".join(text), numbers


def plot_mechanism(numbers: dict, name: str, regimes: list[str], path: Path) -> Path | None:
    """Probe accuracy and effective rank per modality and regime: at initialization, after
    ERM, after MERDG."""
    from merdg.plotting import matplotlib_available, pyplot

    mechanism = numbers.get(name, {}).get("mechanism", {})
    if not matplotlib_available() or not mechanism:
        return None
    plt = pyplot()
    modalities = sorted({m for (_, _, m) in mechanism})
    fig, axes = plt.subplots(2, len(modalities), figsize=(4.2 * len(modalities), 6.4),
                             layout="constrained", squeeze=False)
    x = np.arange(len(regimes))
    series = [("at initialization", "ERM", 0, "#9e9e9e"), ("after ERM", "ERM", 1, "#1f77b4"),
              ("after MER-DG", "MERDG", 1, "#d62728")]
    for col, m in enumerate(modalities):
        for row, (label, offset) in enumerate((("target probe acc. (%)", 0),
                                               ("effective rank", 2))):
            ax = axes[row][col]
            for k, (name_s, algo, when, color) in enumerate(series):
                vals = [mechanism.get((r, algo, m), (np.nan,) * 4)[offset + when] for r in regimes]
                vals = [100 * v if offset == 0 else v for v in vals]
                ax.bar(x + (k - 1) * 0.27, vals, 0.27, label=name_s, color=color)
            ax.set_xticks(x, regimes)
            ax.set_ylabel(label)
            ax.set_title(f"{m}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3)
    fig.suptitle(f"{name}: each encoder alone, before and after fused training")
    return saved_readable(fig, path)


def plot_differences(numbers: dict, specs: dict, path: Path) -> Path | None:
    """MER-DG minus its reference, with 95% t-intervals, per dataset and regime."""
    from merdg.plotting import matplotlib_available, pyplot

    if not matplotlib_available() or not numbers:
        return None
    plt = pyplot()
    names = [n for n in specs if any(isinstance(k, tuple) and len(k) == 2 for k in numbers[n])]
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2),
                             layout="constrained", squeeze=False)
    algos = [("MERDG", "#d62728"), (LODO, "#ff7f0e"), ("SimMMDG+MER", "#2ca02c")]
    for ax, name in zip(axes[0], names):
        regimes = specs[name]["regimes"]
        for k, (algo, color) in enumerate(algos):
            ys = np.arange(len(regimes)) + (k - 1) * 0.25
            labelled = False
            for y, regime in zip(ys, regimes):
                d = numbers[name].get((regime, algo))
                if d is None or np.isnan(d.t_low):
                    continue
                ax.errorbar(100 * d.mean, y, xerr=[[100 * (d.mean - d.t_low)],
                                                   [100 * (d.t_high - d.mean)]],
                            fmt="o", color=color, capsize=3,
                            label=None if labelled else f"{algo} − {REFERENCE[algo]}")
                labelled = True
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(np.arange(len(regimes)), regimes)
        ax.invert_yaxis()
        ax.set_xlabel("target accuracy difference (points), 95% CI")
        ax.set_title(name)
    by_label: dict[str, Any] = {}  # every comparison drawn in any panel, once
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(label, handle)
    fig.legend(list(by_label.values()), list(by_label), loc="outside lower center",
               ncols=min(3, len(by_label)))
    return saved_readable(fig, path)


def saved_readable(fig, path: Path) -> Path:
    """Lay the figure out, check that no text overlaps or is cut off (tests/figure_checks.py),
    and save it."""
    import sys

    from merdg.plotting import finish_figure, save_figure

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from figure_checks import text_problems

    finish_figure(fig)
    problems = text_problems(fig)
    if problems:
        raise RuntimeError(f"{path}: unreadable figure: " + "; ".join(problems))
    return save_figure(fig, path, finish=False)


def report(args: argparse.Namespace) -> None:
    text, numbers = study_tables(args)
    out = Path(args.out) / "study.md"
    out.write_text(text)
    print(text)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    specs = datasets(args)
    for name, spec in specs.items():  # the regimes that were run
        spec["regimes"] = [r for r in spec["regimes"]
                           if (Path(args.out) / name / slug(r)).exists()]
        path = plot_mechanism(numbers, name, spec["regimes"],
                              figures / f"{args.figure_prefix}mechanism_{name}.png")
        print(f"figure: {path}")
    path = plot_differences(numbers, specs, figures / f"{args.figure_prefix}differences.png")
    print(f"figure: {path}")
    json.dump({n: {f"{k[0]} | {k[1]}": v.as_dict() for k, v in d.items()
                   if isinstance(k, tuple)} for n, d in numbers.items()},
              open(Path(args.out) / "differences.json", "w"), indent=1)


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["run", "report"])
    p.add_argument("--out", required=True, help="study directory")
    p.add_argument("--data-root", help="UTD-MHAD release directory (DATA_DIR)")
    p.add_argument("--datasets", nargs="+", default=["synthetic", "utd-mhad"],
                   choices=["synthetic", "utd-mhad", "utd-pre1234", "utd-pre5678",
                            "synthetic-shortcut"], help="study parts (see above)")
    p.add_argument("--regimes", nargs="+", choices=list(REGIMES),
                   help="only these regimes of each part (default: all of the part's)")
    p.add_argument("--phases", nargs="+", default=["core", "lodo", "simmmdg"],
                   choices=["core", "lodo", "simmmdg"])
    p.add_argument("--seeds", type=int, default=1, help="seeds of ERM and MERDG (core)")
    p.add_argument("--secondary-seeds", type=int, help="seeds of the LODO sweeps and of "
                   "SimMMDG, SimMMDG+MER (default: --seeds)")
    p.add_argument("--trials", type=int, default=2, help="lambda trials besides lambda = 3")
    p.add_argument("--utd-epochs", type=int, default=20)
    p.add_argument("--utd-pretrain", type=int, default=10, help="unimodal pretraining epochs")
    p.add_argument("--synthetic-pretrain", type=int, default=15)
    p.add_argument("--corpus-epochs", type=int, default=15, help="external pretraining epochs")
    p.add_argument("--utd-corpus-epochs", type=int, default=20,
                   help="external pretraining epochs on the other half of the subjects")
    p.add_argument("--figures", default="docs/regimes")
    p.add_argument("--figure-prefix", default="",
                   help="prefix of the figures' file names (mechanism_<part>.png, "
                   "differences.png)")
    p.add_argument("--smoke", action="store_true", help="tiny data, 1 epoch: checks the "
                   "pipeline in a minute (not a result)")
    args = p.parse_args()
    if args.command == "run":
        run(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
