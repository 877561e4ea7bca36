"""Does the frame encoder learn inside a fused audio-visual model? (issue 15 item 3)

Generates a small audio-visual manifest data set (under ``--workdir``) shaped like a lip-reading
corpus: 10 classes, 3 domains (speakers: mouth width and brightness differ), 12 clips per class
and domain. ``frames`` are grayscale ``(T, 30, 40)`` clips (T 12-20) of a dark mouth ellipse whose
opening follows a class-specific temporal profile, with position jitter and pixel noise;
``mfcc`` is a ``(T, 13)`` sequence (T 20-40) of noisy class-specific means, easy to learn. It then
trains ERM (target ``d0``, 12 epochs, ``--seeds`` seeds) with the 3-D CNN of earlier versions
(channels 8-16-32) and the current default (8-16-32-64-64) on the frames, both fused with the
MFCCs and on the frames alone, and prints the source-validation accuracy of the selected epoch,
each modality's linear-probe accuracy there, and the verdict of
:func:`merdg.evaluation.chance.chance_test`.

Usage (repository root; about 2 minutes on one CPU thread):

    OMP_NUM_THREADS=1 python benchmarks/frame_encoder.py --workdir DIR [--seeds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch

from merdg.evaluation.chance import chance_test
from merdg.run.config import RunConfig
from merdg.run.training import train

CLASSES, DOMAINS, PER_CELL = 10, 3, 12
ENCODERS = {"cnn3d 8-16-32 (before)": [8, 16, 32], "cnn3d 8-16-32-64-64 (default)":
            [8, 16, 32, 64, 64]}


def generate(root: Path, seed: int = 0) -> None:
    """Write the audio-visual manifest data set (skipped when it exists)."""
    if (root / "manifest.csv").is_file():
        return
    rng = np.random.default_rng(seed)
    (root / "frames").mkdir(parents=True, exist_ok=True)
    (root / "mfcc").mkdir(exist_ok=True)
    yy, xx = np.mgrid[0:30, 0:40]
    freqs, phases = rng.uniform(0.5, 2.5, CLASSES), rng.uniform(0, 6.3, CLASSES)
    mfcc_means = rng.normal(0, 1, (CLASSES, 13))
    rows = []
    for d in range(DOMAINS):
        width, brightness = rng.uniform(8, 12), rng.uniform(0.6, 1.0)
        for c in range(CLASSES):
            for k in range(PER_CELL):
                t = int(rng.integers(12, 21))
                opening = 1.5 + 5 * (0.5 + 0.5 * np.sin(2 * np.pi * freqs[c] * np.linspace(0, 1, t)
                                                        + phases[c]))
                cy, cx = 15 + rng.normal(0, 1.5), 20 + rng.normal(0, 1.5)
                clip = brightness + rng.normal(0, 0.15, (t, 30, 40))
                for i in range(t):
                    clip[i][((yy - cy) / opening[i]) ** 2 + ((xx - cx) / width) ** 2 <= 1] -= 0.6
                mfcc = 0.5 * mfcc_means[c] + rng.normal(0, 1.0, (int(rng.integers(20, 41)), 13))
                sid = f"d{d}_c{c}_{k}"
                np.save(root / "frames" / f"{sid}.npy", clip.astype(np.float32))
                np.save(root / "mfcc" / f"{sid}.npy", mfcc.astype(np.float32))
                rows.append({"sample_id": sid, "domain": f"d{d}", "label": f"c{c}",
                             "frames": f"frames/{sid}.npy", "mfcc": f"mfcc/{sid}.npy"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run(data: Path, out: Path, modalities: list[str], channels: list[int], seed: int) -> dict:
    config = RunConfig(dataset="manifest", algorithm="ERM", target="d0", data_root=str(data),
                       modalities=modalities, seed=seed, out_dir=str(out),
                       dataset_options={"progress": False},
                       hparams={"epochs": 12, "encoders": {"frames": {"channels": channels}}})
    summary = train(config)
    chosen = summary["selection"]["source_val"]
    records = [json.loads(line) for line in open(out / "records.jsonl")]
    n = records[chosen["epoch"] - 1]["val"]["n"]
    return {"val_acc": chosen["val_acc"], "probes": chosen["val_probe_acc"], "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    os.environ.setdefault("MERDG_CACHE_DIR", str(work / "cache"))
    data = work / "data"
    generate(data)
    print("| frames encoder | modalities | source-val acc (%) | frames probe (%) | mfcc probe (%) "
          "| frames probe vs chance (10 %) |\n|---|---|---|---|---|---|")
    for name, channels in ENCODERS.items():
        for modalities in (["frames", "mfcc"], ["frames"]):
            results = [run(data, work / "runs" / f"{'-'.join(map(str, channels))}"
                           f"-{'+'.join(modalities)}-seed{s}", modalities, channels, s)
                       for s in range(args.seeds)]

            def mean(values: list[float]) -> str:
                return f"{100 * statistics.mean(values):.1f}"

            frames = [r["probes"]["frames"] for r in results]
            mfcc = [r["probes"]["mfcc"] for r in results] if "mfcc" in modalities else []
            verdicts = [chance_test(r["probes"]["frames"], r["n"], CLASSES) for r in results]
            flagged = sum(v.near_chance for v in verdicts)
            print(f"| {name} | {'+'.join(modalities)} | {mean([r['val_acc'] for r in results])} "
                  f"| {mean(frames)} | {mean(mfcc) if mfcc else '-'} | "
                  f"{flagged} of {len(results)} runs within noise of chance "
                  f"(n = {results[0]['n']}) |")


if __name__ == "__main__":
    main()
