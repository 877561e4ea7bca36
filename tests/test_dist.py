"""MER-DG under torch.distributed: 2 gloo processes on CPU versus one process on the whole batch."""

import pytest
import torch

from merdg import dist as mdist
from merdg.losses import MERLoss, mer_loss
from process_groups import WORLD, spawn_in_group


def _loss_and_grad_worker(rank: int, sizes: list[int]) -> None:
    z_all = torch.randn(sum(sizes), 24, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    # single-process reference on the concatenated batch
    ref_z = z_all.clone().requires_grad_(True)
    ref = mer_loss(ref_z, gather_distributed=False)
    ref.backward()
    start = sum(sizes[:rank])
    local = z_all[start:start + sizes[rank]].clone().requires_grad_(True)
    loss = mer_loss(local)
    loss.backward()
    assert torch.allclose(loss, ref, rtol=1e-12), (loss.item(), ref.item())
    # each rank gets world_size x its slice of the full-batch gradient, so that DDP's
    # averaging of parameter gradients reproduces the single-process update
    expected = WORLD * ref_z.grad[start:start + sizes[rank]]
    assert torch.allclose(local.grad, expected, rtol=1e-9, atol=1e-14)
    # without gathering, a rank only sees its own statistics
    assert not torch.allclose(mer_loss(local.detach(), gather_distributed=False), ref)


def _ddp_worker(rank: int) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 12).double()
    reference = torch.nn.Linear(10, 12).double()
    reference.load_state_dict(model.state_dict())
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 10, generator=g, dtype=torch.float64)
    y = torch.randn(16, 12, generator=g, dtype=torch.float64)

    def objective(net, xs, ys, mer):
        z = net(xs)  # per-sample term on the local batch, MER on the gathered batch
        return ((z - ys) ** 2).mean() + 3.0 * mer({"m": z})

    half = slice(8 * rank, 8 * rank + 8)
    objective(ddp, x[half], y[half], MERLoss()).backward()
    # the single-process reference on the whole batch, without gathering
    objective(reference, x, y, MERLoss(gather_distributed=False)).backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-12), (p.grad, q.grad)


@pytest.mark.ddp
@pytest.mark.parametrize("sizes", [[8, 8], [5, 9]])
def test_gathered_loss_and_gradients_match_single_process(sizes):
    spawn_in_group(_loss_and_grad_worker, sizes)


@pytest.mark.ddp
def test_ddp_parameter_gradients_match_single_process():
    spawn_in_group(_ddp_worker)


def test_identity_when_not_distributed():
    x = torch.randn(3, 2)
    assert mdist.gather(x) is x
    assert mdist.world_size() == 1 and mdist.rank() == 0 and mdist.is_main_process()
