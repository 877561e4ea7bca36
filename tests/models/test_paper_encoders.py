"""The paper's encoders: parameter names and shapes of the public checkpoints, strict loading,
frozen trunks and their BatchNorm modes.

Where the expected names come from (read, not copied):

- mmaction2 0.x ``mmaction/models/backbones/resnet3d.py`` (``ResNet3d.make_res_layer``,
  ``Bottleneck3d``: ``conv1``/``conv2``/``conv3`` and ``downsample`` are mmcv ``ConvModule``s,
  i.e. ``.conv`` + ``.bn``; stem ``conv1``), ``resnet3d_slowfast.py`` (``ResNet3dPathway``:
  ``conv1_lateral``, ``layer{i}_lateral`` without norm, first block of each slow stage takes
  ``inplanes * 2 // channel_ratio`` extra channels; ``ResNet3dSlowFast``: ``slow_path``,
  ``fast_path``), the recognizer's ``backbone.`` / ``cls_head.`` prefixes, and the SimMMDG
  configs ``slowfast_r101_8x8x1_256e_kinetics400_rgb.py`` / ``slowonly_r50_8x8x1_256e_
  kinetics400_flow.py`` (see ``docs/paper-setting.md``);
- VGGSound (github.com/hche11/VGGSound) ``models/resnet.py`` (torchvision-style ResNet with a
  1-channel ``conv1``, ``downsample.0``/``.1``, ``fc``) and ``model.py`` (``AVENet.audnet``),
  ``test.py`` (``checkpoint['model_state_dict']`` loaded strictly into ``AVENet``).
"""

import pickle

import pytest
import torch
import torch.nn.functional as F

from merdg.models import ENCODERS, MultimodalNet, build_encoder
from merdg.models.pretrained import CheckpointError

BLOCKS = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def conv_module(keys, name, c_out, c_in, kernel, bn=True):
    keys[f"{name}.conv.weight"] = (c_out, c_in, *kernel)
    if bn:
        for stat in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.bn.{stat}"] = (c_out,)
        keys[f"{name}.bn.num_batches_tracked"] = ()


def mmaction_pathway(prefix, depth, c_in, base, conv1_t, inflate, lateral, ratio=8, fusion=7):
    """Expected ``state_dict`` names/shapes of an mmaction2 0.x ResNet3dPathway."""
    keys = {}
    conv_module(keys, f"{prefix}.conv1", base, c_in, (conv1_t, 7, 7))
    if lateral:
        conv_module(keys, f"{prefix}.conv1_lateral", base * 2 // ratio, base // ratio,
                    (fusion, 1, 1), bn=False)
    inplanes = base
    for i, n in enumerate(BLOCKS[depth]):
        planes = base * 2 ** i
        extra = inplanes * 2 // ratio if lateral else 0
        for b in range(n):
            c = inplanes + extra if b == 0 else planes * 4
            name = f"{prefix}.layer{i + 1}.{b}"
            conv_module(keys, f"{name}.conv1", planes, c, (3 if inflate[i] else 1, 1, 1))
            conv_module(keys, f"{name}.conv2", planes, planes, (1, 3, 3))
            conv_module(keys, f"{name}.conv3", planes * 4, planes, (1, 1, 1))
            if b == 0:
                conv_module(keys, f"{name}.downsample", planes * 4, c, (1, 1, 1))
        inplanes = planes * 4
        if lateral and i < 3:
            conv_module(keys, f"{prefix}.layer{i + 1}_lateral", inplanes * 2 // ratio,
                        inplanes // ratio, (fusion, 1, 1), bn=False)
    return keys


def vggsound_resnet18():
    """Expected ``audnet.*`` names/shapes of VGGSound's ResNet-18 (without ``fc``)."""
    keys = {"audnet.conv1.weight": (64, 1, 7, 7)}

    def bn(name, c):
        keys.update({f"{name}.{s}": (c,) for s in ("weight", "bias", "running_mean",
                                                     "running_var")})
        keys[f"{name}.num_batches_tracked"] = ()

    bn("audnet.bn1", 64)
    inplanes = 64
    for i, n in enumerate(BLOCKS[18]):
        planes = 64 * 2 ** i
        for b in range(n):
            c = inplanes if b == 0 else planes
            name = f"audnet.layer{i + 1}.{b}"
            keys[f"{name}.conv1.weight"] = (planes, c, 3, 3)
            bn(f"{name}.bn1", planes)
            keys[f"{name}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{name}.bn2", planes)
            if b == 0 and i > 0:
                keys[f"{name}.downsample.0.weight"] = (planes, c, 1, 1)
                bn(f"{name}.downsample.1", planes)
        inplanes = planes
    return keys


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_full_size_names_and_shapes_match_the_public_checkpoints():
    with torch.device("meta"):  # no memory, no time: only names and shapes
        video = build_encoder({"name": "slowfast"}, (3, 32, 224, 224))
        flow = build_encoder({"name": "slowonly"}, (2, 8, 224, 224))
        audio = build_encoder({"name": "vggsound_resnet"}, (1, 257, 1004))
    expected_video = {**mmaction_pathway("backbone.slow_path", 101, 3, 64, 1, (0, 0, 1, 1), True),
                      **mmaction_pathway("backbone.fast_path", 101, 3, 8, 5, (1, 1, 1, 1), False)}
    assert shapes(video) == expected_video
    assert shapes(flow) == mmaction_pathway("backbone", 50, 2, 64, 1, (0, 0, 1, 1), False)
    assert shapes(audio) == vggsound_resnet18()
    # a few shapes worked out by hand from the configs
    sv = shapes(video)
    assert sv["backbone.slow_path.layer1.0.conv1.conv.weight"] == (64, 80, 1, 1, 1)
    assert sv["backbone.slow_path.layer4.0.downsample.conv.weight"] == (2048, 1280, 1, 1, 1)
    assert sv["backbone.slow_path.conv1_lateral.conv.weight"] == (16, 8, 7, 1, 1)
    assert sv["backbone.fast_path.conv1.conv.weight"] == (8, 3, 5, 7, 7)
    assert (video.out_dim, flow.out_dim, audio.out_dim) == (2304, 2048, 512)
    assert {"slowfast", "slowonly", "vggsound_resnet"} <= set(ENCODERS.names())


TINY = {"slowfast": ((3, 32, 16, 16), {"width": 8, "stage_blocks": [1, 1, 1, 1]}),
        "slowonly": ((2, 8, 16, 16), {"width": 4, "stage_blocks": [1, 1, 1, 1]}),
        "vggsound_resnet": ((1, 64, 96), {"width": 4, "stage_blocks": [1, 1, 1, 1]})}


def tiny(name, **kw):
    shape, options = TINY[name]
    return build_encoder({"name": name, **options, **kw}, shape)


def save_openmmlab(path, state, head_in):
    state = {**state, "cls_head.fc_cls.weight": torch.randn(400, head_in),
             "cls_head.fc_cls.bias": torch.randn(400)}
    torch.save({"meta": {"mmcv_version": "1.2.7"}, "state_dict": state}, path)


def random_state(module):
    out = {}
    for k, v in module.state_dict().items():
        if k.endswith("running_var"):
            out[k] = torch.rand_like(v) + 0.5
        elif v.is_floating_point():
            out[k] = torch.randn_like(v)
        else:
            out[k] = v + 7
    return out


def test_openmmlab_checkpoint_loads_strictly(tmp_path):
    state = random_state(tiny("slowfast"))
    path = tmp_path / "slowfast.pth"
    save_openmmlab(path, state, 288)
    encoder = tiny("slowfast", checkpoint=str(path))
    loaded = encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    report = encoder.checkpoint_report
    assert report["entry"] == "state_dict" and report["loaded"] == len(state)
    assert report["ignored"] == {"cls_head.fc_cls.": 2} and report["not_loaded"] == {}


def test_mismatches_refuse_to_load_and_list_everything(tmp_path):
    state = random_state(tiny("slowonly"))
    path = tmp_path / "flow.pth"
    broken = dict(state)
    del broken["backbone.layer2.0.conv1.conv.weight"]
    broken["backbone.layer9.weight"] = torch.zeros(1)
    broken["backbone.conv1.conv.weight"] = torch.zeros(4, 3, 1, 7, 7)
    save_openmmlab(path, broken, 32)
    with pytest.raises(CheckpointError) as err:
        tiny("slowonly", checkpoint=str(path))
    message = str(err.value)
    assert "nothing was loaded" in message
    assert "missing from the file: backbone.layer2.0.conv1.conv.weight" in message
    assert "unexpected in the file: backbone.layer9.weight" in message
    assert "backbone.conv1.conv.weight: file (4, 3, 1, 7, 7) vs module (4, 2, 1, 7, 7)" in message
    with pytest.raises(CheckpointError, match="does not exist"):
        tiny("slowonly", checkpoint=str(tmp_path / "none.pth"))


def test_dataparallel_prefix_and_old_bn_counters(tmp_path):
    state = random_state(tiny("slowonly"))
    state = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "bare.pth")  # a bare state dict, saved from DataParallel
    encoder = tiny("slowonly", checkpoint=str(tmp_path / "bare.pth"))
    assert encoder.checkpoint_report["entry"] is None
    assert encoder.checkpoint_report["tolerated_missing"] > 0


class Opaque:
    pass


def test_untrusted_pickles_need_explicit_trust(tmp_path):
    state = random_state(tiny("slowonly"))
    torch.save({"state_dict": state, "meta": {"env": Opaque()}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="trust_checkpoint"):
        tiny("slowonly", checkpoint=str(tmp_path / "odd.pth"))
    encoder = tiny("slowonly", checkpoint=str(tmp_path / "odd.pth"), trust_checkpoint=True)
    assert encoder.checkpoint_report["loaded"] == len(state)
    (tmp_path / "junk.pth").write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(CheckpointError):
        tiny("slowonly", checkpoint=str(tmp_path / "junk.pth"))


def test_audio_layer4_choice(tmp_path):
    state = random_state(tiny("vggsound_resnet"))
    full = {**state, "audnet.fc.weight": torch.randn(309, 32), "audnet.fc.bias": torch.randn(309)}
    torch.save({"model_state_dict": full, "epoch": 10}, tmp_path / "H.pth.tar")
    loaded = tiny("vggsound_resnet", checkpoint=str(tmp_path / "H.pth.tar"))
    official = tiny("vggsound_resnet", checkpoint=str(tmp_path / "H.pth.tar"),
                    layer4_init="random")
    key, trunk_key = "audnet.layer4.0.conv1.weight", "audnet.layer3.0.conv1.weight"
    assert torch.equal(loaded.state_dict()[key], state[key])
    assert not torch.equal(official.state_dict()[key], state[key])
    assert torch.equal(official.state_dict()[trunk_key], state[trunk_key])
    report = official.checkpoint_report
    assert report["not_loaded"] == {"audnet.layer4.": len([k for k in state
                                                           if k.startswith("audnet.layer4.")])}
    assert "official release" in report["not_loaded_reason"]
    assert loaded.checkpoint_report["ignored"] == {"audnet.fc.": 2}
    with pytest.raises(ValueError, match="layer4_init"):
        tiny("vggsound_resnet", layer4_init="pretrained")


@pytest.mark.parametrize("name", ["slowfast", "slowonly", "vggsound_resnet"])
def test_only_layer4_trains(name):
    encoder = tiny(name)
    trainable = {k for k, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(".layer4." in k for k in trainable)
    x = torch.randn(2, *TINY[name][0])
    encoder(x).square().sum().backward()
    for k, p in encoder.named_parameters():
        assert (p.grad is not None) == (k in trainable), k
    unfrozen = tiny(name, freeze_trunk=False)
    assert all(p.requires_grad for p in unfrozen.parameters())


def running_means(encoder, trunk):
    return {k: v.clone() for k, v in encoder.state_dict().items()
            if k.endswith("running_mean") and (".layer4." not in k) == trunk}


@pytest.mark.parametrize("name,official", [("slowfast", "train"), ("slowonly", "train"),
                                           ("vggsound_resnet", "eval")])
def test_frozen_trunk_batchnorm_modes(name, official):
    for mode in ("train", "eval"):
        encoder = tiny(name) if mode == official else tiny(name, trunk_bn=mode)
        assert encoder.trunk_bn == mode
        before_trunk, before_head = running_means(encoder, True), running_means(encoder, False)
        encoder.train()
        encoder(torch.randn(2, *TINY[name][0]))
        trunk_moved = any(not torch.equal(v, running_means(encoder, True)[k])
                          for k, v in before_trunk.items())
        head_moved = any(not torch.equal(v, running_means(encoder, False)[k])
                         for k, v in before_head.items())
        assert trunk_moved == (mode == "train") and head_moved, (name, mode)
    with pytest.raises(ValueError, match="trunk_bn"):
        tiny(name, trunk_bn="frozen")


def test_slowfast_embedding_is_fast_then_slow_and_uses_mmaction_sampling():
    encoder = tiny("slowfast").eval()
    x = torch.randn(2, 3, 32, 16, 16)
    # mmaction2 subsamples time with nearest interpolation at scale 1 / resample_rate
    slow_in = F.interpolate(x, mode="nearest", scale_factor=(1 / 4, 1.0, 1.0))
    assert torch.equal(slow_in, x[:, :, ::4])
    with torch.no_grad():
        z = encoder(x)
        slow, fast = encoder.backbone.stage4(*encoder.backbone.trunk(x))
    fast_dim = fast.shape[1]
    assert z.shape == (2, fast_dim + slow.shape[1]) == (2, 32 + 256)
    assert torch.allclose(z[:, :fast_dim], fast.mean(dim=(2, 3, 4)))
    assert torch.allclose(z[:, fast_dim:], slow.mean(dim=(2, 3, 4)))
    assert encoder.dropout.p == 0.5 and tiny("slowonly").dropout.p == 0.5
    encoder.train()
    assert not torch.equal(encoder(x), encoder(x))  # dropout on the embedding in training


def test_input_shape_errors_and_multimodal_net():
    with pytest.raises(ValueError, match=r"\(C, T, H, W\)"):
        build_encoder({"name": "slowfast"}, (3, 224, 224))
    with pytest.raises(ValueError, match=r"\(C, F, T\)"):
        build_encoder({"name": "vggsound_resnet"}, (257, 1004))
    encoders = {m: tiny(m) for m in ("slowfast", "vggsound_resnet")}
    net = MultimodalNet(encoders, num_classes=8, order=["slowfast", "vggsound_resnet"],
                        fusion_hidden=16, proj_hidden=16, proj_dim=8)
    out = net({m: torch.randn(2, *TINY[m][0]) for m in encoders})
    assert out.logits.shape == (2, 8)
    assert out.embeddings["vggsound_resnet"].shape == (2, 32)
