"""Every registered algorithm, with and without MER-DG, on 2 and 3 modalities."""

import math

import pytest
import torch

from merdg.algorithms import ALGORITHMS, ERM, MERDG, get_algorithm_class, with_mer
from merdg.datasets import build_dataset
from merdg.datasets.base import DomainConcat, collate
from merdg.run.config import RunConfig
from merdg.run.training import build_algorithm, run_hparams

ALGORITHM_NAMES = sorted(set(ALGORITHMS.names()) | {f"{n}+MER" for n in ALGORITHMS.names()
                                                    if n != "MERDG"})


def small_setup(algorithm, modalities, tiny_hparams):
    ds = build_dataset("synthetic", modalities=modalities, samples_per_domain=24, n_classes=3)
    tiny_hparams["encoders"] = {m: tiny_hparams["encoders"][m] for m in ds.modalities}
    config = RunConfig(dataset="synthetic", target="d0", algorithm=algorithm,
                       hparams=tiny_hparams)
    hparams = run_hparams(config, ds)
    algo = build_algorithm(ds, algorithm, 3, hparams)
    data = DomainConcat([ds.domain_samples(d) for d in ("d1", "d2", "d3")])
    batch = collate(data.__getitems__(list(range(0, 72, 6))))
    return algo, batch


@pytest.mark.parametrize("modalities", [["m0", "m1"], ["m0", "m1", "m2"]])
@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_algorithm_updates_and_predicts(name, modalities, tiny_hparams):
    torch.manual_seed(0)
    algo, batch = small_setup(name, modalities, tiny_hparams)
    before = [p.detach().clone() for p in algo.parameters()]
    for _ in range(3):
        logs = algo.update(batch)
    assert all(isinstance(v, float) and v == v for v in logs.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, algo.parameters()))
    assert algo.predict(batch.x).shape == (len(batch), 3)
    dropped = algo.evaluate(batch.x, zero=[modalities[0]])
    assert dropped.logits.shape == (len(batch), 3)
    if name.endswith("+MER") or name == "MERDG":
        assert "mer" in logs
        for m in modalities:  # SimMMDG/MOOSA: "mer_spec/<m>/shared" and ".../specific"
            assert any(k == f"mer_spec/{m}" or k.startswith(f"mer_spec/{m}/") for k in logs)


def test_mer_composition_is_one_line_and_cached():
    assert get_algorithm_class("ERM+MER") is MERDG is with_mer(ERM)
    assert MERDG.__name__ == "MERDG" and issubclass(MERDG, ERM)
    assert MERDG.HPARAMS["mer_lambda"].default == 3.0
    with pytest.raises(KeyError, match="registered"):
        get_algorithm_class("Nope+MER")
    with pytest.raises(KeyError, match="registered"):
        get_algorithm_class("Nope")


def test_merdg_objective_adds_lambda_times_mer(tiny_hparams):
    torch.manual_seed(0)
    algo, batch = small_setup("MERDG", ["m0", "m1"], tiny_hparams)
    algo.eval()  # no dropout: two forward passes agree
    obj = algo.objective(batch)
    base = ERM.objective(algo, batch)
    assert torch.allclose(obj.loss, base.loss + 3.0 * obj.logs["mer"], rtol=1e-5)
    proj = algo.net.project(base.out.embeddings)
    assert torch.allclose(obj.logs["mer"], algo.mer(proj), rtol=1e-5)


@pytest.mark.parametrize("target", ["embedding", "normalized_projection"])
def test_mer_target_options(target, tiny_hparams):
    tiny_hparams["mer_target"] = target
    algo, batch = small_setup("MERDG", ["m0", "m1"], tiny_hparams)
    obj = algo.objective(batch)
    feats = algo.mer_features(batch, obj)
    if target == "embedding":
        assert feats["m0"].shape[1] == algo.net.dims["m0"]
    else:
        assert torch.allclose(feats["m0"].norm(dim=1), torch.ones(len(batch)), atol=1e-5)


def test_non_finite_loss_raises(tiny_hparams):
    algo, batch = small_setup("ERM", ["m0", "m1"], tiny_hparams)
    batch.x["m0"][0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        algo.update(batch)


def test_bf16_autocast_keeps_mer_in_float32(tiny_hparams):
    algo, batch = small_setup("MERDG", ["m0", "m1"], tiny_hparams)
    algo.set_precision("bf16")
    with algo.autocast():
        obj = algo.objective(batch)
    assert obj.out.logits.dtype == torch.bfloat16
    assert obj.logs["mer"].dtype == torch.float32
    logs = algo.update(batch)
    assert math.isfinite(logs["mer"]) and logs["mer"] > 0  # N < D: the log-det term is > 0
    with pytest.raises(ValueError, match="precision"):
        algo.set_precision("fp8")


def test_forward_wrapper_is_used_and_not_a_submodule(tiny_hparams):
    algo, batch = small_setup("ERM", ["m0", "m1"], tiny_hparams)
    calls = []

    def wrapper(b):
        calls.append(len(b))
        return algo(b)

    n_modules = len(list(algo.modules()))
    algo.set_forward_wrapper(wrapper)
    algo.update(batch)
    assert calls == [len(batch)] and len(list(algo.modules())) == n_modules


def test_logged_terms_are_read_at_once_and_exactly():
    """The loss and the logged terms are read in one transfer; values of any dtype arrive
    exactly as float() reads them (float64 is not narrowed, float32 not rounded)."""
    from merdg.algorithms.base import Objective, _as_floats

    logs = {"a": torch.tensor(1 / 3, dtype=torch.float64), "b": torch.tensor(0.1),
            "c": 2.5, "d": torch.tensor(7)}
    loss, floats = _as_floats(Objective(torch.tensor(0.7), logs, None, {}))
    assert loss == float(torch.tensor(0.7))
    assert floats == {"a": 1 / 3, "b": float(torch.tensor(0.1)), "c": 2.5, "d": 7.0}
    same = {"a": torch.tensor(0.1), "b": torch.tensor(1e-8)}
    loss, floats = _as_floats(Objective(torch.tensor(float("nan")), same, None, {}))
    assert math.isnan(loss) and floats == {k: float(v) for k, v in same.items()}
