"""Small networks the baselines add to :class:`~merdg.models.MultimodalNet`.

- :func:`grad_reverse`: gradient reversal (DANN), used by JAT's and GMP's discriminators;
- :class:`CrossModalTranslators`: SimMMDG's / MOOSA's translators between every ordered pair of
  modalities;
- :class:`AdversarialProjection`, :class:`DomainClassifier`: the discriminator parts of JAT/GMP;
- :class:`LayerNormEncoder`: an encoder followed by LayerNorm (MBCD normalizes every modality).

References:
    - Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015,
      https://arxiv.org/abs/1409.7495
    - Dong et al., "SimMMDG", NeurIPS 2023, https://arxiv.org/abs/2310.19795
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AdversarialProjection",
    "CrossModalTranslators",
    "DomainClassifier",
    "LayerNormEncoder",
    "Translator",
    "grad_reverse",
]


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``-scale``."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad.neg() * ctx.scale, None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """Gradient reversal layer: ``x`` forward, ``-scale * grad`` backward."""
    return _GradientReversal.apply(x, float(scale))


class Translator(nn.Sequential):
    """SimMMDG's ``EncoderTrans``: Linear-ReLU-Linear-ReLU-Dropout-Linear, (N, D_in) -> (N, D_out).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048, dropout: float = 0.5):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class CrossModalTranslators(nn.Module):
    """One :class:`Translator` per ordered pair (a, b) of modalities, mapping z_a to z_b.

    Also keeps a running mean of each modality's embedding norm (updated by
    :meth:`track_norms` in training), so that :meth:`impute` can turn a translation, trained
    only in direction, back into an embedding of the right scale.

    Args:
        dims: ``{modality: embedding width}``.
        hidden: Hidden width of every translator (official ``trans_hidden_num`` 2048).
        dropout: Dropout before the last layer (official 0.5).
        norm_momentum: Momentum of the running embedding norms.
    """

    def __init__(self, dims: Mapping[str, int], hidden: int = 2048, dropout: float = 0.5,
                 norm_momentum: float = 0.01) -> None:
        super().__init__()
        self.modalities = sorted(dims)
        self.pairs = list(itertools.permutations(self.modalities, 2))
        self.nets = nn.ModuleDict({f"{a}_to_{b}": Translator(dims[a], dims[b], hidden, dropout)
                                   for a, b in self.pairs})
        self.norm_momentum = norm_momentum
        self.register_buffer("embedding_norms", torch.ones(len(self.modalities)))
        self.register_buffer("norm_updates", torch.zeros((), dtype=torch.long))

    def translate(self, source: str, target: str, z: Tensor) -> Tensor:
        return self.nets[f"{source}_to_{target}"](z)

    @torch.no_grad()
    def track_norms(self, embeddings: Mapping[str, Tensor]) -> None:
        """Update the running mean L2 norm of each modality's embeddings (a plain average over
        the first 1/momentum updates, then an exponential one)."""
        weight = max(self.norm_momentum, 1.0 / (int(self.norm_updates) + 1))
        for i, m in enumerate(self.modalities):
            norm = embeddings[m].detach().float().norm(dim=1).mean()
            self.embedding_norms[i].lerp_(norm, weight)
        self.norm_updates += 1

    def impute(self, embeddings: Mapping[str, Tensor],
               missing: Collection[str]) -> dict[str, Tensor]:
        """Embeddings with each missing modality replaced by the mean of its translations.

        A translation is L2-normalized and rescaled to the running norm of the target modality
        (the translators are trained on normalized vectors only).

        Args:
            embeddings: ``{modality: (N, D_m)}`` for at least the available modalities.
            missing: Modalities to impute from the others.
        """
        available = [m for m in self.modalities if m not in missing]
        if not available:
            raise ValueError(f"cannot impute {sorted(missing)}: no modality is left")
        out = {m: embeddings[m] for m in available}
        for m in missing:
            norm = self.embedding_norms[self.modalities.index(m)]
            guesses = [F.normalize(self.translate(a, m, embeddings[a]), dim=1) for a in available]
            out[m] = torch.stack(guesses).mean(0) * norm  # (N, D_m)
        return out


class AdversarialProjection(nn.Sequential):
    """JAT/GMP projection before a discriminator: Linear-ReLU-Dropout."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.5):
        super().__init__(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))


class DomainClassifier(nn.Sequential):
    """JAT/GMP local domain discriminator: Linear-BatchNorm-ReLU-Linear."""

    def __init__(self, in_dim: int, num_domains: int, hidden: int = 256):
        super().__init__(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, num_domains))


class LayerNormEncoder(nn.Module):
    """An encoder followed by LayerNorm over its embedding (MBCD); keeps ``out_dim``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = int(encoder.out_dim)
        self.norm = nn.LayerNorm(self.out_dim)

    def block_names(self) -> list[tuple[str, ...]]:
        """The wrapped encoder's blocks (``encoder.``-prefixed); the LayerNorm joins the last."""
        inner = [(b,) if isinstance(b, str) else tuple(b) for b in self.encoder.block_names()]
        blocks = [tuple(f"encoder.{n}" for n in b) for b in inner]
        return [*blocks[:-1], (*blocks[-1], "norm")]

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.encoder(x))  # (N, out_dim)
