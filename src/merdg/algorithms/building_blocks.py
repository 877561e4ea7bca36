"""Training-loop pieces shared by the baselines, each small and unit-tested.

- :class:`MovingAverage`: an exponential (MBCD) or simple (CMRF) moving average of a module's
  weights, used as teacher and for evaluation;
- jigsaw permutations (MOOSA): :func:`nth_permutation`, :func:`sample_permutations`,
  :func:`jigsaw_column_index`;
- gradient manipulation (GMP): :func:`leave_one_out_ratios`, :func:`suppression_coefficient`,
  :func:`project_conflict`, :func:`modulate_gradients`, :func:`flat_grad`;
- MBCD: :func:`modality_drop_probabilities`, :func:`lookahead_forward`;
- CMRF: :func:`sample_mix_coefficients`;
- :func:`weighted_sum` and :func:`unimodal_heads`.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from merdg import dist

__all__ = [
    "MovingAverage",
    "all_reduce_mean",
    "flat_grad",
    "jigsaw_column_index",
    "leave_one_out_ratios",
    "lookahead_forward",
    "modality_drop_probabilities",
    "modulate_gradients",
    "nth_permutation",
    "project_conflict",
    "sample_mix_coefficients",
    "sample_permutations",
    "suppression_coefficient",
    "unimodal_heads",
    "weighted_sum",
]


def weighted_sum(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """``sum_k weights[k] * terms[k]``; every term needs a weight (a typo fails loudly)."""
    missing = sorted(set(terms) - set(weights))
    if missing:
        raise KeyError(f"no weight for loss terms {missing}")
    return sum(weights[k] * v for k, v in terms.items())


def unimodal_heads(dims: Mapping[str, int], num_classes: int) -> nn.ModuleDict:
    """A trainable linear classifier per modality (the encoders' own ``fc_cls`` heads)."""
    return nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of a (non-differentiable) tensor over ranks; ``x`` itself when not distributed."""
    if dist.world_size() == 1:
        return x
    return dist.all_reduce_sum(x.detach().clone()) / dist.world_size()


# --------------------------------------------------------------------------------------------
# Moving-average teacher


class MovingAverage(nn.Module):
    """A frozen copy of ``module`` whose weights track an average of ``module``'s weights.

    ``"ema"`` (MBCD): ``avg = beta_t * avg + (1 - beta_t) * current`` after every step, with
    ``beta_t = beta`` or, with ``warmup``, ``beta_t = min(beta, (1 + t) / (10 + t))`` at the
    (t + 1)-th update (t = 0, 1, ...: TensorFlow's ``tf.train.ExponentialMovingAverage`` with
    ``num_updates``): the average forgets its random initialization within a few dozen steps,
    then averages about the last ``(10 + t) / 9`` steps, until ``beta`` takes over after
    ``(10 beta - 1) / (1 - beta)`` steps (8991 for 0.999), so the published ``beta`` is its limit.
    ``"sma"`` (CMRF): the copy follows ``module`` exactly up to ``start_step`` optimizer steps,
    then becomes the uniform mean of the weights from step ``start_step`` on. Buffers (BatchNorm
    statistics) are averaged like parameters, as the official code averages state dicts; integer
    buffers are copied. The copy stays in eval mode and never requires gradients.

    Args:
        module: The student module (kept by reference, not registered as a submodule).
        mode: ``"ema"`` or ``"sma"``.
        beta: EMA decay (the limit of the warm-up).
        start_step: First step of the SMA.
        warmup: Ramp the EMA decay up from 0.1 (see above); ignored by the SMA.
    """

    def __init__(self, module: nn.Module, mode: str = "ema", beta: float = 0.999,
                 start_step: int = 0, warmup: bool = False) -> None:
        super().__init__()
        if mode not in ("ema", "sma"):
            raise ValueError(f"moving-average mode must be 'ema' or 'sma', got {mode!r}")
        self.__dict__["_source"] = module
        self.mode, self.beta, self.start_step = mode, float(beta), int(start_step)
        self.warmup = bool(warmup)
        self.average = copy.deepcopy(module).requires_grad_(False).eval()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> MovingAverage:
        return super().train(False)  # the average is only ever evaluated

    @torch.no_grad()
    def update(self) -> None:
        """Fold the source's current weights into the average (call after each optimizer step)."""
        current = self.__dict__["_source"].state_dict()
        updates = int(self.step)  # before this one
        self.step += 1
        if self.mode == "ema":
            self._blend(current, self.decay(updates))
        elif int(self.step) > self.start_step:
            self.count += 1
            self._blend(current, int(self.count) / (int(self.count) + 1.0))
        else:
            self._blend(current, 0.0)

    def decay(self, updates: int) -> float:
        """The EMA decay of the update after ``updates`` earlier ones."""
        if not self.warmup:
            return self.beta
        return min(self.beta, (1.0 + updates) / (10.0 + updates))

    def init_share(self) -> float:
        """Weight the initial weights still have in the average: the product of the decays so
        far (``beta ** steps`` without warm-up).

        Without warm-up an EMA teacher evaluated while this is large is mostly the (random)
        initialization: it falls below 5 % only after about ``3 / (1 - beta)`` steps (3000 for
        beta = 0.999); with it, below 1e-6 after 25 steps. The SMA is a copy, then a mean of
        trained weights: 0.
        """
        if self.mode != "ema":
            return 0.0
        steps = int(self.step)
        if not self.warmup:
            return self.beta ** steps
        # prod_{u < k} (1 + u) / (10 + u) = 9! k! / (k + 9)!, for the k steps before beta caps it
        ramp = steps if self.beta >= 1 else max(0, math.ceil((10 * self.beta - 1)
                                                             / (1 - self.beta)))
        capped = min(steps, ramp)  # (1 + u) / (10 + u) >= beta from u = ramp on
        log_ramp = math.lgamma(10) + math.lgamma(capped + 1) - math.lgamma(capped + 10)
        return math.exp(log_ramp) * self.beta ** (steps - capped)

    def _blend(self, current: Mapping[str, Tensor], keep: float) -> None:
        for name, avg in self.average.state_dict().items():
            if avg.is_floating_point():
                avg.mul_(keep).add_(current[name].to(avg.dtype), alpha=1.0 - keep)
            else:
                avg.copy_(current[name])


# --------------------------------------------------------------------------------------------
# Jigsaw permutations (MOOSA)


def nth_permutation(n: int, index: int) -> tuple[int, ...]:
    """The ``index``-th permutation of ``range(n)`` in ``itertools.permutations`` order."""
    if not 0 <= index < math.factorial(n):
        raise ValueError(f"permutation index {index} out of range for n = {n}")
    items, out = list(range(n)), []
    for position in range(n, 0, -1):
        block = math.factorial(position - 1)
        out.append(items.pop(index // block))
        index %= block
    return tuple(out)


def sample_permutations(n: int, count: int, seed: int) -> list[tuple[int, ...]]:
    """``count`` distinct permutations of ``range(n)`` (all of them if there are fewer)."""
    total = math.factorial(n)
    indices = random.Random(seed).sample(range(total), min(count, total))
    return [nth_permutation(n, i) for i in indices]


def jigsaw_column_index(chunk_sizes: Sequence[int],
                        permutations: Iterable[Sequence[int]]) -> Tensor:
    """Column indices that concatenate chunks in each permuted order.

    Args:
        chunk_sizes: Widths of the consecutive chunks of the concatenated embedding.
        permutations: Orders of the chunks.

    Returns:
        (P, sum(chunk_sizes)) long tensor: ``z[:, idx[p]]`` is the puzzle of permutation p.
    """
    starts = [0, *itertools.accumulate(chunk_sizes)]
    columns = [list(range(starts[i], starts[i] + chunk_sizes[i])) for i in range(len(chunk_sizes))]
    return torch.tensor([[c for i in perm for c in columns[i]] for perm in permutations],
                        dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Gradient modulation and projection (GMP)


def flat_grad(loss: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
    """The gradient of ``loss`` w.r.t. ``params`` as one flat vector (graph kept)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for p, g in zip(params, grads)])


def leave_one_out_ratios(values: Mapping[str, Tensor], inverse: bool = False) -> dict[str, Tensor]:
    """``v_m / mean_{j != m} v_j`` per key (``inverse``: the reciprocal); 1 with one key."""
    eps = 1e-6
    ratios = {}
    for m, v in values.items():
        others = [values[j] for j in values if j != m]
        if not others:
            ratios[m] = torch.ones_like(v)
            continue
        rest = torch.stack(others).mean()
        ratios[m] = rest / (v + eps) if inverse else v / (rest + eps)
    return ratios


def suppression_coefficient(ratio: Tensor, alpha: float) -> Tensor:
    """GMP's scale: ``clamp(1 - tanh(alpha * ratio), 0, 1)`` where ``ratio > 1``, else 1."""
    suppressed = (1.0 - torch.tanh(alpha * ratio)).clamp(0.0, 1.0)
    return torch.where(ratio > 1.0, suppressed, torch.ones_like(ratio))


def project_conflict(strong: Tensor, weak: Tensor, eps: float = 1e-12) -> Tensor:
    """``strong`` minus its component along ``weak`` (PCGrad-style projection)."""
    return strong - (strong @ weak) / (weak @ weak + eps) * weak


def modulate_gradients(g_cls: Tensor, g_dom: Tensor, sem_ratio: Tensor, dom_ratio: Tensor,
                       alpha_k: float, alpha_p: float) -> Tensor:
    """GMP for one modality: scale both gradients, then resolve a conflict between them.

    The semantic gradient is scaled by ``suppression_coefficient(sem_ratio, alpha_k)``, the
    domain gradient by ``suppression_coefficient(dom_ratio, alpha_p)``. If the scaled
    gradients conflict (negative dot product), the one of the stronger task (larger ratio; the
    semantic one on ties) is projected onto the normal plane of the other.

    Returns:
        The combined flat gradient.
    """
    g_cls = g_cls * suppression_coefficient(sem_ratio, alpha_k)
    g_dom = g_dom * suppression_coefficient(dom_ratio, alpha_p)
    if g_cls @ g_dom < 0:
        if sem_ratio >= dom_ratio:
            g_cls = project_conflict(g_cls, g_dom)
        else:
            g_dom = project_conflict(g_dom, g_cls)
    return g_cls + g_dom


# --------------------------------------------------------------------------------------------
# MBCD


def modality_drop_probabilities(scores: Mapping[str, Tensor], base: float) -> dict[str, Tensor]:
    """MBCD's adaptive modality dropout: ``p_k = base + (1 - base) tanh(r_k - 1)`` if ``r_k > 1``.

    ``r_k`` is the mean over the other modalities of ``s_k / s_j``, with ``s`` the summed max
    softmax confidence of each modality's head on the batch; a modality no more confident than
    the others is never dropped.
    """
    probs = {}
    for m, s in scores.items():
        others = [s / scores[j] for j in scores if j != m]
        r = torch.stack(others).mean() if others else torch.ones_like(s)
        probs[m] = torch.where(r > 1, base + (1 - base) * torch.tanh(r - 1), torch.zeros_like(r))
    return probs


def lookahead_forward(module: nn.Module, x: Tensor, loss: Tensor, lr: float) -> Tensor:
    """``module(x)`` with weights moved one SGD step of ``lr`` down ``loss``'s gradient.

    The step ``g`` is treated as a constant (first order, as MMDG-Bench's MBCD), so the
    returned output's gradient w.r.t. the weights is the gradient at the look-ahead point.
    Under ``torch.distributed`` the step is the rank-averaged gradient.
    """
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    params = [p for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    moved = {n: p - lr * all_reduce_mean(torch.zeros_like(p) if g is None else g)
             for n, p, g in zip(names, params, grads)}
    state = {**dict(module.named_buffers()), **moved}
    return functional_call(module, state, (x,))


# --------------------------------------------------------------------------------------------
# CMRF


def sample_mix_coefficients(n: int, alpha: float,
                            device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Per-sample mixing weights (lam_hi >= 0.5, lam_lo <= 0.5), each ~ Beta(alpha, alpha).

    CMRF draws Beta(alpha, alpha) until the draw is above (resp. below) 0.5; by the symmetry of
    Beta(alpha, alpha) that is the distribution of ``max(l, 1 - l)`` (resp. ``min``), drawn here
    without rejection. ``alpha <= 0`` gives 1 and 0 (no mixing), as in the official code.

    Returns:
        Two (n, 1) tensors.
    """
    if alpha <= 0:
        return torch.ones(n, 1, device=device), torch.zeros(n, 1, device=device)
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    lam = beta.sample((2, n)).to(device)  # (2, n)
    return torch.maximum(lam[0], 1 - lam[0])[:, None], torch.minimum(lam[1], 1 - lam[1])[:, None]

