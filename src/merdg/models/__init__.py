"""Networks: encoders (registry), heads, the late-fusion multimodal network."""

from merdg.models import cnn3d  # noqa: F401  (registers "cnn3d")
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
