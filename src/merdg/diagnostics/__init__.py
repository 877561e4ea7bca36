"""Diagnostics of trained runs: is there fusion overfitting, and does MER-DG change it?

``diagnose(run_dirs, out_dir)`` (CLI: ``merdg diagnose RUN_DIR [RUN_DIR ...]``) rebuilds each
run from its directory (it needs ``model.pt``: train with ``save_model=True``) and reports, per
modality and per domain, feature diversity, unimodal generalization (the model's heads and
probes on frozen embeddings), cross-modal dependence and the fused prediction's reliance on each
modality, as ``report.md``, ``diagnostics.json`` and PNG figures. See ``docs/diagnostics.md``.

Modules: :mod:`~merdg.diagnostics.metrics` (pure statistics), :mod:`~merdg.diagnostics.probes`,
:mod:`~merdg.diagnostics.features` (loading runs, forward passes),
:mod:`~merdg.diagnostics.analysis` (one run's numbers), :mod:`~merdg.diagnostics.plots`,
:mod:`~merdg.diagnostics.report`, :mod:`~merdg.diagnostics.compare` (:func:`diagnose`).

The package's names are loaded on first use (PEP 562 ``__getattr__``), so that the pure modules
(``metrics``, ``probes``) can be imported by the training loop without importing the run
loader (``features`` imports :mod:`merdg.run.training`).
"""

import importlib
from typing import Any

_EXPORTS = {"DiagnoseOptions": "analysis", "diagnose_run": "analysis", "headline": "analysis",
            "diagnose": "compare", "LoadedRun": "features", "load_run": "features"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'merdg.diagnostics' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
