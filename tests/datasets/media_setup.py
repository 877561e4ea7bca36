"""Shared setup of the media-dataset tests: clip options, tiny encoders, tiny checkpoints."""

import torch

from merdg.models import build_encoder
from merdg.presets import CHECKPOINT_FILES

# small clips and crops: the paper's clip lengths, with 16-pixel crops
CLIP_OPTIONS = {"short_side": 24, "crop_size": 16, "rgb_eval_crop": 16, "flow_eval_crop": 24}
TINY_ENCODERS = {"video": {"width": 8, "stage_blocks": [1, 1, 1, 1]},
                 "flow": {"width": 4, "stage_blocks": [1, 1, 1, 1]},
                 "audio": {"width": 4, "stage_blocks": [1, 1, 1, 1]}}
NAMES = {"video": "slowfast", "flow": "slowonly", "audio": "vggsound_resnet"}
SHAPES = {"video": (3, 32, 16, 16), "flow": (2, 8, 16, 16), "audio": (1, 257, 1004)}


def plausible_state(state):
    """Perturbed weights with valid BatchNorm statistics (positive variances)."""
    def fake(key, value):
        if not value.is_floating_point():
            return value
        if key.endswith("running_var"):
            return torch.rand_like(value) + 0.5
        if key.endswith("running_mean"):
            return 0.1 * torch.randn_like(value)
        return value + 0.01 * torch.randn_like(value)
    return {k: fake(k, v) for k, v in state.items()}


def write_tiny_checkpoints(folder):
    """Files with the public names and layouts: OpenMMLab ``{"meta", "state_dict"}`` with
    ``backbone.*`` + ``cls_head.fc_cls.*``; VGGSound ``{"model_state_dict"}`` with ``audnet.*``
    + ``audnet.fc.*``; tensor names from the real architectures at tiny widths."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    states = {}
    for m, spec in TINY_ENCODERS.items():
        encoder = build_encoder({"name": NAMES[m], **spec}, SHAPES[m])
        state = plausible_state(encoder.state_dict())
        states[m] = dict(state)
        if m == "audio":
            state.update({"audnet.fc.weight": torch.randn(309, encoder.out_dim),
                          "audnet.fc.bias": torch.randn(309)})
            torch.save({"model_state_dict": state, "epoch": 1}, folder / CHECKPOINT_FILES[m][1])
        else:
            state.update({"cls_head.fc_cls.weight": torch.randn(400, encoder.out_dim),
                          "cls_head.fc_cls.bias": torch.randn(400)})
            torch.save({"meta": {"mmcv_version": "1.2.7"}, "state_dict": state},
                       folder / CHECKPOINT_FILES[m][0])
    return states
