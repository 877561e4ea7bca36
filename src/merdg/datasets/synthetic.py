r"""The built-in benchmark: synthetic multimodal domains with a cross-modal shortcut.

Generated in memory from a seed; no download. It reproduces the failure MER-DG targets ("Fusion
Overfitting"): every modality carries a weak domain-invariant class signal, while each domain's
recording conditions add a nuisance that is *shared by all modalities of a sample* (it co-occurs
across modalities) and that predicts the label through a mapping specific to that domain.

Generative model, for a sample of class :math:`y` in domain :math:`d` (all random parameters are
drawn once from ``data_seed``):

.. math::

    c &= \rho\, W_d[y] + \sqrt{1-\rho^2}\, \xi, \qquad \xi \sim \mathcal N(0, I_k)
      \qquad \text{(shared recording-condition code)}

    u_m &= \mu_m[y] + \sigma_s\, \epsilon_m \qquad \text{(invariant signal, same } \mu_m
      \text{ in every domain)}

    v_m &= B_m c + o_{d,m} + \sigma_n\, \epsilon'_m \qquad \text{(nuisance seen by modality } m)

    x_m &= Q_m\, [u_m;\; v_m;\; \sigma_0\, \eta_m]

- :math:`W_d[y]` (k-dim, norm :math:`\sqrt k`) is a class code drawn independently for each
  domain: the same code means a different class in another domain, so the shortcut does not
  transfer to an unseen domain.
- :math:`\rho` (``shortcut_strength``) sets how strongly the shared code predicts the label;
  :math:`\rho = 0` removes the shortcut.
- One modality sees :math:`c` through heavy noise :math:`\sigma_n`; the fused model sees it
  through every modality at once, so the co-occurrence is far more predictive jointly than for
  any single encoder.
- :math:`o_{d,m}` is a per-domain offset (recording style) that lets a model tell the source
  domains apart, and so learn each domain's mapping.
- :math:`Q_m` is a random rotation mixing signal, nuisance and :math:`\eta_m` (pure noise)
  coordinates, so no encoder can read the signal off fixed input coordinates.

With the defaults (4 domains, 3 modalities, 6 classes, 600 samples per domain) a fused ERM model
reaches high source-validation accuracy by exploiting the shared code, and loses accuracy on the
held-out domain; ``shortcut_strength = 0`` gives the shortcut-free control. See
``docs/synthetic.md`` for measured numbers.

``synthetic-pretrain`` (:class:`SyntheticPretrainCorpus`) is an external pretraining corpus
for this benchmark, as Kinetics or VGGSound precede EPIC-Kitchens: *other* domains
``p0, p1, ...`` of the same generative model. They share the benchmark's class signal
:math:`\mu_m`, nuisance mixing :math:`B_m` and rotations :math:`Q_m` (drawn from the same
``data_seed`` and options), so encoders trained on them transfer; their class codes
:math:`W_p` and offsets :math:`o_{p,m}` are drawn afresh from ``corpus_seed``, and their
shortcut strength defaults to 0 (no shortcut; a positive value gives each corpus domain its
own, unrelated mapping).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from merdg.datasets.base import DATASETS, DomainDataset, TensorSamples, ValueConvention
from merdg.datasets.preprocessing import fit_standardization
from merdg.hparams import HParam, training_default

__all__ = ["SyntheticPretrainCorpus", "SyntheticShortcut"]

CORPUS_STREAM = 0x70726574  # separates the corpus' random stream from the benchmark's


@DATASETS.register("synthetic")
class SyntheticShortcut(DomainDataset):
    """Synthetic multimodal DG benchmark with a cross-modal, domain-specific shortcut.

    Args:
        root: Unused (the data is generated); accepted for a uniform interface.
        modalities: Subset of ``m0 .. m{n_modalities-1}`` (default: all).
        n_domains: Number of domains (>= 3).
        n_modalities: Number of modalities (>= 2).
        n_classes: Number of classes.
        samples_per_domain: Samples generated per domain (balanced over classes).
        shortcut_strength: rho in [0, 1]: how well the shared code predicts the label.
        signal_noise: sigma_s, noise on the invariant class signal.
        nuisance_noise: sigma_n, per-modality noise on the shared code.
        signal_dim / nuisance_dim / noise_dim: Coordinates of u_m, v_m, eta_m per modality.
        code_dim: k, the dimension of the shared code.
        style_scale: Scale of the per-domain offsets o_{d,m}.
        nuisance_scale: s_n, multiplies the whole nuisance block v_m: below 1 the shortcut is a
            subtle, low-variance direction while the invariant signal carries most variance.
        noise_scale: sigma_0, std of the pure-noise coordinates eta_m.
        data_seed: Seed of every random parameter and sample.
    """

    HPARAMS: ClassVar[dict[str, HParam]] = {
        "lr": training_default("lr", 1e-3, "Adam learning rate for the small synthetic "
                               "networks"),
        "weight_decay": training_default("weight_decay", 1e-4, "Adam weight decay"),
        "batch_size": training_default("batch_size", 48, "global batch (16 per source domain "
                                       "with 4 domains)"),
        "epochs": training_default("epochs", 15, "training epochs"),
        "proj_hidden": training_default("proj_hidden", 256, "projection head hidden width "
                                        "(scaled down from 2048)"),
        "fusion_hidden": training_default("fusion_hidden", 128, "fusion classifier hidden width "
                                          "(scaled down from 512)"),
    }

    def __init__(
        self,
        root: str | None = None,
        modalities: list[str] | None = None,
        n_domains: int = 4,
        n_modalities: int = 3,
        n_classes: int = 6,
        samples_per_domain: int = 600,
        shortcut_strength: float = 0.9,
        signal_noise: float = 1.6,
        nuisance_noise: float = 0.5,
        signal_dim: int = 8,
        nuisance_dim: int = 8,
        noise_dim: int = 16,
        code_dim: int = 4,
        style_scale: float = 1.0,
        nuisance_scale: float = 1.0,
        noise_scale: float = 1.0,
        data_seed: int = 0,
    ) -> None:
        rng, params = self._setup(modalities, n_domains, n_modalities, n_classes,
                                  shortcut_strength, signal_dim, nuisance_dim, noise_dim,
                                  code_dim, style_scale, data_seed)
        self.domains = [f"d{i}" for i in range(n_domains)]
        self.params = params  # the generative model's parameters (module docstring)
        self._samples = {
            d: _generate_domain(rng, params, d, self.ALL_MODALITIES, self.modalities,
                                samples_per_domain, n_classes, shortcut_strength, signal_noise,
                                nuisance_noise, noise_dim, nuisance_scale, noise_scale)
            for d in self.domains
        }
        self.spread: dict[str, torch.Tensor] = {}  # sources' std per feature, for corruptions

    def _setup(self, modalities, n_domains, n_modalities, n_classes, shortcut_strength,
               signal_dim, nuisance_dim, noise_dim, code_dim, style_scale,
               data_seed) -> tuple[np.random.Generator, dict]:
        """Check the options, set the modalities and classes, and draw the benchmark's
        parameters; returns the generator (positioned for the samples) and the parameters."""
        if n_domains < 3 or n_modalities < 2:
            raise ValueError("the synthetic benchmark needs >= 3 domains and >= 2 modalities")
        if not 0.0 <= shortcut_strength <= 1.0:
            raise ValueError(f"shortcut_strength must be in [0, 1], got {shortcut_strength}")
        self.ALL_MODALITIES = tuple(f"m{i}" for i in range(n_modalities))
        self.modalities = self.select_modalities(modalities)
        self.num_classes = n_classes
        self.class_names = [f"class{c}" for c in range(n_classes)]
        self.dim = signal_dim + nuisance_dim + noise_dim
        rng = np.random.default_rng(data_seed)
        benchmark_domains = [f"d{i}" for i in range(n_domains)]
        params = _draw_parameters(rng, benchmark_domains, self.ALL_MODALITIES, n_classes,
                                  signal_dim, nuisance_dim, code_dim, self.dim, style_scale)
        return rng, params

    def input_shape(self, modality: str) -> tuple[int, ...]:
        return (self.dim,)

    def fit_normalization(self, sources: Sequence[str]) -> None:
        """The samples are used as generated; only the sources' std per feature is recorded,
        as the scale of additive corruptions (:meth:`value_convention`)."""
        self.check_domains(sources)
        for m in self.modalities:
            x = torch.cat([self._samples[d].x[m] for d in sources])  # (n, dim)
            self.spread[m] = fit_standardization(x, "channel").std[0]  # (dim,)

    def normalize_as(self, fitted: DomainDataset) -> None:
        """The samples are used as generated (nothing to standardize); corruption magnitudes
        follow ``fitted``'s source spread where it records one."""
        self.spread = {m: s for m, s in getattr(fitted, "spread", {}).items()
                       if m in self.modalities}

    def value_convention(self, modality: str) -> ValueConvention:
        """Feature vectors ("array"), corrupted as generated, additive magnitudes relative to
        the sources' std per feature."""
        if modality not in self.spread:
            raise RuntimeError("SyntheticShortcut: call fit_normalization(source_domains) before "
                               "corrupting samples (corruption magnitudes are relative to the "
                               "source domains' spread)")
        return ValueConvention("array", spread=self.spread[modality])

    def encoder_spec(self, modality: str) -> dict:
        return {"name": "mlp", "hidden": 128, "out_dim": 64, "layers": 2}

    def domain_samples(self, domain: str) -> Dataset:
        self.check_domains([domain])
        return self._samples[domain]


@DATASETS.register("synthetic-pretrain")
class SyntheticPretrainCorpus(SyntheticShortcut):
    r"""External pretraining corpus for the ``synthetic`` benchmark: domains ``p0 .. p{K-1}``
    of its generative model, other than its domains ``d0 .. d{n-1}`` (module docstring).

    The options shared with :class:`SyntheticShortcut` (``n_domains``, ``n_modalities``,
    ``n_classes``, the dimensions and scales, ``data_seed``) must be those of the benchmark the
    encoders are pretrained for: they fix the shared parameters (:math:`\mu_m, B_m, Q_m`).
    Modalities, sample shapes and classes are the benchmark's, so encoders move from one to the
    other unchanged. The benchmark's own samples are not generated.

    Args:
        corpus_domains: Number of corpus domains K (>= 1).
        samples_per_domain: Samples per corpus domain (balanced over classes).
        shortcut_strength: rho of the corpus domains (default 0: the shared code carries no
            label; > 0: each corpus domain maps the code to the label its own way).
        corpus_seed: Seed of the corpus domains' parameters and samples (with ``data_seed``).
        Others: as :class:`SyntheticShortcut`; ``n_domains`` is the benchmark's domain count.
    """

    def __init__(
        self,
        root: str | None = None,
        modalities: list[str] | None = None,
        n_domains: int = 4,
        n_modalities: int = 3,
        n_classes: int = 6,
        corpus_domains: int = 8,
        samples_per_domain: int = 1000,
        shortcut_strength: float = 0.0,
        signal_noise: float = 1.6,
        nuisance_noise: float = 0.5,
        signal_dim: int = 8,
        nuisance_dim: int = 8,
        noise_dim: int = 16,
        code_dim: int = 4,
        style_scale: float = 1.0,
        nuisance_scale: float = 1.0,
        noise_scale: float = 1.0,
        data_seed: int = 0,
        corpus_seed: int = 0,
    ) -> None:
        if corpus_domains < 1:
            raise ValueError(f"corpus_domains must be >= 1, got {corpus_domains}")
        _, params = self._setup(modalities, n_domains, n_modalities, n_classes,
                                shortcut_strength, signal_dim, nuisance_dim, noise_dim, code_dim,
                                style_scale, data_seed)
        self.domains = [f"p{i}" for i in range(corpus_domains)]
        rng = np.random.default_rng([data_seed, corpus_seed, CORPUS_STREAM])
        params["W"] = {p: _unit_rows(rng, n_classes, code_dim) for p in self.domains}
        params["o"] = {(p, m): style_scale * rng.standard_normal(nuisance_dim)
                       for p in self.domains for m in self.ALL_MODALITIES}
        self.params = params
        self.spread: dict[str, torch.Tensor] = {}  # set by fit_normalization (corruptions)
        self._samples = {
            p: _generate_domain(rng, params, p, self.ALL_MODALITIES, self.modalities,
                                samples_per_domain, n_classes, shortcut_strength, signal_noise,
                                nuisance_noise, noise_dim, nuisance_scale, noise_scale)
            for p in self.domains
        }


def _random_rotation(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix


def _unit_rows(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    w = rng.standard_normal((rows, cols))
    return w / np.linalg.norm(w, axis=1, keepdims=True) * math.sqrt(cols)


def _draw_parameters(rng, domains, modalities, n_classes, signal_dim, nuisance_dim, code_dim,
                     dim, style_scale) -> dict:
    """Every random parameter of the generative model (module docstring)."""
    return {
        "mu": {m: _unit_rows(rng, n_classes, signal_dim) for m in modalities},
        "W": {d: _unit_rows(rng, n_classes, code_dim) for d in domains},
        "B": {m: rng.standard_normal((nuisance_dim, code_dim)) / math.sqrt(code_dim)
              for m in modalities},
        "o": {(d, m): style_scale * rng.standard_normal(nuisance_dim)
              for d in domains for m in modalities},
        "Q": {m: _random_rotation(rng, dim) for m in modalities},
    }


def _generate_domain(rng, p, domain, all_modalities, kept, n, n_classes, rho, sigma_s, sigma_n,
                     noise_dim, nuisance_scale, noise_scale) -> TensorSamples:
    y = np.arange(n) % n_classes  # balanced classes
    code_dim = p["W"][domain].shape[1]
    c = rho * p["W"][domain][y] + math.sqrt(1 - rho**2) * rng.standard_normal((n, code_dim))
    x = {}
    for m in all_modalities:  # draw every modality so a subset sees identical samples
        u = p["mu"][m][y] + sigma_s * rng.standard_normal((n, p["mu"][m].shape[1]))
        v = c @ p["B"][m].T + p["o"][(domain, m)] + sigma_n * rng.standard_normal(
            (n, p["B"][m].shape[0]))
        v = nuisance_scale * v
        eta = noise_scale * rng.standard_normal((n, noise_dim))
        x[m] = np.concatenate([u, v, eta], axis=1) @ p["Q"][m].T  # (n, dim)
    return TensorSamples({m: torch.from_numpy(x[m]).float() for m in kept}, torch.from_numpy(y))
