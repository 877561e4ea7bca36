"""What verifying the preprocessing cache costs (issue 19): the content digest of the inputs
(the cache key) and the sha256 of the entry, against the load they guard.

Two data sets:

- UTD-MHAD (``--utd DIR``, the authors' release; docs/utd-mhad.md): the ``.mat`` files of the
  three modalities (861 samples each) and their ``.npz`` entries;
- the built-in benchmark (the ``synthetic`` dataset's default: 4 domains x 600 samples x 3
  modalities of (32,) vectors) saved as a manifest, one ``.npy`` per sample and modality (the
  ``synthetic`` dataset itself is generated in memory and uses no cache: verification costs
  it nothing).

For each, in this process with a warm page cache (every file read once before timing; a cold
disk adds its read time to the digest of the inputs, which the first, building run pays
anyway): the time of building the dataset from an empty cache, of building it again from the
cache (what every later run does, verification included), and of the verification alone
(``content_digest`` of every input of every modality + ``file_sha256`` of every entry), each
the median of ``--repeats`` runs. It prints the verification's share of the cached load and
the bytes it reads.

Usage (repository root):

    OMP_NUM_THREADS=1 python benchmarks/cache_verification.py --workdir DIR [--utd DATA_DIR]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from merdg.datasets import build_dataset
from merdg.datasets.cache import content_digest, file_sha256
from merdg.datasets.utd_mhad_release import discover_samples, find_root


def timed(work: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``work()`` in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def export_builtin(root: Path) -> Path:
    """The built-in benchmark (default options) as a manifest under ``root``."""
    if (root / "manifest.csv").is_file():
        return root
    dataset = build_dataset("synthetic")
    rows = []
    for domain in dataset.domains:
        samples = dataset.domain_samples(domain)
        for m in dataset.modalities:
            (root / m).mkdir(parents=True, exist_ok=True)
        for i in range(len(samples)):
            sid = f"{domain}_{i:04d}"
            row = {"sample_id": sid, "domain": domain, "label": str(int(samples.y[i]))}
            for m in dataset.modalities:
                np.save(root / m / f"{sid}.npy", samples.x[m][i].numpy())
                row[m] = f"{m}/{sid}.npy"
            rows.append(row)
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def inputs_of(name: str, root: Path, modalities: list[str]) -> dict[str, list[Path]]:
    """The input files of each modality, as the dataset keys its cache entries."""
    if name == "utd-mhad":
        samples, _ = discover_samples(root)
        return {m: [s.path(root, m) for s in samples] for m in modalities}
    with open(root / "manifest.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {m: [root / "manifest.csv", *(root / r[m] for r in rows)] for m in modalities}


def measure(name: str, root: Path, modalities: list[str], cache: Path,
            repeats: int) -> dict[str, float]:
    shutil.rmtree(cache, ignore_errors=True)
    load = lambda: build_dataset(name, str(root), modalities, cache_dir=str(cache),  # noqa: E731
                                 progress=False)
    inputs = inputs_of(name, root, modalities)
    for paths in inputs.values():  # warm the page cache
        content_digest(paths, root)
    start = time.perf_counter()
    load()
    build_s = time.perf_counter() - start
    entries = sorted(p for p in cache.rglob("*") if p.suffix in (".npz", ".npy"))
    load_s = timed(load, repeats)
    digest_s = timed(lambda: [content_digest(p, root) for p in inputs.values()], repeats)
    entry_s = timed(lambda: [file_sha256(p) for p in entries], repeats)
    input_bytes = sum(p.stat().st_size for paths in inputs.values() for p in set(paths))
    entry_bytes = sum(p.stat().st_size for p in entries)
    return {"build_s": build_s, "load_s": load_s, "inputs_s": digest_s, "entries_s": entry_s,
            "input_mib": input_bytes / 2 ** 20, "entry_mib": entry_bytes / 2 ** 20,
            "files": sum(len(paths) for paths in inputs.values())}


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--utd", help="the UTD-MHAD release (or its parent)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [("manifest", "built-in benchmark as a manifest", ["m0", "m1", "m2"],
              export_builtin(args.workdir / "builtin"))]
    if args.utd:
        root = find_root(args.utd)
        cases[:0] = [("utd-mhad", "UTD-MHAD inertial+skeleton", ["inertial", "skeleton"], root),
                     ("utd-mhad", "UTD-MHAD all three", ["depth", "inertial", "skeleton"], root)]
    print("| data | input files | inputs (MiB) | entries (MiB) | build from empty cache (s) | "
          "load from cache (s) | digest of inputs (s) | sha256 of entries (s) | "
          "verification / cached load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, label, modalities, root in cases:
        r = measure(name, root, modalities, args.workdir / f"cache-{name}", args.repeats)
        share = (r["inputs_s"] + r["entries_s"]) / r["load_s"]
        print(f"| {label} | {r['files']} | {r['input_mib']:.1f} | {r['entry_mib']:.1f} | "
              f"{r['build_s']:.2f} | {r['load_s']:.3f} | {r['inputs_s']:.3f} | "
              f"{r['entries_s']:.3f} | {share:.0%} |", flush=True)


if __name__ == "__main__":
    main()
