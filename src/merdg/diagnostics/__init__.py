"""Diagnostics of trained runs: is there fusion overfitting, and does MER-DG change it?

``diagnose(run_dirs, out_dir)`` (CLI: ``merdg diagnose RUN_DIR [RUN_DIR ...]``) rebuilds each
run from its directory (:func:`merdg.run.saved.load_saved_run`; it needs the saved weights of
the selected epoch, ``model.pt``, which runs save by default) and reports, per modality and per
domain, feature diversity, unimodal generalization (the model's heads and probes on frozen
embeddings), cross-modal dependence and the fused prediction's reliance on each modality, as
``report.md``, ``diagnostics.json`` and PNG figures. See ``docs/diagnostics.md``.

Modules: :mod:`~merdg.diagnostics.features` (loading runs, forward passes),
:mod:`~merdg.diagnostics.analysis` (one run's numbers), :mod:`~merdg.diagnostics.plots`,
:mod:`~merdg.diagnostics.report`, :mod:`~merdg.diagnostics.compare` (:func:`diagnose`),
:mod:`~merdg.diagnostics.experiment` (``merdg bench --diagnose``). The pure statistics and
probes they use are :mod:`merdg.evaluation.representation` and :mod:`merdg.evaluation.probes`.
"""

from merdg.diagnostics.analysis import DiagnoseOptions, diagnose_run, headline
from merdg.diagnostics.compare import diagnose
from merdg.diagnostics.features import LoadedRun, load_run

__all__ = ["DiagnoseOptions", "LoadedRun", "diagnose", "diagnose_run", "headline", "load_run"]
