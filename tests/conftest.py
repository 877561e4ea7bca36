"""Shared test setup: one CPU thread (2-core CI machines: 2 OpenMP threads beside another busy
process can run 10-100x slower)."""

import copy
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
    return copy.deepcopy(TINY_HPARAMS)


@pytest.fixture(autouse=True)
def _restore_merdg_logger():
    """A CLI call adds a stderr handler to the "merdg" logger (one per process in real use);
    remove it after each test so later tests see a quiet logger."""
    import logging

    logger = logging.getLogger("merdg")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The tests' preprocessing cache: a folder of this session (shared by its tests), never
    the user's ~/.cache/merdg, whose entries could change what a test sees."""
    cache = tmp_path_factory.mktemp("merdg-cache")
    previous = os.environ.get("MERDG_CACHE_DIR")
    os.environ["MERDG_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("MERDG_CACHE_DIR", None)
    else:
        os.environ["MERDG_CACHE_DIR"] = previous
