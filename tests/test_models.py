"""Multimodal network, encoders and heads."""

import pytest
import torch
from torch import nn

from merdg.models import ENCODERS, MultimodalNet, ProjectionHead, build_encoder


def make_net(order=None):
    encoders = {"b": build_encoder({"name": "mlp", "hidden": 8, "out_dim": 6}, (5,)),
                "a": build_encoder({"name": "tcn", "channels": [4, 7]}, (20, 3))}
    return MultimodalNet(encoders, num_classes=4, order=order, fusion_hidden=16, proj_hidden=32,
                         proj_dim=12)


def batch():
    return {"a": torch.randn(10, 20, 3), "b": torch.randn(10, 5)}


def test_forward_shapes_and_sorted_order():
    net = make_net()
    out = net(batch())
    assert net.modalities == ["a", "b"]
    assert out.logits.shape == (10, 4)
    assert {m: e.shape for m, e in out.embeddings.items()} == {"a": (10, 7), "b": (10, 6)}
    assert all(p.shape == (10, 4) for p in out.probe_logits.values())
    assert {m: z.shape for m, z in net.project(out.embeddings).items()} == {"a": (10, 12),
                                                                            "b": (10, 12)}
    assert make_net(order=["b", "a"]).modalities == ["b", "a"]
    with pytest.raises(ValueError, match="does not match"):
        make_net(order=["a"])


def test_classifier_and_projection_follow_the_paper():
    net = make_net()
    layers = list(net.classifier)
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert layers[0].in_features == 13 and layers[2].p == 0.5
    head = ProjectionHead(10, 2048, 128)
    kinds = [type(m) for m in head.layers]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]
    assert head.layers[-1].out_features == 128 and head.layers[0].out_features == 2048
    normalized = ProjectionHead(10, 16, 8, norm="batch", l2_normalize=True)(torch.randn(4, 10))
    assert torch.allclose(normalized.norm(dim=1), torch.ones(4))


def test_probes_do_not_train_encoders():
    net = make_net()
    out = net(batch())
    torch.nn.functional.cross_entropy(out.probe_logits["a"], torch.zeros(10, dtype=torch.long)
                                      ).backward()
    assert all(p.grad is None for p in net.encoders.parameters())
    assert net.probes["a"].weight.grad is not None


def test_zero_filled_modality():
    net = make_net().eval()
    x = batch()
    out = net(x, zero=["b"])
    emb = net.embed(x)
    expected = net.classifier(torch.cat([emb["a"], torch.zeros_like(emb["b"])], dim=1))
    assert torch.allclose(out.logits, expected)


def test_missing_modality_and_bad_encoder_spec():
    with pytest.raises(KeyError, match="lacks modalities"):
        make_net()({"a": torch.randn(2, 20, 3)})
    with pytest.raises(ValueError, match="no 'name'"):
        build_encoder({"hidden": 3}, (4,))
    with pytest.raises(KeyError, match="registered"):
        build_encoder({"name": "nope"}, (4,))
    with pytest.raises(ValueError, match="encoder 'mlp' has no option 'widht'; its options: "
                                         "hidden, out_dim"):
        build_encoder({"name": "mlp", "widht": 3}, (4,))
    assert {"mlp", "tcn"} <= set(ENCODERS.names())
