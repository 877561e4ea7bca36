"""Custom gradient code under DDP: 2 gloo processes on half batches versus one on the whole batch.

GMP (gradient corrections averaged over ranks before the projection) and MBCD (look-ahead step
on the rank-averaged unimodal gradient) must give the single-process gradients exactly. The
models run in eval mode so that dropout and BatchNorm batch statistics are not per-rank.
"""

import pytest
import torch

from merdg.datasets import build_dataset
from merdg.datasets.base import Batch, DomainConcat, collate
from merdg.run.config import RunConfig
from merdg.run.training import build_algorithm, run_hparams
from process_groups import spawn_in_group

TINY = {"epochs": 1, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16, "lr": 0.0,
        "encoders": {m: {"hidden": 16, "out_dim": 8} for m in ("m0", "m1")}}


def _algorithm(name: str, **hparams):
    torch.manual_seed(0)
    ds = build_dataset("synthetic", modalities=["m0", "m1"], samples_per_domain=24, n_classes=3)
    config = RunConfig(dataset="synthetic", target="d0", algorithm=name,
                       hparams={**TINY, **hparams})
    algo = build_algorithm(ds, name, 3, run_hparams(config, ds)).double().eval()
    data = DomainConcat([ds.domain_samples(d) for d in ("d1", "d2", "d3")])
    batch = collate(data.__getitems__(list(range(0, 72, 6))))
    return algo, Batch({m: v.double() for m, v in batch.x.items()}, batch.y, batch.domain)


def _half(batch: Batch, rank: int) -> Batch:
    part = slice(6 * rank, 6 * rank + 6)
    return Batch({m: v[part] for m, v in batch.x.items()}, batch.y[part], batch.domain[part])


def _grads(algo) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in algo.parameters() if p.requires_grad]


def _worker(rank: int) -> None:
    for name, hp in (("GMP", {"alpha_k": 1.0, "alpha_p": 1.0}), ("MBCD", {"inner_lr": 0.5})):
        reference, batch = _algorithm(name, **hp)
        algo, _ = _algorithm(name, **hp)
        if name == "MBCD":  # the dropout masks are random per rank; test the look-ahead
            for a in (reference, algo):
                a.drop_modalities = lambda z, logits: dict(z)
        ddp = torch.nn.parallel.DistributedDataParallel(algo, find_unused_parameters=True)
        algo.set_forward_wrapper(ddp)
        algo.update(_half(batch, rank))
        algo.set_forward_wrapper(None)
        # the reference runs on the whole batch on every rank (its averaging collectives
        # then average identical values)
        reference.update(batch)
        for g, h in zip(_grads(algo), _grads(reference)):
            assert torch.allclose(g, h, rtol=1e-8, atol=1e-10), name


@pytest.mark.ddp
def test_gmp_and_mbcd_gradients_under_ddp_match_single_process():
    spawn_in_group(_worker)
