#!/usr/bin/env bash
# A small sweep on the built-in synthetic benchmark, killed with SIGKILL while it runs, then
# started again with the same command; checks that nothing was lost and nothing ran twice, and
# that the tables equal those of the same sweep run without interruption (docs/sweeps.md).
# Usage: bash docs/sweep_demo.sh [WORKDIR]   (MERDG="python -m merdg.cli" without an install)
set -euo pipefail
MERDG=${MERDG:-merdg}
WORK=${1:-$(mktemp -d)}
OUT=$WORK/sweep; REF=$WORK/reference
ARGS=(sweep --dataset synthetic --algorithms ERM MERDG --targets d0 d1 --trials 2 --seeds 3
      --hparams '{"epochs": 6}' --dataset-option samples_per_domain=200 --workers 2
      --checkpoint-every 0)  # a checkpoint after every epoch (default: at most one a minute)
count() { find "$OUT/jobs" -name "$1" 2>/dev/null | wc -l; }

echo "== 1. start the sweep (2 worker processes), kill -9 it once 5 jobs are done"
$MERDG "${ARGS[@]}" --out "$OUT" > "$WORK/first.log" 2>&1 &
sweep=$!
while [ "$(count done)" -lt 5 ] || [ "$(count checkpoint.pt)" -lt 1 ]; do sleep 0.1; done
kill -9 "$sweep"; wait "$sweep" 2>/dev/null || true
sleep 1  # the workers get SIGTERM from the kernel when the sweep dies (PR_SET_PDEATHSIG)
echo "killed: $(count done) jobs done, $(count checkpoint.pt) with a checkpoint;" \
     "workers still alive: $(pgrep -f "merdg.experiments.jobs $OUT" | wc -l)"

echo "== 2. status after the kill"
$MERDG "${ARGS[@]}" --out "$OUT" --dry-run | grep -v '^pending'

echo "== 3. the same command again"
$MERDG "${ARGS[@]}" --out "$OUT" 2>/dev/null | grep -E '^(jobs|retrain jobs):'

echo "== 4. checks"
python3 - "$OUT" <<'PY'
import json, pathlib, re, sys
root = pathlib.Path(sys.argv[1])
jobs = sorted(p for p in (root / "jobs").iterdir())
lost = [j.name for j in jobs if [json.loads(l)["epoch"] for l in open(j / "records.jsonl")]
        != list(range(1, 7))]
trained = {j.name: re.findall(r"epoch (\d)/6", (j / "log.txt").read_text()) for j in jobs}
resumed = sum("resuming after epoch" in (j / "log.txt").read_text() for j in jobs)
twice = {n: e for n, e in trained.items() if len(e) != len(set(e))}
print(f"{len(jobs)} jobs, all done: {all((j / 'done').exists() for j in jobs)}; "
      f"records with epochs other than 1..6: {lost}")
print(f"epochs checkpointed in total: {sum(map(len, trained.values()))} (= {len(jobs)} x 6); "
      f"jobs resumed from a checkpoint: {resumed}; epochs checkpointed twice: {twice}")
PY

echo "== 5. the same sweep without interruption, for comparison"
$MERDG "${ARGS[@]}" --out "$REF" > /dev/null 2>&1
python3 - "$OUT" "$REF" <<'PY'
import json, pathlib, sys
a, b = map(pathlib.Path, sys.argv[1:])
strip = lambda p: [{k: v for k, v in json.loads(l).items() if k not in ("time_s", "run")}
                   for l in open(p)]
same = all(strip(p) == strip(b / p.relative_to(a)) for p in a.glob("jobs/*/records.jsonl"))
print(f"records identical to the uninterrupted sweep: {same}; tables identical: "
      f"{(a / 'table.md').read_text() == (b / 'table.md').read_text()}")
PY
cat "$OUT/table.md"
