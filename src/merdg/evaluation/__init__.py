"""Evaluation beyond clean accuracy, as pure functions.

- :mod:`merdg.evaluation.corruptions`: the registry of corruptions per modality kind, each a
  pure function of one sample with 5 severities (``docs/robustness.md``);
- :mod:`merdg.evaluation.views`: the (modality, corruption, severity) plan of a run, the
  dataset view that corrupts samples as they are read, and the robustness summary;
- :mod:`merdg.evaluation.metrics`: selective prediction and calibration on the target;
- :mod:`merdg.evaluation.open_set`: open-set rejection and the H-score;
- :mod:`merdg.evaluation.statistics`: paired differences with confidence intervals.
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
from merdg.evaluation.views import (
    CorruptedSamples,
    CorruptionSpec,
    corrupted_view,
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
    "CorruptedSamples",
    "Corruption",
    "CorruptionSpec",
    "check_severity",
    "corrupted_view",
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
