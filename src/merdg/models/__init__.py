"""Networks: encoders (registry), heads, the late-fusion multimodal network."""

from merdg.models import (  # noqa: F401  (each module registers its encoders)
    cnn3d,  # "cnn3d": small 3-D CNN for depth clips
    paper_encoders,  # the paper's SlowFast / SlowOnly / VGGSound ResNet-18
    transformer,  # "sequence_transformer": feature sequences (text), MMDG-Bench's MMSA encoder
)
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
