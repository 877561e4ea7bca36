"""Run a test body in each process of a 2-process gloo group (torch.multiprocessing.spawn).

The body runs in its own frame, so that everything it built is unreferenced when it returns;
``merdg.dist.destroy`` then collects what sits in reference cycles (a DDP wrapper holds the
process group) before destroying the group. A gloo group freed while the interpreter shuts down
aborts the process ("terminate called without an active exception", pytorch/pytorch#190489).
"""

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from merdg import dist as mdist

WORLD = 2


def _run_in_group(rank: int, init_file: str, body: Callable[..., None], *args: Any) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        body(rank, *args)
    finally:
        mdist.destroy()


def spawn_in_group(body: Callable[..., None], *args: Any) -> None:
    """``body(rank, *args)`` in each of ``WORLD`` processes of one gloo group (a module-level
    function, as spawn pickles it by name); a failure in any process fails the caller."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_run_in_group, args=(os.path.join(tmp, "init"), body, *args), nprocs=WORLD,
                 join=True)
