"""Cross-dataset out-of-distribution detection (``--ood-dataset``, ``--ood-domains``).

Can the trained model tell samples of its target domain (in-distribution) from samples of
another data set or domain (out-of-distribution)? MMDG-Bench's ``test_HAC_ood.py``
(lihongzhao99/MMDG_Benchmark, ``Action recognition/test_untils/``) asks it of a model trained
for HAC with the EPIC-Kitchens D1 test split as OOD data; this evaluator asks it of any run:

- in-distribution: the run's target test part (every sample; an open-set target's unknown
  classes included);
- out-of-distribution: the test parts of ``--ood-domains`` of ``--ood-dataset`` (default: the
  run's own data set, whose domains must then be named and must not be the target), with the
  run's modalities, normalized as the run's inputs (:meth:`~merdg.datasets.base.DomainDataset
  .normalize_as`); their labels are ignored;
- scores: the maximum softmax probability (MSP) and the energy score of the fused logits; OOD is
  the positive class with score ``-MSP`` (``-energy``), as the benchmark's script;
- columns: AUROC (higher is better) and FPR@95TPR (the share of in-distribution samples flagged
  at the threshold that catches 95% of the OOD ones, lower is better; the first ROC point at or
  above TPR 0.95, as the benchmark's OOD script, or ``--ood-fpr95-point nearest``).

This module is the worked example of ``docs/architecture.md``: a kind of evaluation is one
registered class with its settings, checks, measurement, columns and report section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from merdg.datasets import build_dataset
from merdg.datasets.open_set import open_set_part
from merdg.evaluation.metrics import FPR_POINTS, SCORES, auroc, fpr_at_tpr
from merdg.evaluators.base import EVALUATORS, Column, Evaluator, Measurement, ResultView
from merdg.evaluators.predictions import pool
from merdg.options import Settings, setting

__all__ = ["OODSettings", "OutOfDistribution"]


@dataclass
class OODSettings(Settings):
    ood_dataset: str | None = setting(
        None, help="out-of-distribution data of the OOD evaluation: a registered data set "
        "(`merdg list datasets`) with the run's modalities (default: the run's own, with "
        "--ood-domains)", flag="--ood-dataset", kind="str", nullable=True,
        metavar="NAME")
    ood_domains: list[str] | None = setting(
        None, help="its out-of-distribution domains (default: every domain of --ood-dataset; "
        "required for the run's own data set, and never its target)", flag="--ood-domains",
        kind="list", nullable=True, metavar="DOMAIN")
    ood_data_root: str | None = setting(
        None, help="root directory of --ood-dataset (default: the run's --data-root)",
        flag="--ood-data-root", kind="str", nullable=True, metavar="DIR")
    ood_dataset_options: dict[str, Any] = setting(
        {}, help="option of --ood-dataset, repeatable", flag="--ood-dataset-option",
        kind="pairs", metavar="KEY=VALUE")
    ood_fpr95_point: str = setting(
        "first", help="ROC point of the OOD FPR@95TPR: 'first' (at or above TPR 0.95, as "
        "MMDG-Bench's OOD script) or 'nearest'", flag="--ood-fpr95-point", kind="str",
        choices=FPR_POINTS)


@EVALUATORS.register("ood")
class OutOfDistribution(Evaluator):
    """AUROC and FPR@95TPR of telling the target from another data set or domain."""

    name = "ood"
    description = ("cross-dataset OOD detection: the target (in-distribution) against another "
                   "data set or domain, AUROC and FPR@95TPR with MSP and energy scores")
    Settings = OODSettings
    columns = (Column("ood_auroc_msp", "OOD AUROC (MSP)"),
               Column("ood_auroc_energy", "OOD AUROC (energy)"),
               Column("ood_fpr95_msp", "OOD FPR@95TPR (MSP)", "lower"),
               Column("ood_fpr95_energy", "OOD FPR@95TPR (energy)", "lower"))

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        if values["ood_dataset"] is None and values["ood_domains"] is None:
            raise ValueError("the ood evaluation needs --ood-dataset or --ood-domains (the "
                             "out-of-distribution data)")
        return values

    def _same_dataset(self, run: Any) -> bool:
        s = self.settings
        return (s.ood_dataset in (None, run.config.dataset) and not s.ood_dataset_options
                and s.ood_data_root is None)

    def ood_parts(self, run: Any) -> tuple[list[Any], str]:
        """The OOD samples (one test part per domain, labels set to unknown) and a description.

        Raises:
            ValueError: One line: an unknown data set or domain, the run's target named as OOD,
                a modality the OOD data lacks, or sample shapes that differ from the run's.
        """
        s = self.settings
        if self._same_dataset(run):
            if not s.ood_domains:
                raise ValueError(f"--ood-domains: name the domains of {run.config.dataset} to "
                                 f"use as out-of-distribution data (domains: "
                                 f"{list(run.dataset.domains)})")
            if run.target in s.ood_domains:
                raise ValueError(f"--ood-domains: {run.target} is the run's target "
                                 "(in-distribution); name other domains")
            dataset, name = run.dataset, run.config.dataset
        else:
            name = s.ood_dataset or run.config.dataset
            try:
                dataset = build_dataset(name, s.ood_data_root or run.config.data_root,
                                        run.modalities, **s.ood_dataset_options)
            except (ValueError, KeyError, OSError) as err:
                message = err.args[0] if isinstance(err, KeyError) and err.args else err
                raise ValueError(f"--ood-dataset {name}: {message}") from None
            shapes = [m for m in run.modalities
                      if tuple(dataset.input_shape(m)) != tuple(run.dataset.input_shape(m))]
            if shapes:
                raise ValueError(f"--ood-dataset {name}: sample shapes differ from the run's: "
                                 + "; ".join(f"{m} {tuple(dataset.input_shape(m))} vs "
                                             f"{tuple(run.dataset.input_shape(m))}"
                                             for m in shapes))
            dataset.normalize_as(run.dataset)
        domains = list(s.ood_domains or dataset.domains)
        try:
            dataset.check_domains(domains)
        except (ValueError, KeyError) as err:
            raise ValueError(f"--ood-domains: {err}") from None
        parts = [open_set_part(dataset.split(d, "test", run.config.holdout_seed(),
                                             run.config.holdout_fraction), ())
                 for d in domains]
        empty = [d for d, p in zip(domains, parts) if len(p) == 0]
        if empty:
            raise ValueError(f"--ood-domains: {empty} of {name} hold no test sample")
        return parts, f"{name} ({', '.join(domains)})"

    def check(self, run: Any) -> None:
        if run.task != "classification":
            raise ValueError(f"--ood-dataset scores the maximum softmax probability and the "
                             f"energy of class logits; {run.config.dataset} is a "
                             f"{run.task} task, whose model has one output")
        self.ood_parts(run)

    def measure(self, context: Any) -> Measurement:
        parts, description = self.ood_parts(context.run)
        inside = context.target_predictions().logits  # (N_id, C)
        outside = pool([context.predict(p) for p in parts]).logits  # (N_ood, C)
        is_ood = np.r_[np.zeros(len(inside), bool), np.ones(len(outside), bool)]
        logits = np.concatenate([inside, outside])
        columns: dict[str, float | None] = {}
        for score in ("msp", "energy"):
            flagged = -SCORES[score](logits)  # higher: more likely out of distribution
            columns[f"ood_auroc_{score}"] = auroc(flagged, is_ood)
            columns[f"ood_fpr95_{score}"] = fpr_at_tpr(flagged, is_ood,
                                                       point=self.settings.ood_fpr95_point)
        return Measurement(columns, {"ood": description, "n_in": int(len(inside)),
                                     "n_out": int(len(outside)),
                                     "fpr95_point": self.settings.ood_fpr95_point})

    def report(self, view: ResultView) -> list[str]:
        if not any(view.has(c) for c in self.columns):
            return []
        return ["## Out-of-distribution detection", "",
                "The target (in-distribution) against the --ood-dataset / --ood-domains data "
                "(out-of-distribution, the positive class, scored by -MSP and -energy): AUROC "
                "(higher is better) and FPR@95TPR (the share of target samples flagged when 95% "
                "of the OOD samples are; lower), in % at the selected epochs, averaged over the "
                "table's columns (docs/evaluation.md).", "",
                view.average_tables([(c.name, c.label) for c in self.columns],
                                    "OOD detection (%)")]
