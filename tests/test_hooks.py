"""FeatureTap: attaching MER-DG to a user's model, and the README's three-line example."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import merdg
from merdg import FeatureTap

README = Path(__file__).resolve().parents[1] / "README.md"


class TwoEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.video = nn.Conv3d(3, 6, 3, padding=1)  # (N, 6, T, H, W)
        self.audio = nn.GRU(5, 7, batch_first=True)  # ((N, L, 7), h)
        self.text = nn.Linear(4, 3)
        self.head = nn.Linear(6 + 7, 2)

    def forward(self, v, a, use_text=False):
        fv = self.video(v).mean(dim=(2, 3, 4))
        fa = self.audio(a)[0].mean(dim=1)
        if use_text:
            self.text(torch.zeros(v.shape[0], 4))
        return self.head(torch.cat([fv, fa], 1))


def inputs(n=6):
    return torch.randn(n, 3, 2, 4, 4), torch.randn(n, 9, 5)


def test_captures_pooled_outputs_and_removes_hooks():
    model = TwoEncoder()
    tap = FeatureTap(model, {"video": "video", "audio": "audio"},
                     pool={"video": "avg", "audio": "tokens"}, select=lambda o: o[0]
                     if isinstance(o, tuple) else o)
    model(*inputs())
    feats = tap.features
    assert feats["video"].shape == (6, 6) and feats["audio"].shape == (6, 7)
    assert tap.modalities == ["audio", "video"]
    merdg.MERLoss()(feats).backward()
    assert model.video.weight.grad is not None  # gradients reach the encoders
    tap.remove()
    assert not model._forward_pre_hooks and not model.video._forward_hooks
    model(*inputs())
    with pytest.raises(RuntimeError, match="no output captured"):
        _ = tap.features


def test_features_reset_every_forward_pass():
    model = TwoEncoder()
    with FeatureTap(model, {"text": "text"}) as tap:
        model(*inputs(), use_text=True)
        assert tap.features["text"].shape == (6, 3)
        model(*inputs(), use_text=False)  # the text encoder did not run: nothing stale
        with pytest.raises(RuntimeError, match=r"\['text'\]"):
            _ = tap.features
    assert not model.text._forward_hooks


def test_errors_name_the_culprit():
    model = TwoEncoder()
    with pytest.raises(KeyError, match="close names: \\['video'\\]"):
        FeatureTap(model, {"video": "vidoe"})
    with pytest.raises(ValueError, match="unknown pool"):
        FeatureTap(model, {"video": "video"}, pool="max")
    tap = FeatureTap(model, {"video": "video"})  # pool "none" on a 5-D feature map
    with pytest.raises(ValueError, match=r"'video' \(video\) gives shape \(6, 6, 2, 4, 4\)"):
        model(*inputs())
    tap.remove()
    FeatureTap(model, {"audio": "audio"}, pool="tokens")
    with pytest.raises(TypeError, match="returned tuple; pass select="):
        model(*inputs())


def test_flatten_pool_and_callable():
    model = TwoEncoder()
    with FeatureTap(model, {"v": "video"}, pool="flatten") as tap:
        model(*inputs())
        assert tap.features["v"].shape == (6, 6 * 2 * 4 * 4)
    with FeatureTap(model, {"v": "video"}, pool=lambda o: o.amax(dim=(2, 3, 4))) as tap:
        model(*inputs())
        assert tap.features["v"].shape == (6, 6)


def test_readme_three_line_example_runs_and_trains():
    text = README.read_text()
    section = text[text.index("## MER-DG in three lines"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.count("# 1") == code.count("# 2") == code.count("# 3") == 1
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(code, str(README), "exec"), namespace)
    assert torch.isfinite(namespace["loss"])
    feats = namespace["tap"].features
    assert feats["video"].shape == (16, 16) and feats["audio"].shape == (16, 32)
    # the example really trains: the combined loss fell over its steps
    model, mer, tap = namespace["model"], namespace["mer"], namespace["tap"]
    first = torch.nn.functional.cross_entropy(model(namespace["video"], namespace["audio"]),
                                              namespace["y"]) + 3.0 * mer(tap.features)
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(namespace["video"], namespace["audio"]),
                                                 namespace["y"]) + 3.0 * mer(tap.features)
        namespace["optimizer"].zero_grad()
        loss.backward()
        namespace["optimizer"].step()
    assert loss.item() < first.item()
