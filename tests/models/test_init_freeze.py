"""Encoder initialization from pretrained weights (--init PATH) and freezing (--freeze)."""

import copy
import json
from typing import ClassVar

import pytest
import torch
from torch import nn

from merdg.algorithms import ALGORITHMS
from merdg.datasets import DomainDataset, build_dataset
from merdg.datasets.base import DomainConcat, TensorSamples, collate
from merdg.models import build_encoder
from merdg.models.baseline_modules import LayerNormEncoder
from merdg.models.pretrained import CheckpointError
from merdg.models.transfer import (
    encoder_blocks,
    freeze,
    held_batchnorm_count,
    load_encoder_weights,
)
from merdg.run.config import RunConfig
from merdg.run.training import build_algorithm, run_hparams, train

ALGORITHM_NAMES = sorted(ALGORITHMS.names())


def synthetic_algorithm(name, tiny_hparams, seed=0, samples=24):
    ds = build_dataset("synthetic", samples_per_domain=samples, n_classes=3)
    hparams = run_hparams(RunConfig("synthetic", "d0", name, hparams=tiny_hparams), ds)
    torch.manual_seed(seed)
    return ds, build_algorithm(ds, name, 3, hparams)


def synthetic_batch(ds):
    data = DomainConcat([ds.domain_samples(d) for d in ("d1", "d2", "d3")])
    return collate(data.__getitems__(list(range(0, 72, 6))))


def encoder_tensors(net):
    return {f"{m}.{k}": v.clone() for m, e in net.encoders.items()
            for k, v in e.state_dict().items()}


# --------------------------------------------------------------------------------------------
# Loading


def test_a_runs_model_pt_round_trips_every_encoder_tensor(tmp_path, tiny_hparams):
    config = RunConfig("synthetic", "d0", "ERM", seed=3, hparams=tiny_hparams,
                       dataset_options={"samples_per_domain": 30, "n_classes": 3},
                       out_dir=str(tmp_path / "run"))
    train(config, progress=False)
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=False)["state_dict"]
    _, fresh = synthetic_algorithm("ERM", tiny_hparams, seed=11, samples=30)
    classifier = {k: v.clone() for k, v in fresh.net.classifier.state_dict().items()}
    report = load_encoder_weights(fresh.net, tmp_path / "run" / "model.pt")
    loaded = encoder_tensors(fresh.net)
    assert loaded and all(torch.equal(v, saved[f"net.encoders.{k}"]) for k, v in loaded.items())
    assert sum(k.startswith("net.encoders.") for k in saved) == len(loaded)
    # only the encoders: the fusion classifier keeps its own initialization
    assert all(torch.equal(v, fresh.net.classifier.state_dict()[k])
               for k, v in classifier.items())
    summary = report.summary()
    assert summary["layout"] == "run" and summary["strict"]
    assert {m: r["loaded"] for m, r in summary["encoders"].items()} == {"m0": 4, "m1": 4, "m2": 4}
    assert summary["ignored"]["net.classifier."] == 4 and "net.probes." in summary["ignored"]
    json.dumps(summary)  # goes into run records as is
    assert "layout 'run'" in report.text()


@pytest.mark.parametrize("layout", ["encoders", "net", "module", "entry"])
def test_plain_state_dict_layouts(tmp_path, tiny_hparams, layout):
    _, source = synthetic_algorithm("ERM", tiny_hparams, seed=1)
    _, target = synthetic_algorithm("ERM", tiny_hparams, seed=2)
    plain = encoder_tensors(source.net)
    state = {"encoders": plain,
             "net": source.net.state_dict(),
             "module": {f"module.{k}": v for k, v in plain.items()},
             "entry": {"model_state_dict": plain, "epoch": 4}}[layout]
    torch.save(state, tmp_path / "enc.pt")
    report = load_encoder_weights(target, str(tmp_path / "enc.pt"))  # an algorithm: its .net
    assert all(torch.equal(v, encoder_tensors(target.net)[k]) for k, v in plain.items())
    assert report.layout == ("net" if layout == "net" else "encoders")
    # an in-memory state dict and a {modality: encoder} mapping work too
    _, other = synthetic_algorithm("ERM", tiny_hparams, seed=4)
    load_encoder_weights(dict(other.net.encoders), plain, modalities=["m1"])
    assert torch.equal(other.net.encoders["m1"].net[1].weight, plain["m1.net.1.weight"])
    assert not torch.equal(other.net.encoders["m0"].net[1].weight, plain["m0.net.1.weight"])


def test_strict_mismatch_names_file_and_keys_and_loads_nothing(tmp_path, tiny_hparams):
    _, source = synthetic_algorithm("ERM", tiny_hparams, seed=1)
    state = encoder_tensors(source.net)
    state["m1.net.1.weight"] = torch.zeros(5, 32)  # wrong shape
    del state["m2.net.3.bias"]  # missing
    state["m0.extra.weight"] = torch.zeros(1)  # unexpected
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    _, target = synthetic_algorithm("ERM", tiny_hparams, seed=2)
    before = encoder_tensors(target.net)
    with pytest.raises(CheckpointError) as err:
        load_encoder_weights(target.net, path)
    message = str(err.value)
    assert str(path) in message and "nothing was loaded" in message
    assert "the m1 encoder (MLPEncoder)" in message
    assert "m1" in message and "net.1.weight: file (5, 32) vs module (16, 32)" in message
    assert "missing from the file: net.3.bias" in message
    assert "unexpected in the file: extra.weight" in message
    assert all(torch.equal(v, encoder_tensors(target.net)[k]) for k, v in before.items())
    # non-strict: what matches loads, the rest is reported
    report = load_encoder_weights(target.net, path, strict=False)
    assert torch.equal(target.net.encoders["m0"].net[1].weight, state["m0.net.1.weight"])
    assert torch.equal(target.net.encoders["m1"].net[1].weight, before["m1.net.1.weight"])
    assert report.encoders["m1"].mismatched and report.encoders["m2"].missing == ["net.3.bias"]
    assert "NOT strict" in report.text()


def test_modality_selection_and_errors(tmp_path, tiny_hparams):
    _, source = synthetic_algorithm("ERM", tiny_hparams, seed=1)
    state = {k: v for k, v in encoder_tensors(source.net).items() if not k.startswith("m2.")}
    torch.save(state, tmp_path / "two.pt")
    _, target = synthetic_algorithm("ERM", tiny_hparams, seed=2)
    with pytest.raises(CheckpointError, match=r"no encoder for \['m2'\].*holds encoders"):
        load_encoder_weights(target.net, tmp_path / "two.pt")
    report = load_encoder_weights(target.net, tmp_path / "two.pt", modalities=["m0", "m1"])
    assert sorted(report.encoders) == ["m0", "m1"] and report.unused_modalities == []
    report = load_encoder_weights(target.net, tmp_path / "two.pt", modalities=["m0"])
    assert report.unused_modalities == ["m1"]
    with pytest.raises(KeyError, match="not among the network"):
        load_encoder_weights(target.net, tmp_path / "two.pt", modalities=["rgb"])
    torch.save({"classifier.0.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"holds encoders \['classifier'\]"):
        load_encoder_weights(target.net, tmp_path / "other.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="holds no encoder weights"):
        load_encoder_weights(target.net, tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder_weights(target.net, tmp_path / "absent.pt")


class Opaque:
    pass


def test_files_with_code_objects_are_refused(tmp_path, tiny_hparams):
    _, source = synthetic_algorithm("ERM", tiny_hparams, seed=1)
    torch.save({"state_dict": encoder_tensors(source.net), "meta": Opaque()}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_encoder_weights(source.net, tmp_path / "x.pt")


def test_mbcd_wrapped_encoders_load_both_ways(tmp_path, tiny_hparams):
    _, mbcd = synthetic_algorithm("MBCD", tiny_hparams, seed=1)
    torch.save({"state_dict": mbcd.state_dict()}, tmp_path / "mbcd.pt")
    _, erm = synthetic_algorithm("ERM", tiny_hparams, seed=2)
    report = load_encoder_weights(erm.net, tmp_path / "mbcd.pt")
    inner = mbcd.net.encoders["m0"].encoder
    assert isinstance(mbcd.net.encoders["m0"], LayerNormEncoder)
    assert torch.equal(erm.net.encoders["m0"].net[3].weight, inner.net[3].weight)
    assert report.encoders["m0"].ignored == ["norm.bias", "norm.weight"]
    # a bare encoder into the wrapped one: its LayerNorm keeps its initialization
    _, mbcd2 = synthetic_algorithm("MBCD", tiny_hparams, seed=3)
    norm = mbcd2.net.encoders["m0"].norm.weight.clone()
    report = load_encoder_weights(mbcd2.net, encoder_tensors(erm.net))
    assert torch.equal(mbcd2.net.encoders["m0"].encoder.net[3].weight, inner.net[3].weight)
    assert torch.equal(mbcd2.net.encoders["m0"].norm.weight, norm)
    assert report.encoders["m0"].not_loaded == ["norm.bias", "norm.weight"]


# --------------------------------------------------------------------------------------------
# Blocks and all-but-last

TINY_PAPER = {"slowfast": ((3, 32, 16, 16), {"width": 8, "stage_blocks": [1, 1, 1, 1]}),
              "slowonly": ((2, 8, 16, 16), {"width": 4, "stage_blocks": [1, 1, 1, 1]}),
              "vggsound_resnet": ((1, 64, 96), {"width": 4, "stage_blocks": [1, 1, 1, 1]})}
ENCODER_CASES = {
    "mlp": ((32,), {"hidden": 8, "out_dim": 4, "layers": 3}),
    "tcn": ((16, 4), {"channels": [4, 6, 8]}),
    "cnn3d": ((4, 8, 8), {"channels": [2, 3]}),
    **{name: (shape, {**options, "freeze_trunk": False})
       for name, (shape, options) in TINY_PAPER.items()},
}


def make_encoder(name):
    shape, options = ENCODER_CASES[name]
    return build_encoder({"name": name, **options}, shape)


def under(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("name", [*ENCODER_CASES, "layernorm-mlp"])
def test_all_but_last_leaves_exactly_the_last_block_trainable(name):
    encoder = LayerNormEncoder(make_encoder("mlp")) if name == "layernorm-mlp" else \
        make_encoder(name)
    blocks = encoder_blocks(encoder)
    params = [n for n, _ in encoder.named_parameters()]
    assert len(blocks) >= 2
    assert all(under(n, [b for block in blocks for b in block]) for n in params), \
        "every parameter belongs to a block"
    report = freeze({"x": encoder}, "all-but-last")
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {n for n in params if under(n, blocks[-1])}
    norms = [n for n, m in encoder.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert report.encoders["x"]["held_batchnorm"] == sum(not under(n, blocks[-1]) for n in norms)
    assert report.encoders["x"]["trainable_tensors"] == len(trainable)


@pytest.mark.parametrize("name", list(TINY_PAPER))
def test_paper_encoders_freeze_their_trunk_with_all_but_last(name):
    shape, options = TINY_PAPER[name]
    default = build_encoder({"name": name, **options}, shape)
    generic = build_encoder({"name": name, **options, "freeze_trunk": False}, shape)
    freeze({"x": generic}, "all-but-last", bn="frozen" if default.trunk_bn == "eval" else "train")
    assert [p.requires_grad for p in default.parameters()] == \
        [p.requires_grad for p in generic.parameters()]
    assert held_batchnorm_count(default) == held_batchnorm_count(generic)
    assert (held_batchnorm_count(default) > 0) == (default.trunk_bn == "eval")


def test_prefixes_respect_boundaries_and_accept_run_names(tiny_hparams):
    # Linear layers net.1, net.3, ..., net.11 (a new dict: the fixture's inner dicts are shared)
    tiny_hparams["encoders"]["m0"] = {**tiny_hparams["encoders"]["m0"], "layers": 6}
    _, algo = synthetic_algorithm("ERM", tiny_hparams)
    report = freeze(algo.net, "m0.net.1,net.encoders.m1.net.3.weight, encoders.m2")
    frozen = {f"{m}.{n}" for m, e in algo.net.encoders.items()
              for n, p in e.named_parameters() if not p.requires_grad}
    assert frozen == {"m0.net.1.weight", "m0.net.1.bias", "m1.net.3.weight", "m2.net.1.weight",
                      "m2.net.1.bias", "m2.net.3.weight", "m2.net.3.bias"}
    assert report.encoders["m2"]["trainable_tensors"] == 0
    assert report.encoders["m0"]["frozen_params"] == 16 * 32 + 16
    for bad in ("m9", "m0.net.2", "m0.net.13", "m0.ne"):  # net.2 is a ReLU: no parameter
        with pytest.raises(ValueError, match=r"matches no encoder parameter.*'m0.net'"):
            freeze(algo.net, bad)
    with pytest.raises(ValueError, match="bn must be"):
        freeze(algo.net, "m0", bn="eval")


class Plain(nn.Module):
    out_dim = 2

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)


def test_all_but_last_needs_declared_blocks():
    with pytest.raises(TypeError, match="block_names"):
        freeze({"x": Plain()}, "all-but-last")
    freeze({"x": Plain()}, "x.fc")  # prefixes work on any encoder


# --------------------------------------------------------------------------------------------
# Freezing over real updates


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_frozen_parameters_do_not_change_over_updates(name, tiny_hparams):
    ds, algo = synthetic_algorithm(name, tiny_hparams)
    freeze(algo.net, "all-but-last")
    algo.configure_optimizer()
    before = {n: p.detach().clone() for n, p in algo.named_parameters()}
    batch = synthetic_batch(ds)
    for _ in range(3):
        algo.train()
        algo.update(batch)
    after = dict(algo.named_parameters())
    frozen = [n for n, p in after.items() if not p.requires_grad and n.startswith("net.enc")]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    last = [n for n in after if ".encoders.m0." in n and ".net.3." in n]
    assert last and any(not torch.equal(before[n], after[n]) for n in last)


class SequenceDomains(DomainDataset):
    """Two domains of (T, C) sequences and (T, H, W) clips, for BatchNorm encoders."""

    ALL_MODALITIES = ("clip", "seq")
    ENCODERS: ClassVar[dict] = {"seq": {"name": "tcn", "channels": [4, 6, 8]},
                                "clip": {"name": "cnn3d", "channels": [2, 3, 4]}}

    def __init__(self, root=None, modalities=None):
        self.modalities = self.select_modalities(modalities)
        self.domains, self.num_classes, self.class_names = ["a", "b"], 3, ["x", "y", "z"]
        g = torch.Generator().manual_seed(0)
        self._samples = {d: TensorSamples({"seq": torch.randn(12, 16, 4, generator=g),
                                           "clip": torch.randn(12, 4, 8, 8, generator=g)},
                                          torch.arange(12) % 3) for d in self.domains}

    def input_shape(self, modality):
        return {"seq": (16, 4), "clip": (4, 8, 8)}[modality]

    def domain_samples(self, domain):
        return self._samples[domain]


def batchnorm_state(algo, last):
    """Running statistics of the encoders' BatchNorm layers in (last) or out of their last
    block."""
    out = {}
    for m, encoder in algo.net.encoders.items():
        final = encoder_blocks(encoder)[-1]
        for n, module in encoder.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and under(n, final) == last:
                out.update({f"{m}.{n}.{k}": v.clone() for k, v in module.state_dict().items()
                            if "running" in k or "num_batches" in k})
    return out


@pytest.mark.parametrize("bn", ["frozen", "train"])
def test_batchnorm_statistics_follow_the_choice(bn, tiny_hparams):
    ds = SequenceDomains()
    hparams = run_hparams(RunConfig("x", "b", "ERM", hparams={"proj_hidden": 8,
                                                               "fusion_hidden": 8}), ds)
    algo = build_algorithm(ds, "ERM", 1, hparams)
    freeze(algo.net, "all-but-last", bn=bn)
    algo.configure_optimizer()
    frozen_before, last_before = batchnorm_state(algo, False), batchnorm_state(algo, True)
    affine_before = {n: p.clone() for n, p in algo.net.named_parameters() if not p.requires_grad}
    batch = collate(DomainConcat([ds.domain_samples("a")]).__getitems__(list(range(12))))
    for _ in range(2):
        algo.train()  # what the training loop does every epoch
        algo.update(batch)
    moved = {k: not torch.equal(v, batchnorm_state(algo, False)[k])
             for k, v in frozen_before.items()}
    assert frozen_before and (all(moved.values()) if bn == "train" else not any(moved.values()))
    assert all(not torch.equal(v, batchnorm_state(algo, True)[k]) for k, v in last_before.items())
    assert all(torch.equal(p, dict(algo.net.named_parameters())[n])
               for n, p in affine_before.items())
    # the choice survives deep copies (EMA teachers) and SyncBatchNorm conversion
    copies = [copy.deepcopy(algo.net), nn.SyncBatchNorm.convert_sync_batchnorm(
        copy.deepcopy(algo.net))]
    for net in copies:
        before = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
        net.train()
        net(batch.x)
        changed = [k for k, v in before.items() if not torch.equal(v, net.state_dict()[k])]
        held = [k for k in changed if k.startswith("encoders.") and ".blocks.7." not in k]
        assert bool(held) == (bn == "train")
        assert any(".blocks.7." in k for k in changed)  # the last block's BatchNorm trains
