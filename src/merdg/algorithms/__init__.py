"""Algorithms: the registry, ERM, MER-DG and the composition that adds MER-DG to any of them."""

from merdg.algorithms.base import ALGORITHMS, Algorithm, EvalOutput, Objective, get_algorithm_class
from merdg.algorithms.erm import ERM
from merdg.algorithms.mer import MER_HPARAMS, MERDG, with_mer

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "ERM",
    "EvalOutput",
    "MERDG",
    "MER_HPARAMS",
    "Objective",
    "get_algorithm_class",
    "with_mer",
]
