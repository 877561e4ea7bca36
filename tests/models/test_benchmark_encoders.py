"""MMDG-Bench's encoders and heads: the HUST 1-D CNN, the MMSA sequence Transformer with its
padding mask, the linear and residual fusion heads."""

import pytest
import torch

from merdg.models import MultimodalNet, build_encoder
from merdg.models.heads import ResidualFusion, fusion_head
from merdg.models.transformer import sinusoidal_positions


def test_the_hust_cnn_maps_a_1024_window_to_128_features():
    encoder = build_encoder({"name": "cnn1d"}, (1024, 1))
    assert encoder(torch.randn(3, 1024, 1)).shape == (3, 128) and encoder.out_dim == 128
    convs = [m for m in encoder.blocks if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (1, 8, 32), (8, 16, 8), (16, 32, 3), (32, 32, 3)]
    with pytest.raises(ValueError, match="too short"):
        build_encoder({"name": "cnn1d"}, (40, 1))


def test_the_sequence_transformer_masks_padding_and_reads_step_zero():
    torch.manual_seed(0)
    spec = {"name": "sequence_transformer", "dim": 16, "heads": 4, "layers": 2}
    encoder = build_encoder(spec, (10, 6)).eval()
    x = torch.randn(2, 10, 6)
    x[:, 7:] = 0.0  # 3 padded steps
    out = encoder(x)
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    # masked: the padded sequence gives what its 7 valid steps alone give
    assert torch.allclose(out, encoder(x[:, :7]), atol=1e-5)
    unmasked = build_encoder({**spec, "mask_padding": False}, (10, 6)).eval()
    unmasked.load_state_dict(encoder.state_dict())
    assert not torch.allclose(unmasked(x), unmasked(x[:, :7]), atol=1e-5)  # the benchmark's
    assert torch.isfinite(encoder(torch.zeros(2, 10, 6))).all()  # an all-padding sequence
    with pytest.raises(ValueError, match="multiple of heads"):
        build_encoder({"name": "sequence_transformer", "dim": 10, "heads": 4}, (10, 6))


def test_sinusoidal_positions_have_fairseqs_layout():
    table = sinusoidal_positions(5, 8)
    assert table.shape == (5, 8)
    assert torch.allclose(table[:, 0], torch.sin(torch.arange(1.0, 6.0)))  # frequency 1
    assert torch.allclose(table[:, 4], torch.cos(torch.arange(1.0, 6.0)))


def test_fusion_heads_and_one_output_for_regression():
    assert isinstance(fusion_head("linear", 256, 6, 0, 0.0), torch.nn.Linear)
    head = ResidualFusion(120, 1, 40, 0.0)
    x = torch.randn(4, 120)
    h = head.inp(x)
    assert torch.allclose(head(x), head.out(h + head.block(h)))
    with pytest.raises(ValueError, match="fusion head must be one of"):
        fusion_head("attention", 4, 2, 4, 0.0)
    encoders = {m: build_encoder({"name": "mlp", "hidden": 4, "out_dim": 4}, (3,))
                for m in ("a", "b")}
    net = MultimodalNet(encoders, 3, fusion_hidden=8, task="regression", fusion="residual")
    out = net({m: torch.randn(5, 3) for m in ("a", "b")})
    assert out.logits.shape == (5, 1) and out.probe_logits["a"].shape == (5, 3)
