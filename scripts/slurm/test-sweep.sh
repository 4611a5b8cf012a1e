#!/usr/bin/env bash
# A sweep through a real Slurm: starts a throwaway single-node cluster (cluster.sh), submits a small
# sweep with sweep.sh (the default model, 3 schemes + the noise floor, 4 prompts, 4 shards), checks
# the merged report against one `compare --reference` process, then submits it again into a second
# folder, cancels one shard task, resubmits only that task, merges, and checks the same report
# comes out. Stops everything it started. Root only (slurmd launches jobs). Run by .ci/run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
qd=${QUANTDRIFT:-$root/.build/release/quantdrift}
[ -x "$qd" ] || { echo "test-sweep: build first (swift build -c release)" >&2; exit 2; }
work=$(mktemp -d /tmp/qd-slurm-test.XXXXXX)
chmod 755 "$work"
cluster="$work/cluster"
mkdir -p "$cluster"
stop() { scripts/slurm/cluster.sh stop "$cluster" >&2 || true; }
trap stop EXIT
t0=$(date +%s)
eval "$(scripts/slurm/cluster.sh start "$cluster")"

cat > "$work/w.jsonl" <<'JSONL'
{"id": "bridge", "prompt": "The old bridge over the river was", "chat": false, "max_tokens": 12}
{"id": "colours", "prompt": "Name three colours of the rainbow.", "chat": true, "max_tokens": 12}
{"id": "code", "prompt": "def add(a, b):", "chat": false, "max_tokens": 12}
{"id": "rain", "prompt": "Rain fell on the market square while", "chat": false, "max_tokens": 12}
JSONL
cat > "$work/sweep.json" <<JSON
{"models": ["$root/Weights/SmolLM2-135M-Instruct.Q4_1.gguf"], "schemes": ["w8", "kv4", "w4g32"],
 "workloads": ["$work/w.jsonl"], "mode": "both", "prompts_per_unit": 1}
JSON

# Waits until every listed job has left the queue (or fails after $2 seconds).
wait_jobs() {
    local jobs=$1 limit=$2 start
    start=$(date +%s)
    while [ -n "$(squeue -h -j "$jobs" 2>/dev/null)" ]; do
        [ $(( $(date +%s) - start )) -lt "$limit" ] || { echo "test-sweep: jobs $jobs still queued after ${limit}s" >&2; squeue -j "$jobs" >&2; return 1; }
        sleep 2
    done
}
# report.json without timings and the trace's path (which names the folder).
canonical() { python3 - "$1" <<'PY'
import json, sys
def strip(d):
    if isinstance(d, dict):
        return {k: strip(v) for k, v in d.items() if not (k.endswith("_seconds") or k.endswith("_tok_s") or k == "trace_file")}
    if isinstance(d, list):
        return [strip(x) for x in d]
    return d
print(json.dumps(strip(json.load(open(sys.argv[1]))), sort_keys=True))
PY
}

# 1. The whole sweep through Slurm, against one local process.
# (Its lines go to stderr by echo, not `tee /dev/stderr`: reopening /dev/stderr would truncate a log file it points to.)
submitted=$(SHARDS=4 TIME=00:10:00 QUANTDRIFT=$qd scripts/slurm/sweep.sh "$work/sweep.json" "$work/a")
echo "$submitted" >&2
read -r _ ref cand merge < <(grep '^JOBS' <<<"$submitted")
wait_jobs "$ref,$cand,$merge" 240
report="$work/a/SmolLM2-135M-Instruct.Q4_1/w/report/report.json"
[ -f "$report" ] || { echo "test-sweep: no merged report; logs:" >&2; tail -n 5 "$work"/a/logs/*.log >&2; exit 1; }
"$qd" compare --model "$root/Weights/SmolLM2-135M-Instruct.Q4_1.gguf" --schemes w8,kv4,w4g32 --prompts "$work/w.jsonl" \
    --reference "$work/a/SmolLM2-135M-Instruct.Q4_1/w/reference.trace" --out "$work/local" >/dev/null 2>&1
[ "$(canonical "$report")" = "$(canonical "$work/local/report.json")" ] || { echo "test-sweep: merged report differs from compare's" >&2; exit 1; }
echo "test-sweep: merged report = one-process compare" >&2

# 2. Again, one shard task cancelled: the merge cannot run; resubmitting that task and merging restores the report.
read -r _ ref cand merge < <(SHARDS=4 TIME=00:10:00 QUANTDRIFT=$qd scripts/slurm/sweep.sh "$work/sweep.json" "$work/b" | grep '^JOBS')
# Cancel shard 1 mid-run: once it is running and has had a second to load the model.
state=""
for _ in $(seq 1 1200); do
    state=$(squeue -h -j "${cand}_1" -o %T 2>/dev/null || true)
    [ "$state" = RUNNING ] && break
    [ -n "$(squeue -h -j "$cand" 2>/dev/null)" ] || break
    sleep 0.1
done
[ "$state" = RUNNING ] && sleep 1
echo "test-sweep: cancelling shard 1 (state ${state:-finished})" >&2
scancel "${cand}_1"
wait_jobs "$ref,$cand,$merge" 240
[ ! -f "$work/b/SmolLM2-135M-Instruct.Q4_1/w/report/report.json" ] || { echo "test-sweep: merged despite a cancelled shard" >&2; exit 1; }
if "$qd" sweep merge "$work/b" > "$work/b-missing.txt" 2>&1; then
    echo "test-sweep: note: the cancelled task had already finished its units" >&2
else
    grep -q "missing" "$work/b-missing.txt"
fi
again=$(sbatch --parsable --array=1 --time=00:10:00 --output="$work/b/logs/shard-again-%a.log" \
    --wrap="'$qd' sweep run '$work/sweep.json' --shard auto --shards 4 --out '$work/b'")
wait_jobs "$again" 240
"$qd" sweep merge "$work/b" >/dev/null
[ "$(canonical "$work/b/SmolLM2-135M-Instruct.Q4_1/w/report/report.json")" = "$(canonical "$report")" ] || { echo "test-sweep: resubmitted sweep differs" >&2; exit 1; }
echo "test-sweep: a cancelled shard, resubmitted alone, merges to the same report" >&2

trap - EXIT
scripts/slurm/cluster.sh stop "$cluster" >&2
rm -rf "$work"
echo "test-sweep: passed in $(( $(date +%s) - t0 )) s"
