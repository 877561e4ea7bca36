"""Many runs: an experiment's plan (:mod:`~merdg.experiments.plan`), hyperparameter search
protocols, jobs and launchers, the runner, and the one result pipeline
(:mod:`~merdg.experiments.results`, :mod:`~merdg.experiments.report`)."""
