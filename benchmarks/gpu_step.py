"""One training step of the paper's V+A+F model: time, peak GPU memory, share of MER-DG.

Full-size encoders with random weights (SlowFast R101 on 3x32x224x224 RGB clips, SlowOnly R50
on 2x8x224x224 flow, VGGSound ResNet-18 on 1x257x1004 spectrograms; trunks frozen as in the
paper), global batch 16 (8 per source domain), official hyperparameters. For fp32 and bf16
autocast, and for ERM ("Fusion") and MER-DG, it reports:

- the median step time (forward, backward, Adam) over ``--steps`` steps after warm-up;
- the peak GPU memory of a step;
- the MER loss's share of the MER-DG step: forward + backward of the loss alone on the step's
  projection features (128-d, one per modality), timed in isolation, over the step time;
  and the whole MER-DG overhead, (MER-DG step - ERM step) / MER-DG step, which also counts the
  projection heads MER-DG adds.

Usage (GPU, a few minutes): python benchmarks/gpu_step.py [--steps 10]
CPU smoke test of the script: OMP_NUM_THREADS=1 python benchmarks/gpu_step.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from merdg.algorithms import get_algorithm_class
from merdg.datasets.base import Batch
from merdg.hparams import TRAINING_HPARAMS, resolve_hparams
from merdg.models import MultimodalNet, build_encoder

FULL = {"video": ((3, 32, 224, 224), {"name": "slowfast"}),
        "audio": ((1, 257, 1004), {"name": "vggsound_resnet"}),
        "flow": ((2, 8, 224, 224), {"name": "slowonly"})}
TINY = {"video": ((3, 32, 32, 32), {"name": "slowfast", "width": 8,
                                    "stage_blocks": [1, 1, 1, 1]}),
        "audio": ((1, 64, 128), {"name": "vggsound_resnet", "width": 8,
                                 "stage_blocks": [1, 1, 1, 1]}),
        "flow": ((2, 8, 32, 32), {"name": "slowonly", "width": 8,
                                  "stage_blocks": [1, 1, 1, 1]})}


def build(algorithm: str, specs: dict, device: torch.device, tiny: bool):
    algorithm_cls = get_algorithm_class(algorithm)
    # the declared defaults are the paper's values (merdg.presets)
    overrides = {"proj_hidden": 64, "fusion_hidden": 32} if tiny else {}
    hparams = resolve_hparams(TRAINING_HPARAMS, algorithm_cls.HPARAMS, overrides=overrides)
    encoders = {m: build_encoder(spec, shape) for m, (shape, spec) in specs.items()}
    net = MultimodalNet(encoders, num_classes=8, order=list(specs),
                        fusion_hidden=hparams["fusion_hidden"], dropout=hparams["dropout"],
                        proj_hidden=hparams["proj_hidden"], proj_dim=hparams["proj_dim"])
    algo = algorithm_cls(net, num_domains=2, hparams=hparams).to(device)
    algo.configure_optimizer()
    algo.train()
    return algo


def make_batch(specs: dict, batch: int, device: torch.device) -> Batch:
    g = torch.Generator().manual_seed(0)
    x = {m: torch.randn(batch, *shape, generator=g).to(device) for m, (shape, _) in specs.items()}
    y = torch.randint(0, 8, (batch,), generator=g).to(device)
    return Batch(x, y, torch.arange(batch, device=device) % 2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(algo, batch: Batch, steps: int, warmup: int, device: torch.device) -> list[float]:
    times = []
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        algo.update(batch)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def mer_time(algo, batch: Batch, repeats: int, device: torch.device) -> float:
    """Median forward + backward time of the MER loss alone on this batch's projections."""
    with torch.no_grad(), algo.autocast():
        out = algo.net(batch.x)
        proj = algo.net.project(out.embeddings)
    feats = {m: z.float().detach().requires_grad_(True) for m, z in proj.items()}
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        algo.mer.reduce(algo.mer.terms(feats)).backward()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(algorithm: str, precision: str, args, device: torch.device) -> dict:
    specs = TINY if args.tiny else FULL
    torch.manual_seed(0)
    algo = build(algorithm, specs, device, args.tiny)
    algo.set_precision(precision)
    batch = make_batch(specs, args.batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_steps(algo, batch, args.steps, args.warmup, device)
    result = {"step_s": statistics.median(times)}
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if algorithm == "MERDG":
        result["mer_s"] = mer_time(algo, batch, max(args.steps, 5), device)
    del algo
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny encoders and inputs (smoke)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --device cpu --tiny for a smoke test")
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        print(f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"V+A+F, {'tiny' if args.tiny else 'full-size'} encoders, batch {args.batch}, "
          f"median of {args.steps} steps after {args.warmup} warm-up steps")
    header = f"{'precision':9s} {'algorithm':9s} {'step ms':>9s} {'peak GiB':>9s} " \
             f"{'MER loss %':>10s} {'MER-DG overhead %':>17s}"
    print(header)
    for precision in args.precisions.split(","):
        erm = measure("ERM", precision, args, device)
        mer = measure("MERDG", precision, args, device)
        for name, r in (("ERM", erm), ("MERDG", mer)):
            peak = f"{r['peak_gib']:9.2f}" if "peak_gib" in r else f"{'-':>9s}"
            share = f"{100 * r['mer_s'] / r['step_s']:10.1f}" if "mer_s" in r else f"{'-':>10s}"
            overhead = (f"{100 * (mer['step_s'] - erm['step_s']) / mer['step_s']:17.1f}"
                        if name == "MERDG" else f"{'-':>17s}")
            print(f"{precision:9s} {name:9s} {r['step_s'] * 1e3:9.1f} {peak} {share} {overhead}")


if __name__ == "__main__":
    main()
