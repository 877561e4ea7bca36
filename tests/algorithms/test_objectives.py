"""Objectives against independent expectations: MER-DG's own hparams (lambda, reduction), ERM's
probe term, every baseline's weights written out from its hparams' documentation, and the
SimMMDG / NEL terms recomputed by hand from the network's outputs.

Every expected value here is computed by the test (a second implementation of a formula, or a
table of weights), never read back from the algorithm under test.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from merdg.datasets import build_dataset
from merdg.datasets.base import DomainConcat, collate
from merdg.run.config import RunConfig
from merdg.run.training import build_algorithm, run_hparams

MODALITIES = ("m0", "m1")


def setup(algorithm, tiny_hparams, **hparams):
    torch.manual_seed(0)
    ds = build_dataset("synthetic", modalities=list(MODALITIES), samples_per_domain=24,
                       n_classes=3)
    tiny_hparams["encoders"] = {m: tiny_hparams["encoders"][m] for m in MODALITIES}
    config = RunConfig(dataset="synthetic", target="d0", algorithm=algorithm,
                       hparams={**tiny_hparams, **hparams})
    algo = build_algorithm(ds, algorithm, 3, run_hparams(config, ds))
    algo.eval()  # no dropout: two forward passes agree
    data = DomainConcat([ds.domain_samples(d) for d in ("d1", "d2", "d3")])
    return algo, collate(data.__getitems__(list(range(0, 72, 6))))


def reference_mer(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """MER(z) of docs/mer-loss.md, written out with other primitives (float64, eigenvalues)."""
    z = z.double()
    n, d = z.shape
    var = ((z - z.mean(0)) ** 2).sum(0) / (n - 1)
    marginal = torch.clamp(1.0 - torch.sqrt(var + eps), min=0.0).mean()
    centered = z - z.mean(0)
    biased_std = torch.sqrt((centered ** 2).mean(0))
    x = centered / torch.clamp(biased_std + eps, min=eps)
    corr = x.T @ x / (n - 1) + eps * torch.eye(d, dtype=z.dtype)
    spectral = -torch.log(torch.linalg.eigvalsh(corr)).sum() / d
    return marginal + spectral


def hand_erm_loss(out, y):
    """Fused CE + mean over modalities of the probes' CE (ERM's documented objective)."""
    probes = [F.cross_entropy(out.probe_logits[m], y) for m in MODALITIES]
    return F.cross_entropy(out.logits, y) + sum(probes) / len(probes)


# --- MER-DG: lambda and reduction change the loss and the gradients as documented ----------

@pytest.mark.parametrize("mer_lambda", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_merdg_loss_is_erm_plus_lambda_times_reduced_mer(mer_lambda, reduction, tiny_hparams):
    algo, batch = setup("MERDG", tiny_hparams, mer_lambda=mer_lambda, mer_reduction=reduction)
    obj = algo.objective(batch)
    proj = algo.net.project(obj.out.embeddings)
    per_modality = [reference_mer(proj[m]) for m in MODALITIES]
    mer = sum(per_modality) / (len(MODALITIES) if reduction == "mean" else 1)
    expected = hand_erm_loss(obj.out, batch.y).double() + mer_lambda * mer
    assert obj.loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)
    assert obj.logs["mer"].item() == pytest.approx(mer.item(), rel=1e-4)


def parameter_gradients(algo, batch):
    """Gradients in float64 (the log-det term is ill-conditioned in float32)."""
    algo.double()
    batch.x = {m: v.double() for m, v in batch.x.items()}
    algo.zero_grad(set_to_none=True)
    algo.objective(batch).loss.backward()
    return {n: p.grad.clone() for n, p in algo.named_parameters() if p.grad is not None}


def test_merdg_gradients_scale_with_lambda_and_reduction(tiny_hparams):
    """grad(lambda, reduction) = grad_ERM + lambda * c * grad_MERsum, c = 1 (sum) or 1/M."""
    grads = {}
    for lam, red in [(0.0, "sum"), (1.0, "sum"), (2.5, "sum"), (2.5, "mean")]:
        algo, batch = setup("MERDG", tiny_hparams, mer_lambda=lam, mer_reduction=red)
        grads[lam, red] = parameter_gradients(algo, batch)
    erm, _ = setup("ERM", tiny_hparams)
    erm_grads = parameter_gradients(erm, batch)
    # lambda = 0 is plain ERM: same gradients on every ERM parameter, none on the projectors
    # (which only MER-DG's term reads)
    for name, g in grads[0.0, "sum"].items():
        expected = erm_grads.get(name, torch.zeros_like(g))
        assert torch.allclose(g, expected, rtol=1e-10, atol=1e-12), name
    mer_direction = {n: grads[1.0, "sum"][n] - grads[0.0, "sum"][n] for n in grads[1.0, "sum"]}
    assert any(d.abs().max() > 1e-4 for d in mer_direction.values())  # MER moves the encoders
    for (lam, red), scale in [((2.5, "sum"), 2.5), ((2.5, "mean"), 2.5 / len(MODALITIES))]:
        for name, direction in mer_direction.items():
            expected = grads[0.0, "sum"][name] + scale * direction
            assert torch.allclose(grads[lam, red][name], expected, rtol=1e-7, atol=1e-10), \
                (lam, red, name)


def test_merdg_alpha_weights_reach_the_loss(tiny_hparams):
    """mer_alpha_marg = 0 leaves only L_spec; mer_alpha_spec = 0 only L_marg (docs/mer-loss)."""
    values = {}
    for a_marg, a_spec in [(1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (2.0, 0.5)]:
        algo, batch = setup("MERDG", tiny_hparams, mer_alpha_marg=a_marg, mer_alpha_spec=a_spec)
        obj = algo.objective(batch)
        marg = sum(obj.logs[f"mer_marg/{m}"] for m in MODALITIES)
        spec = sum(obj.logs[f"mer_spec/{m}"] for m in MODALITIES)
        assert obj.logs["mer"].item() == pytest.approx((a_marg * marg + a_spec * spec).item(),
                                                       rel=1e-5, abs=1e-6)
        values[a_marg, a_spec] = obj.logs["mer"].item()
    assert values[0.0, 1.0] != pytest.approx(values[1.0, 1.0])
    assert values[1.0, 0.0] != pytest.approx(values[1.0, 1.0])


def test_merdg_logs_are_finite_after_a_bf16_update(tiny_hparams):
    algo, batch = setup("MERDG", tiny_hparams)
    algo.train()
    algo.set_precision("bf16")
    logs = algo.update(batch)
    assert math.isfinite(logs["mer"]) and logs["mer"] > 0  # MER of a tiny batch: log-det > 0


# --- ERM: the probes' CE is part of the objective --------------------------------------------

def test_erm_objective_is_fused_ce_plus_mean_probe_ce(tiny_hparams):
    algo, batch = setup("ERM", tiny_hparams)
    obj = algo.objective(batch)
    assert obj.loss.item() == pytest.approx(hand_erm_loss(obj.out, batch.y).item(), rel=1e-6)
    obj.loss.backward()
    for m in MODALITIES:  # the probes train through the objective
        assert algo.net.probes[m].weight.grad is not None
        assert algo.net.probes[m].weight.grad.abs().max() > 0


# --- every baseline: loss = sum of its logged terms, weights written out by hand -------------

# weights from each hparam's documentation, with non-default values so that a weight read from
# the wrong hparam (or 1 - alpha read as alpha) shows
WEIGHTED = {
    "SimMMDG": ({"alpha_trans": 0.2, "alpha_contrast": 2.0, "explore_loss_coeff": 0.4},
                {"trans": 0.2, "supcon": 2.0, "dist": 0.4}),
    "MOOSA": ({"alpha_trans": 0.2, "alpha_contrast": 2.0, "explore_loss_coeff": 0.4,
               "entropy_min_weight": 0.03, "jigsaw_ratio": 0.6},
              {"trans": 0.2, "supcon": 2.0, "dist": 0.4, "entmin": 0.03, "jigsaw": 0.6}),
    "CMC": ({"alpha_contrast": 0.3}, {"contrast": 0.3}),
    "NEL": ({"alpha": 0.2, "beta": 0.05}, {"unc": 0.2, "supcon": 0.8, "nee": 0.05}),
    "RNANet": ({"alpha_rna": 0.4}, {"rna": 0.4}),
    "CMRF": ({"mix_coef": 1.5, "alpha_contrast": 0.7, "distill_coef": 2.5},
             {"uni_ce": 1.5, "supcon": 0.7, "distill": 2.5}),
    "MBCD": ({"kl_mm_coeff": 0.3, "kl_um_coeff": 0.6}, {"uni_ce": 1.0, "kd_mm": 0.3,
                                                        "kd_um": 0.6}),
    "JAT": ({"cls_loss": 2.0, "modal_adv_loss": 0.2, "domain_adv_loss": 0.4},
            {"uni_ce": 2.0, "modal_adv": 0.2, "domain_local": 0.4, "domain_global": 0.4}),
    "GMP": ({"cls_loss": 2.0, "domain_adv_loss_local": 0.4}, {"uni_ce": 2.0, "domain": 0.4}),
}


@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_loss_is_the_hand_weighted_sum_of_the_logged_terms(name, tiny_hparams):
    hparams, weights = WEIGHTED[name]
    weights = {"ce": 1.0, "probe_ce": 1.0, **weights}
    algo, batch = setup(name, tiny_hparams, **hparams)
    algo.train()
    obj = algo.objective(batch)
    assert set(obj.logs) == set(weights)
    total = sum(weights[k] * v for k, v in obj.logs.items())
    assert obj.loss.item() == pytest.approx(total.item(), rel=1e-6, abs=1e-7)


def test_nel_default_beta_is_one_over_the_batch_size(tiny_hparams):
    algo, batch = setup("NEL", tiny_hparams, alpha=0.25)
    obj = algo.objective(batch)
    weights = {"ce": 1.0, "probe_ce": 1.0, "unc": 0.25, "supcon": 0.75,
               "nee": 1.0 / tiny_hparams["batch_size"]}
    total = sum(weights[k] * v for k, v in obj.logs.items())
    assert obj.loss.item() == pytest.approx(total.item(), rel=1e-6)


# --- the terms themselves, recomputed from the outputs ---------------------------------------

def test_simmmdg_distance_term_is_minus_the_mean_half_mse(tiny_hparams):
    """SimMMDG pushes shared and specific halves apart: dist = -mean_m MSE(z_m[:D/2], z_m[D/2:])
    (official explore_loss: -MSE), so the term is <= 0 and minimizing it increases the MSE."""
    algo, batch = setup("SimMMDG", tiny_hparams)
    obj = algo.objective(batch)
    mses = []
    for m in MODALITIES:
        z = obj.out.embeddings[m].detach().numpy().astype(np.float64)
        half = z.shape[1] // 2
        mses.append(np.mean((z[:, :half] - z[:, half:]) ** 2))
    expected = -float(np.mean(mses))
    assert expected < 0
    assert obj.logs["dist"].item() == pytest.approx(expected, rel=1e-5)


def test_nel_entropy_term_by_hand_and_fused_over_modalities(tiny_hparams):
    """L_NEE = sum p log p over the trace-normalized spectrum of E^T E / N of the *fused*
    embedding of both views (2N rows), by numpy's eigenvalues."""
    algo, batch = setup("NEL", tiny_hparams, view_dropout=0.0)
    obj = algo.objective(batch)
    fused = np.concatenate([obj.out.embeddings[m].detach().numpy() for m in MODALITIES], axis=1)
    fused = fused.astype(np.float64)
    assert fused.shape[0] == 2 * len(batch)
    eig = np.linalg.eigvalsh(fused.T @ fused / fused.shape[0])
    p = eig[eig > 1e-6]
    p = p / p.sum()
    assert obj.logs["nee"].item() == pytest.approx(float((p * np.log(p)).sum()), rel=1e-4)


# --- the composition itself: with_mer on a fresh algorithm class ------------------------------

def test_with_mer_composes_hparams_batch_floor_names_and_docs():
    from merdg.algorithms import ERM, with_mer
    from merdg.algorithms.mer import MER_HPARAMS, MERTerm
    from merdg.hparams import HParam

    class Wide(ERM):
        """An ERM with its own hparam and a larger batch floor (test only)."""
        HPARAMS = {"width": HParam(3, "test width", kind="int", low=1)}
        MIN_BATCH = 4
        MIN_BATCH_REASON = "needs four"

    class Narrow(ERM):
        HPARAMS = {}

    wide, narrow = with_mer(Wide), with_mer(Narrow, "NarrowMER")
    assert with_mer(Wide) is wide  # one class per base
    assert wide.__name__ == wide.__qualname__ == "Wide+MER"
    assert narrow.__name__ == narrow.__qualname__ == "NarrowMER"
    assert wide.__module__ == "merdg.algorithms.mer"
    assert wide.__doc__ == "Wide + lambda * MER-DG (Yarici & AlRegib, ICML 2026)."
    assert wide.__mro__[1:3] == (MERTerm, Wide)
    assert wide.HPARAMS == {"width": Wide.HPARAMS["width"], **MER_HPARAMS}
    assert (wide.MIN_BATCH, wide.MIN_BATCH_REASON) == (4, "needs four")
    assert narrow.MIN_BATCH == 2
    assert narrow.MIN_BATCH_REASON == (
        "the MER-DG terms are batch statistics, 0 for a single sample: the run would be "
        "plain Narrow")
    twice = with_mer(narrow)  # a second term on top of the first, as before the mixin
    assert twice.__name__ == "NarrowMER+MER"
    assert [k.__name__ for k in twice.__mro__[:5]] == ["NarrowMER+MER", "MERTerm", "NarrowMER",
                                                        "MERTerm", "Narrow"]
    assert twice.__mro__[1] is not MERTerm and issubclass(twice.__mro__[1], MERTerm)


def test_merdg_built_by_keywords_and_its_target_checked(tiny_hparams):
    from merdg.algorithms import MERDG

    algo, batch = setup("MERDG", tiny_hparams)
    rebuilt = MERDG(net=algo.net, num_domains=3, hparams=algo.hparams)
    assert rebuilt.mer_lambda == 3.0 and rebuilt.requested_representations() == ("projection",)
    bad = dict(algo.hparams, mer_target="logits")
    with pytest.raises(ValueError, match=r"^mer_target must be one of \['projection', "
                       r"'normalized_projection', 'embedding'\], got 'logits'$"):
        MERDG(algo.net, 3, bad)


def test_mer_eps_reaches_both_terms(tiny_hparams):
    algo, batch = setup("MERDG", tiny_hparams, mer_eps=0.05, mer_lambda=1.0)
    obj = algo.objective(batch)
    proj = algo.net.project(obj.out.embeddings)
    expected = sum(reference_mer(proj[m], eps=0.05) for m in MODALITIES)
    assert obj.logs["mer"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_diverged_representations_are_named(tiny_hparams):
    from merdg.algorithms.base import NonFiniteLossError

    algo, batch = setup("MERDG", tiny_hparams)
    with torch.no_grad():
        algo.net.projectors["m1"].layers[0].weight.fill_(float("inf"))
    with pytest.raises(NonFiniteLossError) as raised:
        algo.objective(batch)
    message = str(raised.value)
    assert message.startswith("non-finite training loss: the projection representations of m1 "
                              "that MER-DG regularizes hold NaN/Inf (the weights diverged)")
    assert set(raised.value.terms) == {"ce", "probe_ce"}
    assert all(isinstance(v, float) for v in raised.value.terms.values())


# --- CMC and NEL: each term recomputed from the network's outputs ----------------------------

@pytest.mark.parametrize("supervised", [False, True])
def test_cmc_contrast_term_from_the_projections(supervised, tiny_hparams):
    from merdg.losses import multiview_info_nce_loss, supcon_loss

    algo, batch = setup("CMC", tiny_hparams, supervised=supervised, temperature=0.3)
    assert algo.num_domains == 3
    obj = algo.objective(batch)
    proj = algo.net.project(obj.out.embeddings)
    assert set(obj.extras["projections"]) == set(MODALITIES)
    assert torch.allclose(obj.extras["projections"]["m0"], proj["m0"])
    views = {m: F.normalize(p, dim=1) for m, p in proj.items()}
    if supervised:  # SupCon over the modality views, labels as positives
        stacked = torch.stack([views[m] for m in MODALITIES], dim=1)
        expected = supcon_loss(stacked, batch.y, 0.3)
    else:
        expected = multiview_info_nce_loss(views, 0.3)
    assert obj.logs["contrast"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_nel_terms_from_the_projections_of_both_views(tiny_hparams):
    from merdg.losses import info_nce_loss, mean_shift_embeddings, supcon_loss

    algo, batch = setup("NEL", tiny_hparams, view_dropout=0.0, k=2, temp_s=0.3, temp_u=0.4)
    assert algo.num_domains == 3
    for m in MODALITIES:  # BatchNorm heads of proj_hidden width, L2-normalized proj_dim outputs
        head = algo.projectors[m]
        assert head.layers[0].out_features == tiny_hparams["proj_hidden"]
        assert isinstance(head.layers[1], torch.nn.BatchNorm1d)
        assert head.layers[-1].out_features == algo.hparams["proj_dim"] and head.l2_normalize
    obj = algo.objective(batch)
    n = len(batch)
    out = algo.net({m: torch.cat([v, v]) for m, v in batch.x.items()})
    proj = {m: algo.projectors[m](out.embeddings[m]) for m in MODALITIES}
    y = torch.cat([batch.y, batch.y])
    views = torch.stack([proj[m] for m in MODALITIES], dim=1)
    shifted = torch.stack([mean_shift_embeddings(proj[m], 2) for m in MODALITIES], dim=1)
    unc = info_nce_loss(shifted[:n].reshape(n, -1), shifted[n:].reshape(n, -1), 0.4)
    assert obj.logs["unc"].item() == pytest.approx(unc.item(), rel=1e-5)
    assert obj.logs["supcon"].item() == pytest.approx(supcon_loss(views, y, 0.3).item(), rel=1e-5)
    assert torch.allclose(obj.extras["projections"]["m1"], proj["m1"])
    assert torch.allclose(obj.extras["projections"]["m1"].norm(dim=1), torch.ones(2 * n))


# --- SimMMDG and MOOSA: terms and parts recomputed --------------------------------------------

def test_simmmdg_supcon_on_the_shared_halves_and_its_heads(tiny_hparams):
    from merdg.losses import supcon_loss

    algo, batch = setup("SimMMDG", tiny_hparams, temperature=0.3, trans_hidden=24)
    assert algo.num_domains == 3
    obj = algo.objective(batch)
    z = obj.out.embeddings
    shared = {m: algo.shared_projectors[m](z[m][:, : z[m].shape[1] // 2]) for m in MODALITIES}
    views = torch.stack([shared[m] for m in MODALITIES], dim=1)
    assert obj.logs["supcon"].item() == pytest.approx(
        supcon_loss(views, batch.y, 0.3).item(), rel=1e-5)
    for m in MODALITIES:
        head = algo.shared_projectors[m]
        assert head.layers[0].in_features == algo.net.dims[m] // 2
        assert head.layers[0].out_features == tiny_hparams["proj_hidden"]
        assert isinstance(head.layers[1], torch.nn.BatchNorm1d)
        assert head.layers[-1].out_features == algo.hparams["proj_dim"] and head.l2_normalize
    widths = {mod.out_features for mod in algo.translators.modules()
              if isinstance(mod, torch.nn.Linear)}
    assert 24 in widths and tiny_hparams["proj_hidden"] not in widths
    assert obj.extras["shared_projections"]["m0"] is not None
    assert algo.representations(obj, "embedding")["m1"] is z["m1"]
    with pytest.raises(RuntimeError, match=r"^the specific-half heads are built only when a "
                       r"composed term requests the 'projection' representations$"):
        algo.representations(obj, "projection")


def test_simmmdg_refuses_odd_widths_naming_itself(tiny_hparams):
    tiny_hparams["encoders"]["m0"]["out_dim"] = 7
    with pytest.raises(ValueError, match=r"^MOOSA splits every embedding into two halves; "
                       r"embedding widths \{'m0': 7\} are odd$"):
        setup("MOOSA", tiny_hparams)


def chunk_count(row):
    """Runs of consecutive column indices in one jigsaw puzzle."""
    return 1 + int((row[1:] != row[:-1] + 1).sum())


@pytest.mark.parametrize("splits, expected", [(None, 8), (3, 6)])
def test_moosa_jigsaw_chunks_classifier_and_entropy_temperature(splits, expected, tiny_hparams):
    from merdg.losses import entropy_weighted_cross_entropy

    algo, batch = setup("MOOSA", tiny_hparams, jigsaw_num_splits=splits, jigsaw_samples=16,
                        jigsaw_hidden=20, entropy_weight_temp=0.5)
    assert algo.num_domains == 3
    assert max(chunk_count(row) for row in algo.jigsaw_index) == expected  # splits x modalities
    layers = list(algo.jigsaw_classifier)
    assert [type(layer).__name__ for layer in layers] == ["Linear", "ReLU", "Linear"]
    assert layers[0].out_features == 20 and layers[2].out_features == 16
    obj = algo.objective(batch)
    heads = [algo.heads[m](obj.out.embeddings[m]) for m in MODALITIES] + [obj.out.logits]
    expected_ce = entropy_weighted_cross_entropy(heads, batch.y, 0.5)
    assert obj.logs["ce"].item() == pytest.approx(expected_ce.item(), rel=1e-5)


def test_merdg_keeps_the_base_logs_and_names_every_diverged_modality(tiny_hparams):
    from merdg.algorithms.base import NonFiniteLossError

    algo, batch = setup("MERDG", tiny_hparams)
    assert {"ce", "probe_ce", "mer", "mer_marg/m0", "mer_spec/m1"} <= set(
        algo.objective(batch).logs)
    with torch.no_grad():
        for m in MODALITIES:
            algo.net.projectors[m].layers[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"representations of m0, m1 that MER-DG "):
        algo.objective(batch)
