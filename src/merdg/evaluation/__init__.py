"""Evaluation as pure functions: metrics of predictions and features, no model, no run.

- :mod:`merdg.evaluation.metrics`: selective prediction and calibration from logits;
- :mod:`merdg.evaluation.open_set`: open-set class splits, rejection and the H-score;
- :mod:`merdg.evaluation.corruptions`: the registry of corruptions per modality kind, each a
  pure function of one sample with 5 severities (``docs/robustness.md``);
- :mod:`merdg.evaluation.robustness`: the (modality, corruption, severity) plan of an
  evaluation and the robustness summary;
- :mod:`merdg.evaluation.representation`: statistics of frozen features (effective rank, the
  MER-DG terms, CKA, canonical correlations);
- :mod:`merdg.evaluation.probes`: probes trained on frozen features;
- :mod:`merdg.evaluation.chance`: whether an accuracy is within noise of chance;
- :mod:`merdg.evaluation.statistics`: aggregates over seeds and paired differences with
  confidence intervals.

What runs a model and turns these into result columns is :mod:`merdg.evaluators`.
"""

from merdg.evaluation.corruptions import (
    CORRUPTIONS,
    MISSING,
    SEVERITIES,
    Corruption,
    check_severity,
    corruption_names,
    corruption_table,
    get_corruption,
    list_corruptions,
)
from merdg.evaluation.robustness import (
    CorruptionSpec,
    corruption_plan,
    parse_corruptions,
    parse_severities,
    summarize_robustness,
    zero_filled,
)

__all__ = [
    "CORRUPTIONS",
    "MISSING",
    "SEVERITIES",
    "Corruption",
    "CorruptionSpec",
    "check_severity",
    "corruption_names",
    "corruption_plan",
    "corruption_table",
    "get_corruption",
    "list_corruptions",
    "parse_corruptions",
    "parse_severities",
    "summarize_robustness",
    "zero_filled",
]
