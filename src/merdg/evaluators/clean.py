"""Clean accuracy after every epoch: what the epoch-selection rules read.

After every epoch the model is evaluated on each source domain's validation part and on the
target: top-1 accuracy, mean cross-entropy and the accuracy of each modality's probe (the
linear heads trained along with the model on detached embeddings). Source validation is pooled
over the domains (sample-weighted) and kept per domain. The selection rules
(:mod:`merdg.run.selection`) choose a run's reported epoch from these numbers: source
validation (``val_acc``), the target (``oracle``, labelled) or the last epoch.

An epoch record holds ``{"val": {...}, "target": {...}}`` (:meth:`CleanAccuracy.measure_epoch`);
its row columns are :attr:`CleanAccuracy.columns`. The report shows source-validation and
probe accuracies and flags encoders whose probe is within noise of chance
(:mod:`merdg.evaluation.chance`).

**Regression tasks** (MOSI / MOSEI / CH-SIMS): ``acc`` is Acc-2 and ``loss`` the L1 (MAE), so
the selection rules choose on source-validation Acc-2 (MMDG-Bench's MMSA scripts and its
search, whose ties go to the lower validation L1 loss, as :func:`merdg.experiments.search
.choose_trial`), and the records add ``mae``, ``f1``, ``acc7``, ``acc5`` and ``corr``
(:mod:`merdg.evaluation.regression`; pooled over the source domains for validation). Their
columns (:attr:`CleanAccuracy.REGRESSION_COLUMNS`) are in every row, table, paired comparison
and report of a regression run; the probes predict the target's sign class.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from merdg.evaluation.regression import regression_metrics
from merdg.evaluators.base import EPOCH, EVALUATORS, Column, Evaluator, ResultView
from merdg.evaluators.encoder_probes import chance_probes
from merdg.evaluators.predictions import Predictions, predict

__all__ = ["ACC2_WORDS", "CleanAccuracy", "evaluate", "merge_splits", "near_chance_lines",
           "regression_entries", "split_metrics"]

ACC2_WORDS = "target Acc-2 (prediction > 0 vs label > 0)"
"""What the ``target_acc`` column of a regression run is, in words (table titles)."""
REGRESSION_ENTRIES = ("mae", "f1", "acc7", "acc5", "corr")  # record entries beyond acc (Acc-2)


def regression_entries(outputs: Predictions) -> dict[str, Any]:
    """A regression split's ``mae``, ``f1``, ``acc7``, ``acc5`` and ``corr``
    (:func:`merdg.evaluation.regression.regression_metrics`)."""
    metrics = regression_metrics(outputs.logits[:, 0], outputs.targets)
    return {k: metrics[k] for k in REGRESSION_ENTRIES}


def split_metrics(outputs: Predictions) -> dict[str, Any]:
    """Top-1 accuracy, mean CE and per-modality probe accuracies over the known-class samples
    (``n``; ``n_unknown`` too when the split holds unknown-class samples).

    Raises:
        ValueError: The split has no (known-class) sample.
    """
    known = outputs.known
    n = int(known.sum())
    acc = outputs.accuracy()  # raises on an empty split
    y = outputs.labels[known]
    result = {"acc": acc, "loss": outputs.loss_sum / n, "n": n,
              "probe_acc": {m: int((p[known] == y).sum()) / n
                            for m, p in sorted(outputs.probe_predictions.items())}}
    if n < len(known):
        result["n_unknown"] = int(len(known) - n)
    if outputs.regression:
        result.update(regression_entries(outputs))
    return result


def evaluate(algorithm: Any, data: Any, device: Any, batch_size: int = 256,
             num_workers: int = 0, zero: Sequence[str] = (),
             translate: bool = False) -> dict[str, Any]:
    """:func:`split_metrics` of one split (:func:`~merdg.evaluators.predictions.predict`:
    modalities in ``zero`` zero-filled, or imputed with ``translate``)."""
    return split_metrics(predict(algorithm, data, device, batch_size, num_workers, zero,
                                 translate))


def merge_splits(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per-domain :func:`split_metrics` pooled into one (sample-weighted), keeping the
    per-domain accuracies."""
    n = sum(p["n"] for p in parts.values())
    return {
        "acc": sum(p["acc"] * p["n"] for p in parts.values()) / n,
        "loss": sum(p["loss"] * p["n"] for p in parts.values()) / n,
        "n": n,
        "probe_acc": {m: sum(p["probe_acc"][m] * p["n"] for p in parts.values()) / n
                      for m in next(iter(parts.values()))["probe_acc"]},
        "per_domain": {d: p["acc"] for d, p in parts.items()},
    }


@EVALUATORS.register("clean")
class CleanAccuracy(Evaluator):
    """Source-validation and target accuracy, loss and probe accuracy after every epoch."""

    name = "clean"
    description = ("source-validation and target accuracy, loss and probe accuracy after every "
                   "epoch (the selection rules read them)")
    times = frozenset({EPOCH})
    always = True
    VAL_ACC = Column("val_acc", "source-val acc")
    TARGET_ACC = Column("target_acc", "target acc")
    TARGET_PROBE = Column("target_probe_acc", "probe", family=True)
    VAL_PROBE = Column("val_probe_acc", "source-val probe", family=True)
    REGRESSION_COLUMNS = (  # of regression runs; target_acc and val_acc are Acc-2 there
        Column("target_mae", "target MAE", "lower", False),
        Column("target_f1", "target F1"), Column("target_acc7", "target Acc-7"),
        Column("target_acc5", "target Acc-5"), Column("target_corr", "target Corr", percent=False),
        Column("val_mae", "source-val MAE", "lower", False), Column("val_f1", "source-val F1"),
        Column("val_acc7", "source-val Acc-7"), Column("val_acc5", "source-val Acc-5"),
        Column("val_corr", "source-val Corr", percent=False))
    columns = (VAL_ACC, TARGET_ACC, Column("val_loss", "source-val loss", "lower", False),
               Column("val_n", "source-val samples", None, False), TARGET_PROBE, VAL_PROBE,
               *REGRESSION_COLUMNS)

    def measure_epoch(self, context: Any) -> dict[str, Any]:
        """``{"val": pooled source validation with ``per_domain``, "target": ...}``; the
        source domains are evaluated in order, then the target (the passes' order is part of
        the run's random stream)."""
        parts = context.val_predictions()
        val = merge_splits({d: split_metrics(p) for d, p in parts.items()})
        if next(iter(parts.values())).regression:  # F1 and Corr do not average: pool first
            val.update(regression_entries(context.pooled_val_predictions()))
        return {"val": val, "target": split_metrics(context.target_predictions())}

    def epoch_columns(self, record: Mapping[str, Any]) -> dict[str, Any]:
        val, target = record["val"], record["target"]
        out = {"val_acc": val["acc"], "target_acc": target["acc"], "val_loss": val["loss"],
               "val_n": val.get("n")}
        out.update({self.TARGET_PROBE.key(m): v for m, v in target["probe_acc"].items()})
        out.update({self.VAL_PROBE.key(m): v for m, v in val["probe_acc"].items()})
        for split, entries in (("target", target), ("val", val)):
            out.update({f"{split}_{k}": entries[k] for k in REGRESSION_ENTRIES if k in entries})
        return out

    def target_regression_columns(self, view: ResultView) -> list[Column]:
        """The target's regression columns the rows hold (none for classification runs)."""
        return [c for c in self.REGRESSION_COLUMNS
                if c.name.startswith("target_") and view.has(c)]

    def headline(self, view: ResultView) -> str:
        """Regression runs: a table and the paired differences of each target metric beyond
        Acc-2 (the main table)."""
        parts = []
        for column in self.target_regression_columns(view):
            parts += [view.main_tables(column, column.label),
                      view.paired(column, column.label)]
        return "\n".join(p for p in parts if p)

    def report(self, view: ResultView) -> list[str]:
        lines = []
        columns = self.target_regression_columns(view)
        if columns:
            lines += ["The regression metrics of the same selected epochs (MAE and Corr as "
                      "plain numbers, the others in %), averaged over the targets (each metric's "
                      "table and paired differences are with the main table above):", "",
                      view.average_tables([("target_acc", "Acc-2")]
                                          + [(c.name, c.label.replace("target ", ""),
                                              c.percent) for c in columns], "regression")]
        lines += ["Same selected epochs, source-validation accuracy:", "",
                  view.main_tables(self.VAL_ACC, "source-validation accuracy")]
        modalities = view.members(self.TARGET_PROBE)
        if modalities:
            columns = [("target_acc", "fused")] + [(self.TARGET_PROBE.key(m), m)
                                                   for m in modalities]
            lines += ["Unimodal accuracy on the target (linear probes on each encoder's "
                      "detached embedding):", "", view.average_tables(columns, "probe accuracy")]
        return lines


PROBE_NAMES = {"encoder": "linear probe of the frozen encoder (--encoder-probes)",
               "side": "side probe (trained along with the model; it may not have converged)"}


def near_chance_lines(rows: list[Mapping[str, Any]]) -> list[str]:
    """One line per (modality set, algorithm, modality, probe read) whose probe on source
    validation is within noise of chance (:func:`merdg.evaluators.encoder_probes.chance_probes`:
    the encoder's probe when the runs have ``--encoder-probes``, else the side probe, named)
    in some runs, with how many and which columns (``rows``: source-validation rows with
    ``val_n``, ``num_classes`` and ``column``)."""
    flagged: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    total: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        if not r.get("val_n") or int(r.get("num_classes") or 0) < 2:
            continue
        total[(r["modalities"], r["algorithm"])] += 1
        which, near = chance_probes(r)
        for m in near:
            flagged[(r["modalities"], r["algorithm"], m, which)].append(
                f"{r['column']} seed {r['seed']}")
    return [f"- {mods} {algo}: the {m} {PROBE_NAMES[which]} is within noise of chance on "
            f"source validation in {len(where)} of {total[(mods, algo)]} runs "
            f"({', '.join(where[:6])}{', ...' if len(where) > 6 else ''}): "
            + ("its encoder learned nothing measurable, and the fused model may ignore the "
               "modality" if which == "encoder" else "the encoder may still hold information "
               "(--encoder-probes tests the encoder itself)")
            for (mods, algo, m, which), where in sorted(flagged.items())]
