#!/usr/bin/env bash
# Submits a QuantDrift sweep to Slurm: the reference units as one job array, the candidate shards as
# a second array that starts once every reference task succeeded (--dependency=afterok), then the
# merge after the shards. Prints the job ids and how to follow them.
#
#   scripts/slurm/sweep.sh sweep.json DIR
#
# DIR must be on a file system every node sees. Knobs (environment):
#   SHARDS     candidate shards (default 4)
#   PARTITION  partition (default: the cluster's default)
#   TIME       time limit per task (default 02:00:00; the plan's costs say which shards are heavy)
#   MEM        memory per task (default: 3 × the largest model file + 1 GiB, in MB: weights, one
#              scheme's copy and the decode state; see the README's memory rule)
#   QUANTDRIFT the quantdrift executable (default: quantdrift on PATH, else .build/release/quantdrift)
set -euo pipefail
sweep=${1:?usage: sweep.sh sweep.json DIR}
dir=${2:?usage: sweep.sh sweep.json DIR}
shards=${SHARDS:-4}
qd=${QUANTDRIFT:-$(command -v quantdrift || echo "$PWD/.build/release/quantdrift")}
[ -x "$qd" ] || { echo "sweep.sh: no quantdrift executable at $qd (set QUANTDRIFT)" >&2; exit 2; }
sweep=$(cd "$(dirname "$sweep")" && pwd)/$(basename "$sweep")
mkdir -p "$dir/logs"
dir=$(cd "$dir" && pwd)

# Units and the largest model from the plan.
plan_json=$("$qd" sweep plan "$sweep" --shards "$shards" --json)
refs=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["references"])' "$plan_json")
model_mb=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["largest_model_mb"])' "$plan_json")
mem=${MEM:-$((3 * model_mb + 1024))}
common=(--parsable --time="${TIME:-02:00:00}" --mem="${mem}M" --cpus-per-task=1)
[ -n "${PARTITION:-}" ] && common+=(--partition="$PARTITION")

# --shards is given explicitly: a resubmitted single task would otherwise see a count of 1.
ref_job=$(sbatch "${common[@]}" --job-name=qd-ref --array=0-$((refs - 1)) --output="$dir/logs/ref-%a.log" \
    --wrap="'$qd' sweep run '$sweep' --references --shard auto --shards $refs --out '$dir'")
cand_job=$(sbatch "${common[@]}" --job-name=qd-shard --array=0-$((shards - 1)) --dependency="afterok:$ref_job" \
    --output="$dir/logs/shard-%a.log" --wrap="'$qd' sweep run '$sweep' --shard auto --shards $shards --out '$dir'")
merge_job=$(sbatch "${common[@]}" --job-name=qd-merge --dependency="afterok:$cand_job" --output="$dir/logs/merge.log" \
    --wrap="'$qd' sweep merge '$dir'")
echo "references: job $ref_job ($refs tasks); shards: job $cand_job ($shards tasks, after the references); merge: job $merge_job"
echo "follow: squeue -j $ref_job,$cand_job,$merge_job; logs in $dir/logs/"
echo "a failed task: fix it, then rerun only it: sbatch --array=I ... (same command; finished units are skipped), then the merge"
echo "JOBS $ref_job $cand_job $merge_job"
