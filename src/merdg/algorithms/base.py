"""Algorithm interface (DomainBed-style) and the registry.

An :class:`Algorithm` owns its network and optimizer. ``objective(batch)`` builds the loss and
the logged terms; ``update(batch)`` runs one optimization step; ``evaluate(x)`` returns the
logits used for accuracy. ``forward(batch)`` is ``objective(batch)``, so a data-parallel wrapper
(``DistributedDataParallel(algorithm)``) sees the whole training computation.

A new algorithm is one class decorated with ``@ALGORITHMS.register("Name")`` that declares its
hyperparameters in ``HPARAMS`` and overrides ``objective`` (and, if it adds networks, calls
``super().__init__`` first).

**Regression tasks** (MOSI/MOSEI/CH-SIMS sentiment intensity): the fused network has one
output, and the fused term is the L1 loss against the batch's ``target``
(:meth:`Algorithm.fused_loss`, logged as ``l1``; cross-entropy ``ce`` for classification), as
MMDG-Bench's MMSA scripts train (``L1Loss``). Every class-based term (probes, unimodal heads,
SupCon labels, ...) reads ``batch.y``, which a regression batch fills with the target's sign
class (negative / zero / positive), as the benchmark's contrastive terms do. An algorithm says
how it runs on regression in :attr:`Algorithm.REGRESSION` (one line), or refuses it with
:attr:`Algorithm.REGRESSION_REFUSAL` (:func:`check_task`).

Terms that regularize representations (MER-DG) are composed onto any algorithm through the
neutral hooks :meth:`Algorithm.representations` and :meth:`Algorithm.requested_representations`
(:func:`merdg.algorithms.mer.with_mer`); the registry lookup that resolves ``"X+MER"`` is
:func:`merdg.algorithms.get_algorithm_class`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from contextlib import nullcontext
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from merdg.datasets.base import Batch
from merdg.hparams import OPTIONAL_HPARAMS, HParam
from merdg.models.multimodal_net import ModelOutput, MultimodalNet
from merdg.registry import Registry

__all__ = ["ALGORITHMS", "Algorithm", "EvalOutput", "NonFiniteLossError", "Objective",
           "check_task"]


class NonFiniteLossError(FloatingPointError, ValueError):
    """The training loss became NaN or infinite; nothing was stepped.

    A ``ValueError`` too, so the command line reports it as one line (exit status 2): it comes
    from the run's settings (a learning rate or a term weight too large) or its data.

    Attributes:
        terms: Every logged term of the objective, as floats.
        where: Where in the run it happened (filled in by the training loop), or "".
        advice: What to do (filled in by the training loop), or "".
        detail: What went non-finite when it is not a logged term (e.g. the representations
            a composed term regularizes), or "".
    """

    def __init__(self, terms: dict[str, float], where: str = "", advice: str = "",
                 detail: str = "") -> None:
        self.terms, self.where, self.advice, self.detail = dict(terms), where, advice, detail
        super().__init__(self.message())

    def non_finite_terms(self) -> dict[str, float]:
        return {k: v for k, v in self.terms.items() if not math.isfinite(v)}

    def message(self) -> str:
        bad = self.non_finite_terms()
        if self.detail:
            what = self.detail
        elif bad:
            what = "non-finite terms: " + ", ".join(f"{k}={v}" for k, v in bad.items())
        else:
            what = ("every term is finite (" + ", ".join(f"{k}={v:.4g}" for k, v in
                                                         self.terms.items())
                    + ") but their weighted sum overflowed")
        where = f" at {self.where}" if self.where else ""
        advice = f"; {self.advice}" if self.advice else ""
        return f"non-finite training loss{where}: {what}{advice}"

    def located(self, where: str, advice: str = "") -> NonFiniteLossError:
        """The same error with the run's position (step, epoch) and what to do."""
        return NonFiniteLossError(self.terms, where, advice, self.detail)


class Objective(NamedTuple):
    """What ``Algorithm.objective`` returns.

    Attributes:
        loss: Scalar to minimize (everything the optimizer sees, probes included).
        logs: Named scalar terms to record (``{"ce": ..., "mer": ..., "mer_spec/audio": ...}``).
        out: The network's forward output on the batch (reused by composed terms such as MER).
        extras: Further tensors a composed term may reuse (e.g. ``"projections"``).
    """

    loss: Tensor
    logs: dict[str, Tensor]
    out: ModelOutput
    extras: dict[str, Any]


class EvalOutput(NamedTuple):
    """Logits used for evaluation: fused (N, C) and per-modality probes ``{m: (N, C)}``."""

    logits: Tensor
    probe_logits: dict[str, Tensor]


def _as_floats(objective: Objective) -> tuple[float, dict[str, float]]:
    """The loss and the logged terms as Python floats, read from the device at once."""
    names = list(objective.logs)
    values = [objective.loss, *(objective.logs[k] for k in names)]
    tensors = [v for v in values if isinstance(v, Tensor)]
    if tensors and all(t.numel() == 1 and t.device == tensors[0].device for t in tensors):
        same = all(t.dtype == tensors[0].dtype for t in tensors)  # else widened exactly
        stacked = torch.stack([t.detach().reshape(()) if same else t.detach().reshape(())
                               .double() for t in tensors])
        read = iter(stacked.tolist())
        values = [float(next(read)) if isinstance(v, Tensor) else float(v) for v in values]
    else:
        values = [float(v.detach()) if isinstance(v, Tensor) else float(v) for v in values]
    return values[0], dict(zip(names, values[1:]))


class Algorithm(nn.Module):
    """Base class: late-fusion training with detached unimodal probes.

    Args:
        net: The multimodal network.
        num_domains: Number of source domains.
        hparams: Resolved hyperparameters (see :mod:`merdg.hparams`); read in ``__init__`` so
            that a missing key fails before training starts.
    """

    HPARAMS: ClassVar[dict[str, HParam]] = {}
    # the smallest global batch whose terms are defined (batch statistics, BatchNorm heads,
    # contrastive negatives need 2), and why; checked before a run starts
    MIN_BATCH: ClassVar[int] = 1
    MIN_BATCH_REASON: ClassVar[str] = ""
    # an open-set method (MOOSA-OS): runs only in the open-set setting (RunConfig.open_set)
    OPEN_SET_ONLY: ClassVar[bool] = False
    # how it runs on a regression task (one line; None: it does not, REGRESSION_REFUSAL says why)
    REGRESSION: ClassVar[str | None] = ("L1 of the fused output; the probes' CE on the "
                                        "target's sign class")
    REGRESSION_REFUSAL: ClassVar[str] = ""

    def __init__(self, net: MultimodalNet, num_domains: int, hparams: Mapping[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.task = net.task
        self.num_domains = num_domains
        self.hparams = dict(hparams)
        self.lr = float(hparams["lr"])
        self.weight_decay = float(hparams["weight_decay"])
        self.grad_clip = float(hparams["grad_clip"])
        self.lr_schedule = hparams.get("lr_schedule", OPTIONAL_HPARAMS["lr_schedule"].default)
        # the schedule's length: lr_decay_steps, else the step budget (checked when resolved)
        self.lr_decay_steps = int(hparams.get("lr_decay_steps") or hparams.get("steps") or 1)
        self.optimizer: torch.optim.Optimizer | None = None
        # autocast dtype of the forward pass (None: full precision); see set_precision
        self.autocast_dtype: torch.dtype | None = None
        # what update() calls to build the objective: the algorithm itself, or a wrapper such as
        # DistributedDataParallel(self) (kept out of the module tree; see set_forward_wrapper)
        self.__dict__["_forward_fn"] = None

    @property
    def modalities(self) -> list[str]:
        return self.net.modalities

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """Adam over every trainable parameter (official: Adam, lr 1e-4, weight decay 1e-4)."""
        params = [p for p in self.parameters() if p.requires_grad]
        # the fused kernel is several times faster for the many small tensors of these nets
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point
                    for p in params)
        self.optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay,
                                          fused=fused)
        return self.optimizer

    def set_precision(self, precision: str) -> None:
        """``"fp32"`` (default) or ``"bf16"``/``"fp16"`` autocast for the forward pass; batch
        statistics such as the MER-DG terms are computed in float32 regardless."""
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise ValueError(f"precision must be one of {list(dtypes)}, got {precision!r}")
        self.autocast_dtype = dtypes[precision]

    def set_forward_wrapper(self, fn: Callable[[Batch], Objective] | None) -> None:
        """Make :meth:`update` build objectives through ``fn`` (e.g. a DDP wrapper of self)."""
        self.__dict__["_forward_fn"] = fn

    def autocast(self):
        """The autocast context of the forward pass (a no-op in full precision)."""
        if self.autocast_dtype is None:
            return nullcontext()
        device_type = next(self.parameters()).device.type
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)

    def objective(self, batch: Batch) -> Objective:
        raise NotImplementedError

    def forward(self, batch: Batch) -> Objective:
        return self.objective(batch)

    @property
    def fused_term(self) -> str:
        """The name of the fused loss term: ``"ce"`` (classification) or ``"l1"``
        (regression)."""
        return "l1" if self.task == "regression" else "ce"

    def fused_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """The task's loss of the fused output: cross-entropy against ``batch.y``, or, for a
        regression task, the mean absolute error of the one output against ``batch.target``
        (MMDG-Bench's MMSA ``L1Loss``)."""
        if self.task == "regression":
            return F.l1_loss(logits[:, 0].float(), batch.target)
        return F.cross_entropy(logits, batch.y)

    def probe_loss(self, out: ModelOutput, y: Tensor) -> Tensor:
        """Mean CE of the detached unimodal probes (trains only the probes)."""
        losses = [F.cross_entropy(out.probe_logits[m], y) for m in self.modalities]
        return torch.stack(losses).mean()

    def update(self, batch: Batch) -> dict[str, float]:
        """One optimization step on ``batch``; returns the logged terms as floats."""
        forward = self.__dict__["_forward_fn"] or self
        with self.autocast():
            objective = forward(batch)
        return self.apply_update(objective)

    def apply_update(self, objective: Objective) -> dict[str, float]:
        """Backward, optional gradient clipping and the optimizer step for ``objective``.

        Raises:
            NonFiniteLossError: The loss is NaN or infinite (naming the non-finite terms);
                the weights and the optimizer are left as they were.
        """
        if self.optimizer is None:
            self.configure_optimizer()
        loss, logs = _as_floats(objective)  # one synchronization for the loss and the terms
        if not math.isfinite(loss):
            raise NonFiniteLossError(logs)
        self.optimizer.zero_grad(set_to_none=True)
        corrections = self.gradient_corrections(objective)
        objective.loss.backward()
        for param, extra in corrections:
            param.grad = extra if param.grad is None else param.grad.add_(extra)
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters(), self.grad_clip)
        self.schedule_lr()
        self.optimizer.step()
        return logs

    def optimizer_steps(self) -> int:
        """Optimizer steps taken so far (Adam's step count, which checkpoints keep)."""
        for state in self.optimizer.state.values():
            if "step" in state:
                return int(state["step"])
        return 0

    def schedule_lr(self) -> None:
        """Set the learning rate of the coming step: the ``"inverse"`` schedule of MMDG-Bench's
        HUST scripts, ``lr_i = lr / (1 + 10 (i - 1) / I) ** 0.75`` at step i of ``I =
        lr_decay_steps`` (``HUSTmotor/train_HUST_*.py`` of lihongzhao99/MMDG_Benchmark), on
        every parameter group's initial rate; nothing for ``"constant"``."""
        if self.lr_schedule == "constant":
            return
        factor = (1.0 + 10.0 * self.optimizer_steps() / self.lr_decay_steps) ** -0.75
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor

    def gradient_corrections(self, objective: Objective) -> list[tuple[nn.Parameter, Tensor]]:
        """Extra gradients that :meth:`apply_update` adds after ``objective.loss.backward()``.

        Computed before the backward pass, while the graph is alive (e.g. GMP's modulated and
        projected per-modality gradients minus the plain ones). Default: none. Under DDP the
        corrections must already be identical on every rank (average what they depend on).
        """
        return []

    @torch.no_grad()
    def evaluate(self, x: Mapping[str, Tensor], zero: Collection[str] = ()) -> EvalOutput:
        """Fused and probe logits; modalities in ``zero`` are zero-filled in the fusion."""
        with self.autocast():
            out = self.net(x, zero=zero)
        return EvalOutput(out.logits, out.probe_logits)

    @torch.no_grad()
    def predict(self, x: Mapping[str, Tensor]) -> Tensor:
        """Fused logits (N, C)."""
        return self.evaluate(x).logits

    REPRESENTATION_KINDS: ClassVar[tuple[str, ...]] = ("projection", "normalized_projection",
                                                       "embedding")

    def requested_representations(self) -> tuple[str, ...]:
        """Representation kinds a term composed onto this algorithm will regularize.

        Empty by default; a composition such as :func:`merdg.algorithms.mer.with_mer` returns
        the kind it regularizes, and an algorithm that needs extra heads for a kind (SimMMDG's
        specific-half heads) builds them in ``__init__`` only when it is requested.
        """
        return ()

    def representations(self, objective: Objective, kind: str) -> dict[str, Tensor]:
        """Per-modality representations of ``kind`` that an add-on term may regularize.

        ``"projection"``: the projection heads' outputs (MER-DG's official target,
        ``train_mer_dg.py``); ``"normalized_projection"``: the same, L2-normalized;
        ``"embedding"``: the raw encoder outputs.
        """
        embeddings = objective.out.embeddings
        if kind == "embedding":
            return dict(embeddings)
        proj = objective.extras.get("projections") or self.net.project(embeddings)
        if kind == "projection":
            return proj
        if kind == "normalized_projection":
            return {m: F.normalize(z, dim=1) for m, z in proj.items()}
        raise ValueError(f"unknown representation kind {kind!r}; choose from "
                         f"{list(self.REPRESENTATION_KINDS)}")


def check_task(name: str, algorithm: type[Algorithm], task: str) -> None:
    """Refuse an algorithm that does not run on the data set's task.

    Raises:
        ValueError: One line naming the algorithm and why (its ``REGRESSION_REFUSAL``).
    """
    if task == "regression" and algorithm.REGRESSION is None:
        raise ValueError(f"{name} does not run on a regression task: "
                         f"{algorithm.REGRESSION_REFUSAL}")


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")
