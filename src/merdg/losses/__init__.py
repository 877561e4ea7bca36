"""Loss functions. This subpackage imports only torch and :mod:`merdg.dist`."""

from merdg.losses.mer import (
    MERLoss,
    MERTerms,
    correlation_logdet,
    marginal_entropy_loss,
    mer_loss,
    mer_terms,
    spectral_entropy_loss,
)

__all__ = [
    "MERLoss",
    "MERTerms",
    "correlation_logdet",
    "marginal_entropy_loss",
    "mer_loss",
    "mer_terms",
    "spectral_entropy_loss",
]
