"""Batch sampling for multi-source training."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from merdg.hparams import seed_hash

__all__ = ["BalancedDomainBatchSampler", "split_evenly"]


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` items over ``parts`` slots, the first ``total % parts`` slots one larger."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class BalancedDomainBatchSampler(Sampler[list[int]]):
    """Every batch holds the same number of samples from each source domain.

    Like the official ``BalancedDomainSampler``: each domain is reshuffled every epoch with a
    generator seeded by (seed, epoch, domain), and an epoch has
    ``min_d(size_d // per_domain_d)`` batches, so larger domains are undersampled each epoch
    (a different subset every epoch). A global batch that does not divide by the number of
    domains gives the first domains one extra sample.

    Under data parallelism every rank builds the same global batch and keeps its share of each
    domain's chunk (``chunk[rank::world_size]``): no sample is duplicated across ranks and the
    union over ranks is the single-process batch.

    Args:
        domain_sizes: Training samples per source domain, in the order of the concatenated
            dataset (domain d occupies indices ``[sum(sizes[:d]), sum(sizes[:d+1]))``).
        batch_size: Global batch size (all ranks together).
        seed: Base seed.
        rank: This process' rank.
        world_size: Number of processes.
        names: The domains' names (for error messages; default: their indices).

    Raises:
        ValueError: A domain has fewer samples than its share of one batch, or the batch is
            smaller than the number of domains.
    """

    def __init__(
        self,
        domain_sizes: Sequence[int],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        names: Sequence[str] | None = None,
    ) -> None:
        names = list(names) if names is not None else [str(d) for d in range(len(domain_sizes))]
        if batch_size < len(domain_sizes):
            raise ValueError(
                f"batch_size {batch_size} is smaller than the {len(domain_sizes)} source domains "
                f"({', '.join(names)}): every batch holds at least one sample of each"
            )
        self.sizes = list(domain_sizes)
        self.per_domain = split_evenly(batch_size, len(self.sizes))
        short = [f"{names[d]!r} has {n} training samples, its share of a batch is {k}"
                 for d, (n, k) in enumerate(zip(self.sizes, self.per_domain)) if n < k]
        if short:
            raise ValueError(
                "source domains with fewer training samples than their share of one batch of "
                f"{batch_size}: {'; '.join(short)}; lower batch_size, or leave the domain out "
                "(merdg train --source)"
            )
        self.offsets = [sum(self.sizes[:d]) for d in range(len(self.sizes))]
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw epoch ``epoch``'s batches from the next iteration on, beginning at its batch
        ``start`` (a run resumed in the middle of an epoch skips the batches it trained on)."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start batch {start} is outside an epoch of {len(self)} batches")
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return min(n // k for n, k in zip(self.sizes, self.per_domain))

    def __iter__(self) -> Iterator[list[int]]:
        perms = []
        for d, n in enumerate(self.sizes):
            g = torch.Generator().manual_seed(seed_hash("balanced", self.seed, self.epoch, d))
            perms.append((torch.randperm(n, generator=g) + self.offsets[d]).tolist())
        for step in range(self.start, len(self)):
            batch: list[int] = []
            for perm, k in zip(perms, self.per_domain):
                chunk = perm[step * k : (step + 1) * k]
                batch.extend(chunk[self.rank :: self.world_size])
            yield batch
