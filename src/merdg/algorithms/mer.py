"""MER-DG as a composition: ``with_mer(Base)`` adds ``lambda * sum_m MER(z_m)`` to any algorithm.

``MERDG`` is ``with_mer(ERM)`` ("Baseline Fusion + MER-DG"); ``"X+MER"`` names resolve to
``with_mer(X)`` for any registered ``X``. MER-DG owns its hparams (``mer_*``, among them
``mer_target``, the representation kind it regularizes); the algorithm only answers the neutral
hooks :meth:`~merdg.algorithms.base.Algorithm.requested_representations` (so that it can build
heads a kind needs) and :meth:`~merdg.algorithms.base.Algorithm.representations` (projection
heads by default; SimMMDG returns its shared- and specific-half heads, as the official release
regularizes them).
"""

from __future__ import annotations

from torch import Tensor

from merdg.algorithms.base import ALGORITHMS, Algorithm, NonFiniteLossError, Objective
from merdg.algorithms.erm import ERM
from merdg.datasets.base import Batch
from merdg.hparams import HParam
from merdg.losses.mer import MERLoss, NonFiniteFeaturesError

__all__ = ["MER_HPARAMS", "MERDG", "MERTerm", "with_mer"]

MER_HPARAMS: dict[str, HParam] = {
    "mer_lambda": HParam(3.0, "weight of the MER-DG loss (official: 3.0)",
                         ("loguniform", 0.3, 10.0), kind="float", low=0),
    "mer_alpha_marg": HParam(1.0, "weight of the variance floor L_marg (official: 1.0)",
                             kind="float", low=0),
    "mer_alpha_spec": HParam(1.0, "weight of the log-det term L_spec (official: 1.0)",
                             kind="float", low=0),
    # log(eps) enters L_spec: 0 is undefined, and eps >= 1 swamps the unit-variance features
    "mer_eps": HParam(1e-4, "epsilon of both terms (official: 1e-4)", kind="float", low=0,
                      high=1, low_open=True, high_open=True),
    "mer_reduction": HParam("sum", "'sum' over modalities (official) or 'mean'", kind="str",
                            choices=("sum", "mean")),
    "mer_target": HParam("projection", "representation regularized: 'projection' (official), "
                         "'normalized_projection' or 'embedding'", kind="str",
                         choices=("projection", "normalized_projection", "embedding")),
}


_COMPOSED: dict[type[Algorithm], type[Algorithm]] = {}


def with_mer(base: type[Algorithm], name: str | None = None) -> type[Algorithm]:
    """Return ``base`` with the MER-DG term added to its objective (one class per base).

    Args:
        base: Any :class:`~merdg.algorithms.base.Algorithm` subclass.
        name: Class name on first composition (default ``"<Base>+MER"``).
    """
    if base not in _COMPOSED:
        _COMPOSED[base] = _compose(base, name or f"{base.__name__}+MER")
    return _COMPOSED[base]


class MERTerm:
    """The MER-DG term, mixed in before an algorithm class by :func:`with_mer` (cooperative
    ``super()`` calls reach the base algorithm). Defined at module level, not inside
    :func:`with_mer`, so that every composed class shares these methods (and mutation testing,
    which swaps functions at call time, reaches them: ``docs/testing.md``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        hp = self.hparams
        if hp["mer_target"] not in self.REPRESENTATION_KINDS:
            raise ValueError(f"mer_target must be one of {list(self.REPRESENTATION_KINDS)}, "
                             f"got {hp['mer_target']!r}")
        self.mer_target = hp["mer_target"]
        self.mer_lambda = float(hp["mer_lambda"])
        self.mer = MERLoss(alpha_marg=float(hp["mer_alpha_marg"]),
                           alpha_spec=float(hp["mer_alpha_spec"]),
                           reduction=hp["mer_reduction"],
                           marg_eps=float(hp["mer_eps"]), spec_eps=float(hp["mer_eps"]))

    def requested_representations(self) -> tuple[str, ...]:
        return (*super().requested_representations(), self.hparams["mer_target"])

    def mer_features(self, batch: Batch, objective: Objective) -> dict[str, Tensor]:
        """What MER-DG regularizes: the algorithm's ``mer_target`` representations."""
        return self.representations(objective, self.mer_target)

    def objective(self, batch: Batch) -> Objective:
        obj = super().objective(batch)
        features = self.mer_features(batch, obj)
        try:
            terms = self.mer.terms(features)
        except NonFiniteFeaturesError as err:  # the weights diverged: a non-finite loss
            raise NonFiniteLossError(
                {k: float(v.detach()) for k, v in obj.logs.items()},
                detail=f"the {self.mer_target} representations of {', '.join(err.modalities)} "
                "that MER-DG regularizes hold NaN/Inf (the weights diverged)") from None
        mer = self.mer.reduce(terms)
        logs = dict(obj.logs, mer=mer)
        for m, t in terms.items():
            logs[f"mer_marg/{m}"] = t.marginal
            logs[f"mer_spec/{m}"] = t.spectral
        return obj._replace(loss=obj.loss + self.mer_lambda * mer, logs=logs)


def _compose(base: type[Algorithm], name: str) -> type[Algorithm]:
    reason = base.MIN_BATCH_REASON or (
        "the MER-DG terms are batch statistics, 0 for a single sample: the run would be "
        f"plain {base.__name__}")
    # a base that already has the term (MERDG+MER) gets a second one, as before the mixin
    term = MERTerm if not issubclass(base, MERTerm) else type("MERTerm", (MERTerm,), {})
    return type(name, (term, base), {
        "HPARAMS": {**base.HPARAMS, **MER_HPARAMS},
        "MIN_BATCH": max(base.MIN_BATCH, 2),
        "MIN_BATCH_REASON": reason,
        "__qualname__": name,
        "__module__": __name__,
        "__doc__": f"{base.__name__} + lambda * MER-DG (Yarici & AlRegib, ICML 2026)."})


MERDG = ALGORITHMS.register("MERDG")(with_mer(ERM, "MERDG"))
