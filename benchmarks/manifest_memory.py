"""Peak memory of a 2-worker ``merdg bench`` on a generated frame-clip manifest (issue 15 item 4).

Generates (once) a manifest data set shaped like a small audio-visual corpus: ``--clips`` clips
(default 780) in 4 domains and 26 classes, each with a grayscale frame clip ``(T, 60, 80)``,
``T`` uniform in 12..40, and an MFCC-like sequence ``(T, 13)``, ``T`` uniform in 23..79, saved
as ``--dtype`` ``.npy`` files (float32: about 390 MB; float64: twice that). It then runs

    python -m merdg.cli bench --dataset manifest --data-root DATA --algorithms ERM --seeds 1
        --targets d0 --num-workers 2 --hparams '{"epochs": 1}'

in a child process (preprocessing cache in a fresh folder, so the first run builds it), and a
*pipeline* child that only builds the dataset, fits the normalization on the sources and draws
one epoch of training batches (32 clips) from a DataLoader with 2 persistent workers (no model:
the data's own cost). It samples, every 0.1 s, the memory of each child and all its descendants
(the DataLoader workers) from ``/proc`` (Linux only):

- ``rss_sum``: sum of the processes' resident set sizes, what ``ps``/``top`` add up (pages
  shared by a parent and its forked workers are counted once per process);
- ``pss_sum``: sum of the proportional set sizes (each shared page divided among the processes
  that map it): the memory the tree really occupies;
- ``main_rss``: the bench process alone (what ``/usr/bin/time -v`` reports for it).

Each is reported at its peak, in MiB. A second bench on the same cache (``--runs 2``, the
default) shows the steady state when the cache already exists. The pipeline child uses only
``build_dataset``, ``split`` and ``DomainConcat``, so it also runs on older versions of merdg
(``PYTHONPATH`` pointing at another checkout) for a before/after comparison.

Usage (repository root; takes a few minutes on one CPU thread):

    OMP_NUM_THREADS=1 python benchmarks/manifest_memory.py --workdir DIR [--dtype float64]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DOMAINS, CLASSES = 4, 26
FRAME_SIZE, MFCC_CHANNELS = (60, 80), 13
FRAME_T, MFCC_T = (12, 40), (23, 79)


def generate(root: Path, clips: int, dtype: str, seed: int = 0) -> int:
    """Write the manifest data set under ``root`` (skipped when it exists); return its bytes."""
    if (root / "manifest.csv").is_file():
        return sum(p.stat().st_size for p in root.rglob("*.npy"))
    rng = np.random.default_rng(seed)
    for sub in ("frames", "mfcc"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows, total = [], 0
    for i in range(clips):
        sid = f"clip{i:04d}"
        frames = rng.standard_normal((int(rng.integers(FRAME_T[0], FRAME_T[1] + 1)),
                                      *FRAME_SIZE), dtype=np.float32).astype(dtype)
        mfcc = rng.standard_normal((int(rng.integers(MFCC_T[0], MFCC_T[1] + 1)),
                                    MFCC_CHANNELS), dtype=np.float32).astype(dtype)
        np.save(root / "frames" / f"{sid}.npy", frames)
        np.save(root / "mfcc" / f"{sid}.npy", mfcc)
        total += frames.nbytes + mfcc.nbytes
        rows.append({"sample_id": sid, "domain": f"d{i % DOMAINS}",
                     "label": str((i // DOMAINS) % CLASSES),
                     "frames": f"frames/{sid}.npy", "mfcc": f"mfcc/{sid}.npy"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return total


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the task ended meanwhile
            continue
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) when it has ended."""
    try:
        rss = pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
        return rss, pss
    except OSError:
        return 0, 0


def measure(command: list[str], env: dict[str, str], interval: float = 0.1) -> dict[str, float]:
    """Run ``command``; return the peaks (MiB) of the tree's RSS sum, PSS sum and main RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak = {"rss_sum": 0, "pss_sum": 0, "main_rss": 0, "processes": 0}
    while proc.poll() is None:
        pids = _tree(proc.pid)
        mem = [_memory_kib(p) for p in pids]
        peak["rss_sum"] = max(peak["rss_sum"], sum(r for r, _ in mem))
        peak["pss_sum"] = max(peak["pss_sum"], sum(p for _, p in mem))
        peak["main_rss"] = max(peak["main_rss"], mem[0][0])
        peak["processes"] = max(peak["processes"], sum(1 for r, _ in mem if r))
        time.sleep(interval)
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = {k: round(v / 1024, 1) for k, v in peak.items() if k != "processes"}
    result["processes"] = peak["processes"]
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


PIPELINE = """
import sys, torch
from torch.utils.data import DataLoader
from merdg.datasets import build_dataset, collate
from merdg.datasets.base import DomainConcat
torch.set_num_threads(1)
ds = build_dataset("manifest", sys.argv[1], progress=False)
sources = [d for d in ds.domains if d != ds.domains[0]]
ds.fit_normalization(sources)
data = DomainConcat([ds.split(d, "train", 0, 0.2) for d in sources])
loader = DataLoader(data, batch_size=32, shuffle=True, collate_fn=collate,
                    num_workers=int(sys.argv[2]), persistent_workers=int(sys.argv[2]) > 0)
print(sum(len(batch) for batch in loader))
"""


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="where the data set and runs go")
    parser.add_argument("--clips", type=int, default=780)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--runs", type=int, default=2, help="benches on the same cache")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    work = Path(args.workdir)
    data = work / f"data-{args.clips}-{args.dtype}"
    size = generate(data, args.clips, args.dtype)
    print(f"data set: {data} ({args.clips} clips, {size / 2**20:.0f} MiB of .npy arrays)")
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "MERDG_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    results = []
    for run in range(args.runs):
        out = work / f"bench-{run}"
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "merdg.cli", "bench", "--dataset", "manifest",
                   "--data-root", str(data), "--dataset-option", "progress=false",
                   "--algorithms", "ERM", "--seeds", "1", "--targets", "d0",
                   "--num-workers", str(args.workers), "--out", str(out),
                   "--hparams", json.dumps({"epochs": args.epochs})]
        result = measure(command, env)
        result["run"] = ("bench, first (builds the cache)" if run == 0
                         else "bench, again (cache exists)")
        results.append(result)
        print(json.dumps(result))
    pipeline = [sys.executable, "-c", PIPELINE, str(data), str(args.workers)]
    result = measure(pipeline, env)
    result["run"] = f"pipeline only (dataset + 1 epoch of batches, {args.workers} workers)"
    results.append(result)
    print(json.dumps(result))
    print("\n| bench | peak RSS sum (MiB) | peak PSS sum (MiB) | peak main RSS (MiB) | "
          "processes | wall (s) |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['rss_sum']} | {r['pss_sum']} | {r['main_rss']} | "
              f"{r['processes']} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
