"""Source validation with and without a ``group`` column on overlapping windows (issue 15 item 1).

Generates the same windowed sensor data set twice with
:func:`merdg.testing.write_windowed_manifest` (3 domains x 3 classes x 6 recordings of
320 steps, windows of 64 steps every 16 steps: 918 windows, 75 % overlap), once with the
recording as ``group`` and once without the column. For each it prints ``merdg data check`` and
runs

    merdg bench --dataset manifest --data-root DATA --algorithms ERM --seeds 1
                --hparams '{"epochs": 5}'

(every domain as target once), then prints, per target, the source-validation accuracy of the
epoch selected on it and that epoch's target accuracy. Without groups, validation windows
overlap training windows of the same recording; with groups, validation holds whole unseen
recordings, so its accuracy says how the model does on new recordings.

Usage (repository root; a few minutes on one CPU thread):

    OMP_NUM_THREADS=1 python benchmarks/windowed_holdout.py --workdir DIR [--epochs 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from merdg.testing import write_windowed_manifest


def _merdg(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "merdg.cli", *args], env=env,
                            capture_output=True, text=True)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"merdg {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    work = Path(args.workdir)
    env = {**os.environ, "MERDG_CACHE_DIR": str(work / "cache"), "OMP_NUM_THREADS": "1"}
    rows = {}
    for name, grouped in (("with group", True), ("without group", False)):
        data = work / ("grouped" if grouped else "ungrouped")
        shutil.rmtree(data, ignore_errors=True)
        write_windowed_manifest(data, group_column=grouped)
        print(f"## merdg data check ({name})\n")
        print(_merdg("data", "check", "--dataset", "manifest", "--data-root", str(data),
                     "--dataset-option", "progress=false", env=env))
        out = work / f"bench-{'grouped' if grouped else 'ungrouped'}"
        shutil.rmtree(out, ignore_errors=True)
        _merdg("bench", "--dataset", "manifest", "--data-root", str(data), "--dataset-option",
               "progress=false", "--algorithms", "ERM", "--seeds", "1", "--out", str(out),
               "--hparams", json.dumps({"epochs": args.epochs}), env=env)
        with open(out / "results.csv", newline="") as f:
            rows[name] = [r for r in csv.DictReader(f) if r["selection"] == "source_val"]
    print("| holdout | target | selected epoch | source-val acc (%) | target acc (%) |")
    print("|---|---|---|---|---|")
    for name, results in rows.items():
        for r in sorted(results, key=lambda r: r["target"]):
            print(f"| {name} | {r['target']} | {r['epoch']} | {100 * float(r['val_acc']):.1f} | "
                  f"{100 * float(r['target_acc']):.1f} |")


if __name__ == "__main__":
    main()
