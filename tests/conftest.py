"""Shared test setup: one CPU thread (2-core CI machines; see docs/development.md)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny_synthetic_options():
    """A small, fast synthetic benchmark (4 domains, 3 modalities)."""
    return {"samples_per_domain": 60, "n_classes": 3}


TINY_HPARAMS = {"epochs": 2, "batch_size": 12, "proj_hidden": 32, "fusion_hidden": 16,
                "encoders": {m: {"hidden": 16, "out_dim": 8} for m in ("m0", "m1", "m2")}}


@pytest.fixture
def tiny_hparams():
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_HPARAMS.items()}
