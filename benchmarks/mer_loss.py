"""Time merdg.mer_loss (forward + backward) against the plain D x D formulation, side by side.

The plain formulation is the official code's: the D x D correlation matrix and ``torch.slogdet``.
Ours takes the N x N Gram path when N < D (exact identity) and a Cholesky log-det. Both run in
the same process, interleaved, on the same inputs; the script prints the speed ratio and the
largest relative difference of the loss values and of the input gradients.

Usage: OMP_NUM_THREADS=1 python benchmarks/mer_loss.py [--repeats 30] [--dtype float32]
Target (issue 2): >= 10x at (16, 2048), never slower elsewhere, agreement within 1e-5.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from merdg.losses import mer_loss

SHAPES = [(16, 128), (48, 128), (16, 2048), (48, 2304), (256, 512)]


def plain_mer(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """The official formulation, transcribed: variance floor + D x D slogdet."""
    std = torch.sqrt(z.var(dim=0) + eps)
    marginal = torch.relu(1.0 - std).mean()
    n, d = z.shape
    x = z - z.mean(dim=0)
    x = x / (x.std(dim=0, unbiased=False) + eps).clamp_min(eps)
    c = x.T @ x / (n - 1) + eps * torch.eye(d, dtype=z.dtype)
    return marginal - torch.linalg.slogdet(c).logabsdet / d


def time_fwd_bwd(fn, z: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Median seconds of forward + backward; also the loss and gradient of the last call."""
    times = []
    for _ in range(repeats):
        x = z.detach().clone().requires_grad_(True)
        start = time.perf_counter()
        loss = fn(x)
        loss.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times), loss.detach(), x.grad


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude of the reference ``b``."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def value_and_grad(fn, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = z.detach().clone().requires_grad_(True)
    loss = fn(x)
    loss.backward()
    return loss.detach(), x.grad


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per shape and path")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, timed dtype {args.dtype}")
    print("agreement: ours vs plain, both in float64 (the algorithms); err32: each path in float32 "
          "vs the float64 plain reference")
    print(f"{'N':>5} {'D':>5} {'plain ms':>9} {'merdg ms':>9} {'speedup':>8} {'value diff':>11} "
          f"{'grad diff':>10} {'err32 plain/ours (value)':>25} {'err32 plain/ours (grad)':>24}")
    for n, d in SHAPES:
        z = torch.randn(n, d, dtype=dtype)
        # warm-up
        for fn in (plain_mer, mer_loss):
            time_fwd_bwd(fn, z, 3)
        rounds = {plain_mer: [], mer_loss: []}
        for _ in range(3):  # alternate; keep each path's best median (noise only adds time)
            for fn in rounds:
                rounds[fn].append(time_fwd_bwd(fn, z, args.repeats)[0])
        t_plain, t_ours = min(rounds[plain_mer]), min(rounds[mer_loss])
        v64, g64 = value_and_grad(plain_mer, z.double())
        w64, h64 = value_and_grad(mer_loss, z.double())
        v32, g32 = value_and_grad(plain_mer, z.float())
        w32, h32 = value_and_grad(mer_loss, z.float())
        print(f"{n:>5} {d:>5} {t_plain * 1e3:>9.3f} {t_ours * 1e3:>9.3f} {t_plain / t_ours:>7.1f}x "
              f"{rel_diff(w64, v64):>11.1e} {rel_diff(h64, g64):>10.1e} "
              f"{rel_diff(v32, v64):>12.1e} / {rel_diff(w32, v64):<10.1e} "
              f"{rel_diff(g32, g64):>11.1e} / {rel_diff(h32, g64):<10.1e}")


if __name__ == "__main__":
    main()
