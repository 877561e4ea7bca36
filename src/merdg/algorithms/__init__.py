"""Algorithms: the registry, ERM, MER-DG and the composition that adds MER-DG to any of them.

Baselines, one module per family: :mod:`~merdg.algorithms.simmmdg` (SimMMDG, MOOSA, MOOSA-OS),
:mod:`~merdg.algorithms.contrastive` (CMC, NEL), :mod:`~merdg.algorithms.teacher` (CMRF, MBCD),
:mod:`~merdg.algorithms.adversarial` (JAT, GMP), :mod:`~merdg.algorithms.rna` (RNANet).
"""

from merdg.algorithms.adversarial import GMP, JAT
from merdg.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    EvalOutput,
    NonFiniteLossError,
    Objective,
    check_task,
)
from merdg.algorithms.contrastive import CMC, NEL
from merdg.algorithms.erm import ERM
from merdg.algorithms.mer import MER_HPARAMS, MERDG, with_mer
from merdg.algorithms.rna import RNANet
from merdg.algorithms.simmmdg import MOOSA, MOOSAOpenSet, SimMMDG
from merdg.algorithms.teacher import CMRF, MBCD

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "CMC",
    "CMRF",
    "ERM",
    "EvalOutput",
    "GMP",
    "JAT",
    "MBCD",
    "MERDG",
    "MER_HPARAMS",
    "MOOSA",
    "MOOSAOpenSet",
    "NEL",
    "NonFiniteLossError",
    "Objective",
    "RNANet",
    "SimMMDG",
    "check_task",
    "get_algorithm_class",
    "with_mer",
]


def get_algorithm_class(name: str) -> type[Algorithm]:
    """The class registered as ``name``; ``"X+MER"`` composes MER-DG onto algorithm ``X``.

    Raises:
        KeyError: Unknown name (the message lists the registered names).
    """
    if name in ALGORITHMS:
        return ALGORITHMS.get(name)
    if name.endswith("+MER"):
        return with_mer(ALGORITHMS.get(name[: -len("+MER")]))
    return ALGORITHMS.get(name)  # raises KeyError listing the names
