"""Wiring of the baselines: where MER-DG attaches, teachers, jigsaw labels, GMP's gradients."""

import pytest
import torch
from torch import nn

from merdg.algorithms import ALGORITHMS, MER_HPARAMS
from merdg.algorithms.building_blocks import flat_grad, leave_one_out_ratios, modulate_gradients
from merdg.datasets import build_dataset
from merdg.datasets.base import DomainConcat, collate
from merdg.hparams import TRAINING_HPARAMS
from merdg.run.config import RunConfig
from merdg.run.training import build_algorithm, run_hparams


def setup(algorithm, tiny_hparams, modalities=("m0", "m1", "m2"), **hparams):
    torch.manual_seed(0)
    ds = build_dataset("synthetic", modalities=list(modalities), samples_per_domain=24,
                       n_classes=3)
    tiny_hparams["encoders"] = {m: tiny_hparams["encoders"][m] for m in ds.modalities}
    config = RunConfig(dataset="synthetic", target="d0", algorithm=algorithm,
                       hparams={**tiny_hparams, **hparams})
    algo = build_algorithm(ds, algorithm, 3, run_hparams(config, ds))
    data = DomainConcat([ds.domain_samples(d) for d in ("d1", "d2", "d3")])
    return algo, collate(data.__getitems__(list(range(0, 72, 6))))


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_hparams_do_not_shadow_training_or_mer_hparams(name):
    shadowed = set(ALGORITHMS.get(name).HPARAMS) & (set(TRAINING_HPARAMS) | set(MER_HPARAMS))
    assert name == "MERDG" or not shadowed


def test_loss_is_the_weighted_sum_of_the_logged_terms(tiny_hparams):
    for name in ("SimMMDG", "MOOSA", "CMC", "NEL", "RNANet", "CMRF", "MBCD", "JAT", "GMP"):
        algo, batch = setup(name, tiny_hparams)
        obj = algo.objective(batch)
        total = sum(algo.weights[k] * v for k, v in obj.logs.items())
        assert torch.allclose(obj.loss, total), name


def test_simmmdg_mer_on_shared_and_specific_heads(tiny_hparams):
    plain, _ = setup("SimMMDG", tiny_hparams)
    assert plain.specific_projectors is None  # no unused parameters without MER-DG
    algo, batch = setup("SimMMDG+MER", tiny_hparams)
    obj = algo.objective(batch)
    feats = algo.mer_features(batch, obj)
    assert set(feats) == {f"{m}/{h}" for m in ("m0", "m1", "m2") for h in ("shared", "specific")}
    for z in feats.values():  # SimMMDG's heads L2-normalize (official *_MERDG.py)
        assert z.shape == (len(batch), algo.hparams["proj_dim"])
        assert torch.allclose(z.norm(dim=1), torch.ones(len(batch)), atol=1e-5)
    # the specific heads are trained by MER only
    algo.update(batch)
    assert all(p.grad is not None for p in algo.specific_projectors.parameters())


@pytest.mark.parametrize("modalities,chunks", [(("m0", "m1"), 8), (("m0", "m1", "m2"), 6)])
def test_moosa_jigsaw_puzzles_and_labels_align(modalities, chunks, tiny_hparams):
    algo, batch = setup("MOOSA", tiny_hparams, modalities)
    total = sum(algo.net.dims.values())
    assert algo.jigsaw_index.shape == (128, total)
    # constant chunks with distinct values: each puzzle reveals its permutation
    chunk_of_column = torch.empty(total)
    start = 0
    for m in algo.modalities:
        for c in torch.arange(algo.net.dims[m]).tensor_split(chunks // len(modalities)):
            chunk_of_column[start:start + len(c)] = float(start)
            start += len(c)
    z = {m: part.expand(5, -1) for m, part in zip(
        algo.modalities, chunk_of_column.split([algo.net.dims[m] for m in algo.modalities]))}
    reference = chunk_of_column[algo.jigsaw_index]  # (P, total)

    class Oracle(nn.Module):  # logit 50 for the permutation that produced the row
        def forward(self, rows):
            return 50.0 * (rows[:, None, :] == reference[None]).all(dim=2).float()

    algo.jigsaw_classifier = Oracle()
    assert algo.jigsaw_term(z).item() < 1e-6


def test_gmp_update_applies_modulated_gradients(tiny_hparams):
    algo, batch = setup("GMP", tiny_hparams, alpha_k=1.0, alpha_p=1.0)
    algo.eval()  # deterministic forward passes
    obj = algo.objective(batch)
    algo.optimizer.zero_grad()
    corrections = algo.gradient_corrections(obj)
    obj.loss.backward(retain_graph=True)
    for p, g in corrections:
        p.grad += g
    assert any(g.abs().max() > 0 for _, g in corrections)  # the modulation changed something
    gmp, w = obj.extras["gmp"], algo.weights
    rest = obj.loss - w["uni_ce"] * obj.logs["uni_ce"] - w["domain"] * obj.logs["domain"]
    sem = leave_one_out_ratios(gmp["sem_conf"])
    dom = leave_one_out_ratios(gmp["dom_conf"], inverse=True)
    for m in algo.modalities:
        params = algo.modality_parameters(m)
        expected = flat_grad(rest, params) + modulate_gradients(
            flat_grad(w["uni_ce"] * gmp["cls"][m], params),
            flat_grad(w["domain"] * gmp["dom"][m], params), sem[m], dom[m], 1.0, 1.0)
        actual = torch.cat([p.grad.reshape(-1) for p in params])
        assert torch.allclose(actual, expected, atol=1e-5), m
    # the domain discriminator is trained (MMDG-Bench's never receives a gradient)
    assert algo.domain_classifier[0].weight.grad.abs().sum() > 0


def test_gmp_and_jat_without_domain_adversary_for_one_source(tiny_hparams):
    for name in ("GMP", "JAT"):
        ds = build_dataset("synthetic", modalities=["m0", "m1"], samples_per_domain=24,
                           n_classes=3)
        tiny_hparams["encoders"] = {m: tiny_hparams["encoders"][m] for m in ds.modalities}
        config = RunConfig(dataset="synthetic", target="d0", algorithm=name,
                           hparams=tiny_hparams)
        algo = build_algorithm(ds, name, 1, run_hparams(config, ds))
        batch = collate(DomainConcat([ds.domain_samples("d1")]).__getitems__(list(range(12))))
        logs = algo.update(batch)
        assert not hasattr(algo, "domain_classifier") and "domain_local" not in logs


def test_cmrf_distills_after_sma_start_and_evaluates_the_teacher(tiny_hparams):
    algo, batch = setup("CMRF", tiny_hparams, sma_start_step=2)
    assert algo.objective(batch).logs["distill"].item() == 0.0
    for _ in range(4):
        logs = algo.update(batch)
    assert logs["distill"] > 0
    algo.eval()
    teacher = algo.teacher.average["net"](batch.x).logits
    assert torch.allclose(algo.evaluate(batch.x).logits, teacher)
    assert not torch.allclose(teacher, algo.net(batch.x).logits)  # an average, not the student
    with pytest.raises(ValueError, match="modality_weights"):
        setup("CMRF", tiny_hparams, modality_weights={"audio": 0.5})


@pytest.mark.parametrize("beta,same_as_student", [(0.0, True), (1.0, False)])
def test_mbcd_evaluates_its_ema_teacher(beta, same_as_student, tiny_hparams):
    algo, batch = setup("MBCD", tiny_hparams, ema_beta=beta, modality_drop_base=0.5)
    logs = algo.update(batch)
    assert {"kd_mm", "kd_um", "uni_ce"} <= set(logs)
    algo.eval()
    student = algo.net(batch.x).logits
    assert torch.allclose(algo.evaluate(batch.x).logits, student) == same_as_student


def test_translated_missing_modality_evaluation(tiny_hparams):
    algo, batch = setup("SimMMDG", tiny_hparams)
    for _ in range(2):
        algo.update(batch)
    algo.eval()
    x = {m: v for m, v in batch.x.items() if m != "m1"}  # the modality is really absent
    out = algo.evaluate_translated(x, ["m1"])
    assert out.logits.shape == (len(batch), 3) and torch.isfinite(out.logits).all()
    assert not torch.allclose(out.logits, algo.evaluate(batch.x, zero=["m1"]).logits)


def test_simmmdg_rejects_odd_embedding_widths(tiny_hparams):
    tiny_hparams["encoders"]["m0"] = {"hidden": 16, "out_dim": 7}
    with pytest.raises(ValueError, match="odd"):
        setup("SimMMDG", tiny_hparams, ("m0", "m1"))


def test_mbcd_logs_the_share_of_initial_weights_left_in_its_teacher(tiny_hparams):
    algo, batch = setup("MBCD", tiny_hparams, ema_beta=0.9, ema_warmup=False)
    shares = [algo.update(batch)["teacher_init_share"] for _ in range(3)]
    assert shares == pytest.approx([0.9, 0.81, 0.729])
    warmed, batch = setup("MBCD", tiny_hparams, ema_beta=0.999)  # the default: warm-up on
    shares = [warmed.update(batch)["teacher_init_share"] for _ in range(3)]
    assert shares == pytest.approx([1 / 10, 1 / 10 * 2 / 11, 1 / 10 * 2 / 11 * 3 / 12])
    cmrf, batch = setup("CMRF", tiny_hparams)
    assert "teacher_init_share" not in cmrf.update(batch)  # the SMA holds no initial weights
