"""Loss functions. This subpackage imports only torch and :mod:`merdg.dist`."""

from merdg.losses.contrastive import info_nce_loss, multiview_info_nce_loss
from merdg.losses.entropy import entropy_weighted_cross_entropy, prediction_entropy
from merdg.losses.mer import (
    MERLoss,
    MERTerms,
    correlation_logdet,
    marginal_entropy_loss,
    mer_loss,
    mer_terms,
    spectral_entropy_loss,
)
from merdg.losses.nel import mean_shift_embeddings, von_neumann_entropy_loss
from merdg.losses.rna import relative_norm_alignment_loss
from merdg.losses.supcon import supcon_loss
from merdg.losses.translation import translation_loss

__all__ = [
    "MERLoss",
    "MERTerms",
    "correlation_logdet",
    "entropy_weighted_cross_entropy",
    "info_nce_loss",
    "marginal_entropy_loss",
    "mean_shift_embeddings",
    "mer_loss",
    "mer_terms",
    "multiview_info_nce_loss",
    "prediction_entropy",
    "relative_norm_alignment_loss",
    "spectral_entropy_loss",
    "supcon_loss",
    "translation_loss",
    "von_neumann_entropy_loss",
]
