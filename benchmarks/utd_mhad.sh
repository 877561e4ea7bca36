#!/usr/bin/env bash
# The UTD-MHAD cross-subject benchmark, timed end to end (preprocessing included: the cache
# starts empty) with /usr/bin/time -v, serialized with other heavy jobs by a lock file.
#
#   benchmarks/utd_mhad.sh DATA_ROOT [OUT]      (from the repository root)
#
# Runs `merdg bench --dataset utd-mhad --algorithms ERM MERDG --seeds 3` (both default modality
# sets, every target domain) on one CPU thread, then prints the wall time and peak RSS.
# PYTHON selects the interpreter (default: python). Results: OUT/report.md, OUT/time.txt.
set -euo pipefail
root=${1:?usage: benchmarks/utd_mhad.sh DATA_ROOT [OUT]}
out=${2:-bench-utd-mhad}
python=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export MERDG_CACHE_DIR=${MERDG_CACHE_DIR:-$out/cache}
mkdir -p "$out"
rm -rf "$MERDG_CACHE_DIR" "$out/runs"
lscpu | grep -E '^(Model name|CPU\(s\))' > "$out/machine.txt"
uptime >> "$out/machine.txt"
flock /tmp/merdg-heavy.lock /usr/bin/time -v -o "$out/time.txt" \
  "$python" -m merdg.cli bench --dataset utd-mhad --data-root "$root" \
  --algorithms ERM MERDG --seeds 3 --out "$out"
uptime >> "$out/machine.txt"
grep -E 'Elapsed \(wall|Maximum resident|Percent of CPU' "$out/time.txt"
