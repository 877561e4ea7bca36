"""Data-parallel training under ``torchrun``: the process group, each rank's device, the
DistributedDataParallel wrapper, and sums over ranks for logged terms and metrics.

What is global and what is local (``docs/distributed.md``): per-sample losses (cross-entropy) are
averaged over the rank's own samples and DDP averages the gradients; batch statistics (MER-DG,
BatchNorm on CUDA through SyncBatchNorm) use the batch gathered from every rank; evaluation sums
correct counts, losses and sample counts over ranks. See ``docs/distributed.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from merdg import dist as mdist
from merdg.algorithms import Algorithm

__all__ = ["enable_data_parallel", "mean_over_ranks", "setup_distributed", "sum_over_ranks"]


def setup_distributed(device: torch.device) -> tuple[torch.device, bool]:
    """This rank's device; initializes the process group under torchrun.

    Args:
        device: The requested device (``cuda`` without an index means one GPU per rank).

    Returns:
        The device (``cuda:LOCAL_RANK`` for CUDA) and whether this call initialized the process
        group (nccl on CUDA, gloo on CPU); the caller then destroys it.

    Raises:
        ValueError: A CUDA device with an explicit index under torchrun.
    """
    if not (mdist.is_distributed() or mdist.launched_by_torchrun()):
        return device, False
    device = _rank_device(device)
    if mdist.is_distributed():  # initialized by the caller
        return device, False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    mdist.init_from_env("nccl" if device.type == "cuda" else "gloo")
    return device, True


def _rank_device(device: torch.device) -> torch.device:
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise ValueError(f"under torchrun every rank uses cuda:LOCAL_RANK; pass --device cuda, "
                         f"not {device}")
    return torch.device("cuda", mdist.local_rank())


def enable_data_parallel(algorithm: Algorithm, device: torch.device,
                         per_domain: Sequence[int]) -> None:
    """Wrap ``algorithm`` in DistributedDataParallel and route its updates through the wrapper
    (no-op when not distributed).

    Args:
        algorithm: The algorithm, already on ``device``.
        device: This rank's device.
        per_domain: Samples per source domain in one global batch (for a warning when ranks get
            batches of different sizes).
    """
    if not mdist.is_distributed():
        return
    _sync_batchnorm(algorithm, device)
    uneven = [k for k in per_domain if k % mdist.world_size()]
    if uneven:
        warnings.warn(
            f"per-domain batch shares {list(per_domain)} do not divide by {mdist.world_size()} "
            "ranks: rank batches differ in size, so per-sample losses (averaged per rank) weigh "
            "samples slightly unevenly", stacklevel=2)
    ddp = torch.nn.parallel.DistributedDataParallel(
        algorithm, device_ids=[device.index] if device.type == "cuda" else None,
        # parameters an algorithm leaves out (ERM never calls the projection heads)
        find_unused_parameters=True)
    algorithm.set_forward_wrapper(ddp)


def _sync_batchnorm(algorithm: Algorithm, device: torch.device) -> None:
    """BatchNorm statistics are batch statistics: on CUDA compute them on the global batch."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in algorithm.modules()):
        return
    if device.type == "cuda":
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(algorithm)  # keeps the Parameter objects
    else:
        warnings.warn("BatchNorm statistics stay per rank on CPU (SyncBatchNorm needs CUDA)",
                      stacklevel=3)


def sum_over_ranks(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sums over ranks (in float64); the values when not distributed."""
    if not mdist.is_distributed():
        return list(values)
    sums = torch.tensor(list(values), dtype=torch.float64, device=device)
    return mdist.all_reduce_sum(sums).tolist()


def mean_over_ranks(logs: dict[str, float], n_samples: int,
                    device: torch.device) -> dict[str, float]:
    """Sample-weighted mean of every rank's epoch means (global terms such as MER-DG are equal
    on every rank; per-sample terms are local means)."""
    if not mdist.is_distributed():
        return logs
    keys = sorted(logs)
    sums = sum_over_ranks([n_samples, *(logs[k] * n_samples for k in keys)], device)
    return {k: v / sums[0] for k, v in zip(keys, sums[1:])}
