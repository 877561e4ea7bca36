"""Distributed helpers that are the identity when ``torch.distributed`` is not initialized.

Batch statistics (mean, std, correlation, log-det) must be computed on the batch gathered from
every rank, with gradients flowing back to each rank's own samples (see ``docs/distributed.md``).
Per-sample losses (cross-entropy) stay local.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process' rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0: the only rank that writes files."""
    return rank() == 0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the incoming gradients over ranks.

    Every rank computes the same global statistic, so the gradient for this rank's rows is the sum
    of what each rank sends back. After DDP averages parameter gradients over ranks, the update
    equals the single-process update on the concatenated batch (the VICReg ``FullGatherLayer``
    convention; lightly issue #1977 explains the 1/world_size bug that the sum avoids).
    Ranks may hold different numbers of rows.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        sizes = _all_gather_sizes(x.shape[0], x.device)
        max_rows = max(sizes)
        padded = x.new_zeros((max_rows, *x.shape[1:]))
        padded[: x.shape[0]] = x
        chunks = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(chunks, padded.contiguous())
        ctx.sizes = sizes
        return torch.cat([c[:n] for c, n in zip(chunks, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: dist.get_rank()])
        return grad[start : start + ctx.sizes[dist.get_rank()]]


def _all_gather_sizes(n: int, device: torch.device) -> list[int]:
    local = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` (rows = samples) from every rank, autograd-aware.

    Args:
        x: Tensor with shape (n_local, ...).

    Returns:
        Tensor with shape (n_global, ...); ``x`` itself when not distributed.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum a (non-differentiable) tensor over ranks in place; identity when not distributed."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


# --- process-group setup and non-differentiable helpers for the training loop ----------------

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when the environment describes more than one process (``torchrun`` sets it)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """This process' rank on its node (``LOCAL_RANK``; 0 when not set)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(backend: str) -> None:
    """Initialize the default process group from torchrun's environment variables.

    Args:
        backend: ``"nccl"`` (CUDA) or ``"gloo"`` (CPU).

    Raises:
        RuntimeError: The environment lacks one of torchrun's variables, or torch.distributed
            is not available in this build.
    """
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE > 1 but {missing} are not set; launch with torchrun")
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed support")
    dist.init_process_group(backend)


def destroy() -> None:
    """Tear the default process group down (no-op when none is initialized).

    Objects in reference cycles that still hold the group (a finished run's DDP wrapper) are
    collected first, so that the group's backend is freed here rather than while the
    interpreter shuts down.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def barrier() -> None:
    """Wait for every rank; no-op when not distributed."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank; ``obj`` itself when not distributed."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
