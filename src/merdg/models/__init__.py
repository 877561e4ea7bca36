"""Networks: encoders (registry), heads, the late-fusion multimodal network."""

from merdg.models import paper_encoders  # noqa: F401  (registers the paper's encoders)
from merdg.models.encoders import ENCODERS, build_encoder
from merdg.models.heads import FusionClassifier, ProjectionHead
from merdg.models.multimodal_net import ModelOutput, MultimodalNet

__all__ = [
    "ENCODERS",
    "FusionClassifier",
    "ModelOutput",
    "MultimodalNet",
    "ProjectionHead",
    "build_encoder",
]
