"""One run: its config (:mod:`~merdg.run.config`), hyperparameters (:mod:`~merdg.run.hparams`),
training loop (:mod:`~merdg.run.training`), evaluation passes, run directory
(:mod:`~merdg.run.directory`), checkpoints, records, epoch selection, data parallelism and
loggers. Importing this package imports nothing else (``merdg.run.config`` needs no torch)."""
