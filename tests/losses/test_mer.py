"""The MER-DG loss: official reference values, exact Gram identity, properties, numerics."""

import math

import numpy as np
import pytest
import torch

import merdg
from merdg.losses import MERLoss, correlation_logdet, mer_loss, mer_terms

# reference values of docs/mer-loss.md ("Reference values"): one numpy generator, drawn
# sequentially
REFERENCE = [  # (N, L_marg, L_spec); the 5th draw is L2-normalized
    (16, 0.078894, 7.877953),
    (64, 0.03594, 4.475176),
    (256, 0.016631, 0.300022),
    (1024, 0.007231, 0.064497),
]
REFERENCE_L2 = (16, 0.912489, 7.878536)


def reference_inputs():
    rng = np.random.default_rng(0)
    draws = [rng.standard_normal((n, 128)) for n, _, _ in REFERENCE]
    last = rng.standard_normal((16, 128))
    last /= np.linalg.norm(last, axis=1, keepdims=True)
    return [torch.from_numpy(d) for d in draws], torch.from_numpy(last)


@pytest.mark.parametrize("path", ["auto", "gram", "covariance"])
def test_reference_values_float64(path):
    draws, normalized = reference_inputs()
    for z, (n, marg, spec) in zip(draws, REFERENCE):
        terms = mer_terms(z, path=path)
        assert z.shape == (n, 128)
        assert round(terms.marginal.item(), 6) == pytest.approx(marg, abs=1e-6)
        assert round(terms.spectral.item(), 6) == pytest.approx(spec, abs=1e-6)
        assert terms.loss.item() == pytest.approx(marg + spec, abs=2e-6)
    terms = mer_terms(normalized, path=path)
    assert round(terms.marginal.item(), 6) == pytest.approx(REFERENCE_L2[1], abs=1e-6)
    assert round(terms.spectral.item(), 6) == pytest.approx(REFERENCE_L2[2], abs=1e-6)


def numpy_reference(z: np.ndarray, eps: float = 1e-4) -> tuple[float, float]:
    """A slow, literal transcription of the official loss (docs/mer-loss.md, "The loss")."""
    n, d = z.shape
    marg = np.mean(np.maximum(0.0, 1.0 - np.sqrt(z.var(axis=0, ddof=1) + eps)))
    x = z - z.mean(axis=0)
    x = x / np.maximum(x.std(axis=0) + eps, eps)
    c = x.T @ x / (n - 1) + eps * np.eye(d)
    return marg, -np.linalg.slogdet(c)[1] / d


@pytest.mark.parametrize("n,d", [(5, 3), (3, 7), (40, 40), (9, 64)])
def test_matches_numpy_transcription(n, d):
    z = np.random.default_rng(n * d).standard_normal((n, d)) * np.linspace(0.1, 3, d)
    marg, spec = numpy_reference(z)
    terms = mer_terms(torch.from_numpy(z))
    assert terms.marginal.item() == pytest.approx(marg, rel=1e-10, abs=1e-12)
    assert terms.spectral.item() == pytest.approx(spec, rel=1e-10)


def test_gram_identity_values_and_gradients():
    z = torch.randn(12, 300, dtype=torch.float64)
    values, grads = [], []
    for path in ("gram", "covariance"):
        x = z.clone().requires_grad_(True)
        loss = mer_loss(x, path=path)
        loss.backward()
        values.append(loss.detach()), grads.append(x.grad)
    assert torch.allclose(values[0], values[1], rtol=1e-12)
    # the D x D path is ill-conditioned (eps = 1e-4 ridge): compare relative to the largest entry
    assert (grads[0] - grads[1]).abs().max() <= 1e-8 * grads[1].abs().max()


def test_correlation_logdet_rejects_unknown_path():
    with pytest.raises(ValueError, match="path"):
        correlation_logdet(torch.randn(4, 3), 1e-4, 3.0, path="svd")


def test_identity_correlation_hand_computed():
    # Columns of a 4x4 Hadamard matrix without its constant column: centered, orthogonal, each
    # with biased std exactly 1. Then x^T x / (N - 1) = N/(N-1) I, so
    # L_spec = -log(N/(N-1) + eps) (std + eps rescales x by 1/(1 + eps)^2 first).
    h = torch.tensor([[1, 1, 1], [-1, 1, -1], [1, -1, -1], [-1, -1, 1]], dtype=torch.float64)
    n, eps = 4, 1e-4
    expected = -math.log(n / (n - 1) / (1 + eps) ** 2 + eps)
    assert mer_terms(h).spectral.item() == pytest.approx(expected, rel=1e-12)
    # unbiased variance of these columns is 4/3 > 1: the floor is inactive
    assert mer_terms(h).marginal.item() == 0.0


def test_duplicated_features_are_penalized():
    z = torch.randn(256, 8, dtype=torch.float64)
    duplicated = torch.cat([z[:, :4], z[:, :4]], dim=1)
    assert mer_terms(duplicated).spectral > mer_terms(z).spectral + 2.0


def test_logdet_invariant_to_feature_scaling_and_sample_order():
    z = torch.randn(64, 16, dtype=torch.float64)
    scaled = z * torch.logspace(-1, 1, 16, dtype=torch.float64)
    # exact without the eps terms; with the official eps = 1e-4, eps/std of the 0.1-scaled
    # features is 1e-3, which bounds the change
    tiny = {"spec_eps": 1e-13}
    assert mer_terms(scaled, **tiny).spectral.item() == pytest.approx(
        mer_terms(z, **tiny).spectral.item(), rel=1e-9)
    assert mer_terms(scaled).spectral.item() == pytest.approx(mer_terms(z).spectral.item(),
                                                              rel=5e-3)
    perm = torch.randperm(64)
    assert mer_loss(z[perm]).item() == pytest.approx(mer_loss(z).item(), rel=1e-12)
    feat_perm = torch.randperm(16)
    assert mer_loss(z[:, feat_perm]).item() == pytest.approx(mer_loss(z).item(), rel=1e-12)


def test_finite_when_batch_smaller_than_dim():
    z = torch.randn(3, 512, requires_grad=True)
    loss = mer_loss(z)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    # the null space contributes -(D - N + 1) log(eps) / D at least
    assert loss.item() > -(512 - 2) * math.log(1e-4) / 512 - 1.0


@pytest.mark.parametrize("path", ["gram", "covariance"])
def test_gradcheck_float64(path):
    z = torch.randn(6, 5 if path == "covariance" else 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: mer_loss(x, path=path), (z,))


def test_loss_decreases_under_gradient_descent():
    torch.manual_seed(0)
    z = (torch.randn(32, 16) @ torch.randn(16, 16) * 0.1).requires_grad_(True)
    opt = torch.optim.SGD([z], lr=0.05)
    first = mer_loss(z).item()
    for _ in range(30):
        opt.zero_grad()
        mer_loss(z).backward()
        opt.step()
    assert mer_loss(z).item() < first - 0.5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32(dtype):
    z32 = torch.randn(16, 32)
    loss = mer_loss(z32.to(dtype))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(mer_loss(z32.to(dtype).float()).item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = mer_loss(torch.nn.Linear(32, 32)(z32))
    assert inside.dtype == torch.float32


def test_single_sample_returns_connected_zero():
    z = torch.randn(1, 8, requires_grad=True)
    terms = mer_terms(z)
    assert terms.loss.item() == 0.0 and terms.marginal.item() == 0.0
    terms.loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_one_feature_has_no_spectral_term():
    z = torch.tensor([[0.0], [0.5], [1.0]], dtype=torch.float64)  # unbiased var 0.25
    terms = mer_terms(z)
    assert terms.spectral.item() == 0.0
    assert terms.marginal.item() == pytest.approx(1.0 - math.sqrt(0.25 + 1e-4), rel=1e-12)


@pytest.mark.parametrize("bad", [torch.randn(4), torch.randn(2, 3, 4)])
def test_non_2d_input_raises(bad):
    with pytest.raises(ValueError, match=r"shape \(batch, dim\)"):
        mer_loss(bad)


def test_non_finite_input_raises():
    z = torch.randn(8, 4)
    z[2, 1] = float("nan")
    z[3, 0] = float("inf")
    with pytest.raises(ValueError, match="2 of 32 entries"):
        mer_loss(z)
    with pytest.raises(TypeError, match="floating-point"):
        mer_loss(torch.ones(4, 4, dtype=torch.long))


def test_weights_and_constants_are_keywords():
    z = torch.randn(32, 8, dtype=torch.float64)
    t = mer_terms(z, alpha_marg=0.5, alpha_spec=2.0)
    assert t.loss.item() == pytest.approx(0.5 * t.marginal.item() + 2.0 * t.spectral.item())
    assert mer_terms(z, std_target=2.0).marginal > mer_terms(z).marginal
    assert mer_terms(z, unbiased=False).spectral != mer_terms(z).spectral
    assert isinstance(mer_loss(z, return_terms=True), merdg.MERTerms)


def test_merloss_sums_over_sorted_modalities():
    feats = {"video": torch.randn(16, 8), "audio": torch.randn(16, 8)}
    mer = MERLoss()
    expected = mer_loss(feats["audio"]) + mer_loss(feats["video"])
    assert mer(feats).item() == pytest.approx(expected.item(), rel=1e-6)
    assert list(mer.terms(feats)) == ["audio", "video"]
    assert MERLoss(reduction="mean")(feats).item() == pytest.approx(expected.item() / 2, rel=1e-6)
    weighted = MERLoss(weights={"audio": 0.0})(feats)
    assert weighted.item() == pytest.approx(mer_loss(feats["video"]).item(), rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        MERLoss(reduction="max")
    with pytest.raises(ValueError, match="no features"):
        mer({})


@pytest.mark.parametrize("n,d", [(24, 40), (60, 12)])  # the Gram and the covariance paths
def test_modalities_of_one_shape_are_computed_in_one_batched_pass(n, d, monkeypatch):
    """Modalities sharing a shape go through one batched factorization (two here: three of one
    shape and one of another); each one's terms and gradients are those of its own batch."""
    gen = torch.Generator().manual_seed(n * d)
    feats = {m: (torch.randn(n, d, generator=gen, dtype=torch.float64) * scale + shift)
             .requires_grad_() for m, scale, shift in
             (("a", 0.5, 0.0), ("b", 2.0, 1.0), ("c", 1.0, -3.0))}
    feats["d"] = torch.randn(n, d // 2, generator=gen, dtype=torch.float64).requires_grad_()
    settings = {"alpha_marg": 0.7, "alpha_spec": 1.3, "marg_eps": 1e-3, "spec_eps": 1e-5}
    factorizations = []
    real = torch.linalg.cholesky_ex

    def counted(m, **kw):
        factorizations.append(tuple(m.shape))
        return real(m, **kw)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", counted)
    terms = MERLoss(**settings).terms(feats)
    k = min(n, d)
    assert sorted(factorizations) == sorted([(3, k, k), (min(n, d // 2),) * 2])
    monkeypatch.setattr(torch.linalg, "cholesky_ex", real)
    for m, z in feats.items():
        alone = mer_terms(z, **settings)
        for got, want in zip(terms[m], alone):
            assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-12)
        (grad,) = torch.autograd.grad(terms[m].loss, z, retain_graph=True)
        (want,) = torch.autograd.grad(alone.loss, z)
        assert torch.allclose(grad, want, rtol=1e-10, atol=1e-12)


def test_batched_float32_terms_match_the_single_batch_ones():
    gen = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(48, 128, generator=gen) * (i + 1) for i, m in enumerate("xyz")}
    terms = MERLoss().terms(feats)
    for m, z in feats.items():
        alone = mer_terms(z)
        assert terms[m].loss.item() == pytest.approx(alone.loss.item(), rel=1e-6)


def test_logdet_of_a_stack_falls_back_only_where_cholesky_fails():
    from merdg.losses.mer import _logdet_spd

    spd = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # det -3
    out = _logdet_spd(torch.stack([spd, indefinite]))
    assert out[0].item() == pytest.approx(math.log(1.75), rel=1e-12)
    assert out[1].item() == pytest.approx(math.log(3.0), rel=1e-12)


def test_non_finite_features_are_named_by_modality():
    """Checked once per group of one shape (sorted names: audio+video, then flow)."""
    from merdg.losses.mer import NonFiniteFeaturesError

    feats = {"audio": torch.randn(8, 4), "video": torch.randn(8, 4), "flow": torch.randn(8, 3)}
    feats["video"][1, 2] = float("nan")
    feats["flow"][0, 0] = float("inf")
    with pytest.raises(NonFiniteFeaturesError) as err:
        MERLoss().terms(feats)
    assert err.value.modalities == ("video",)
    assert str(err.value) == ("modality 'video': MER-DG received non-finite features: 1 of 32 "
                              "entries of the (8, 4) batch are NaN or Inf")
    feats["video"][1, 2] = 0.0
    with pytest.raises(NonFiniteFeaturesError, match="modality 'flow': .* 1 of 24 entries"):
        MERLoss().terms(feats)


def test_merloss_refuses_unknown_keywords():
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['alpha'\]"):
        MERLoss(alpha=1.0)


def test_batch_of_exactly_two_is_computed_by_hand():
    """N = 2 is the smallest batch with statistics (N < 2 returns 0): both terms by hand.

    Features j have values (0, c_j): unbiased var c_j^2 / 2, biased std s_j = c_j / 2, so the
    standardized rows are -/+ a_j with a_j = s_j / (s_j + eps), and the 2 x 2 correlation
    (divisor N - 1 = 1) is 2 a a^T + eps I, of determinant 2 eps |a|^2 + eps^2."""
    eps = 1e-4
    c = [1.0, 2.0]
    z = torch.tensor([[0.0, 0.0], c], dtype=torch.float64)
    marginal = sum(max(0.0, 1.0 - math.sqrt(cj ** 2 / 2 + eps)) for cj in c) / 2
    a2 = sum(((cj / 2) / (cj / 2 + eps)) ** 2 for cj in c)
    spectral = -math.log(2 * eps * a2 + eps ** 2) / 2
    terms = mer_terms(z)
    assert terms.marginal.item() == pytest.approx(marginal, rel=1e-12)
    assert terms.spectral.item() == pytest.approx(spectral, rel=1e-10)
    assert terms.loss.item() == pytest.approx(marginal + spectral, rel=1e-10)
    for path in ("gram", "covariance"):
        assert mer_terms(z, path=path).spectral.item() == pytest.approx(spectral, rel=1e-8)
    single = mer_terms(z[:1])
    assert single.loss.item() == 0.0 and single.marginal.item() == 0.0


@pytest.mark.parametrize("diagonal", [[-1.0, 2.0], [2.0, -1.0]])
def test_logdet_falls_back_to_the_absolute_determinant(diagonal):
    """A symmetric matrix that is not positive definite (Cholesky fails): log |det|, positive
    here, not its negative. x^T x / 1 + eps I with x = diag(sqrt(d + 2)) and eps = -2 is
    diag(d)."""
    x = torch.diag(torch.tensor(diagonal, dtype=torch.float64) + 2.0).sqrt()
    expected = math.log(abs(diagonal[0] * diagonal[1]))
    got = correlation_logdet(x, eps=-2.0, divisor=1.0, path="covariance")
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # positive definite: the Cholesky path, same definition
    spd = correlation_logdet(torch.diag(torch.tensor([2.0, 3.0], dtype=torch.float64)), 0.0,
                             1.0, path="covariance")
    assert spd.item() == pytest.approx(math.log(36.0), rel=1e-12)


def test_merloss_passes_its_weights_and_options_to_every_modality():
    feats = {"a": torch.randn(16, 4, dtype=torch.float64),
             "b": torch.randn(16, 4, dtype=torch.float64) * 0.2}
    mer = MERLoss(alpha_marg=0.5, alpha_spec=2.0, std_target=3.0, reduction="sum")
    expected = sum(0.5 * mer_terms(z, std_target=3.0).marginal
                   + 2.0 * mer_terms(z).spectral for z in feats.values())
    assert mer(feats).item() == pytest.approx(expected.item(), rel=1e-10)
    for m, t in mer.terms(feats).items():
        assert t.marginal.item() == pytest.approx(
            mer_terms(feats[m], std_target=3.0).marginal.item(), rel=1e-12)


def test_merloss_errors_name_the_modality():
    mer = MERLoss()
    with pytest.raises(ValueError, match=r"^modality 'video': MER-DG received non-finite"):
        mer({"audio": torch.randn(4, 3), "video": torch.full((4, 3), float("nan"))})
    with pytest.raises(TypeError, match=r"^modality 'audio': MER-DG expects floating-point"):
        mer({"audio": torch.ones(4, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"^MERLoss received no features: pass \{modality"):
        mer({})
    with pytest.raises(ValueError, match=r"^reduction must be 'sum' or 'mean', got "):
        MERLoss(reduction="max")


def test_mer_loss_forwards_its_keywords():
    z = torch.randn(8, 3, dtype=torch.float64)
    assert mer_loss(z, alpha_marg=0.0).item() == pytest.approx(mer_terms(z).spectral.item())


def test_lower_level_defaults_are_the_official_ones():
    from merdg.losses import marginal_entropy_loss, spectral_entropy_loss

    z = torch.tensor([[0.0, 0.0], [0.4, 1.0], [0.8, 3.0]], dtype=torch.float64)
    # variances 0.16 and 3 (unbiased): gamma = 1, eps = 1e-4
    expected = (1 - math.sqrt(0.16 + 1e-4)) / 2
    assert marginal_entropy_loss(z).item() == pytest.approx(expected, rel=1e-12)
    assert spectral_entropy_loss(z).item() == pytest.approx(
        mer_terms(z, spec_eps=1e-4, unbiased=True).spectral.item(), rel=1e-12)
    assert spectral_entropy_loss(z).item() != pytest.approx(
        spectral_entropy_loss(z, unbiased=False).item(), rel=1e-6)
    assert spectral_entropy_loss(z).item() == pytest.approx(numpy_reference(z.numpy())[1],
                                                            rel=1e-10)


def test_each_epsilon_reaches_its_own_term():
    z = torch.tensor([[0.0, 0.0], [0.4, 1.0], [0.8, 3.0]], dtype=torch.float64)
    t = mer_terms(z, marg_eps=0.2, spec_eps=1e-4)
    assert t.marginal.item() == pytest.approx((1 - math.sqrt(0.16 + 0.2)) / 2, rel=1e-12)
    assert t.spectral.item() == pytest.approx(numpy_reference(z.numpy())[1], rel=1e-10)
    assert mer_terms(z, spec_eps=0.1).spectral.item() == pytest.approx(
        numpy_reference(z.numpy(), eps=0.1)[1], rel=1e-10)


def test_single_sample_terms_are_all_zero_tensors():
    t = mer_terms(torch.ones(1, 3))
    assert all(isinstance(v, torch.Tensor) and v.item() == 0.0 for v in t)


def test_input_errors_are_exact():
    with pytest.raises(TypeError, match=r"^MER-DG expects a torch.Tensor, got list$"):
        mer_terms([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"^MER-DG expects features of shape \(batch, dim\), got "
                       r"shape \(4,\); pool or flatten encoder outputs first \(see "
                       r"merdg.FeatureTap's `pool`\)$"):
        mer_terms(torch.ones(4))
    with pytest.raises(ValueError, match=r"^MER-DG received non-finite features: 1 of 6 entries "
                       r"of the \(2, 3\) batch are NaN or Inf$"):
        mer_terms(torch.tensor([[0.0, 1.0, 2.0], [float("inf"), 1.0, 0.0]]))
