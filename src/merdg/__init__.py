"""merdg: multimodal domain generalization with MER-DG (Yarici & AlRegib, ICML 2026)."""

__version__ = "0.1.0"

from merdg.hooks import FeatureTap
from merdg.losses import MERLoss, MERTerms, mer_loss, mer_terms

__all__ = ["FeatureTap", "MERLoss", "MERTerms", "__version__", "mer_loss", "mer_terms"]
