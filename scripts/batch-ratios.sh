#!/usr/bin/env bash
# Issue 13's batch targets, measured the way its closing notes report them: for every scheme,
# `quantdrift bench --threads 2 --prefill 64 --decode 64 --runs 3 --batch 16 --json`, ROUNDS
# rounds with the schemes alternating (the host's speed drifts: a ratio is only read within one
# run), then a table of each round and the medians. The batch ratio is generated tokens/s over
# 16 sequences ÷ one-sequence decode in the same run (targets: fp32 ≥ 5×, the others ≥ 3×); the
# bound fraction is one-sequence decode × weight bytes per token ÷ the read bandwidth measured
# in the same run with the same two threads (target ≥ 0.7).
#
# Usage: scripts/batch-ratios.sh [ROUNDS] [SCHEME...]   (defaults: 3 rounds; w8 w4g32 w8a8)
# Needs a release build (`swift build -c release`) and the default model (`Weights/fetch.sh`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-3}
shift || true
schemes=("$@")
[ ${#schemes[@]} -gt 0 ] || schemes=(w8 w4g32 w8a8)
case $rounds in '' | *[!0-9]* | 0) echo "batch-ratios: ROUNDS must be a positive integer (got '$rounds')" >&2; exit 2 ;; esac
bin=.build/release/quantdrift
[ -x "$bin" ] || { echo "batch-ratios: $bin is missing: run 'swift build -c release' first" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
    for s in "${schemes[@]}"; do
        echo "batch-ratios: round $r/$rounds, $s" >&2
        "$bin" bench --scheme "$s" --threads 2 --prefill 64 --decode 64 --runs 3 --batch 16 --json \
            > "$out/$s.$r.json" 2> "$out/$s.$r.log" \
            || { echo "batch-ratios: bench failed for $s:" >&2; tail -3 "$out/$s.$r.log" >&2; exit 1; }
    done
done
python3 - "$out" "$rounds" "${schemes[@]}" <<'EOF'
import json, statistics, sys
folder, rounds, schemes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"{'scheme':8} {'round':>5} {'1 seq tok/s':>12} {'16 seq tok/s':>13} {'ratio':>6} {'bound':>6} {'GB/s':>6}"
      f" {'fp32 1 seq':>11} {'fp32 16':>8} {'fp32 ratio':>10}")
for s in schemes:
    rows = [json.load(open(f"{folder}/{s}.{r}.json")) for r in range(1, rounds + 1)]
    keys = ["decode_tok_s", "batch_decode_tok_s", "batch_speedup", "bound_fraction", "read_bandwidth_gb_s",
            "fp32_decode_tok_s", "fp32_batch_decode_tok_s", "fp32_batch_speedup"]
    def line(label, v):
        print(f"{s:8} {label:>5} {v[0]:12.1f} {v[1]:13.1f} {v[2]:5.2f}x {v[3]:6.2f} {v[4]:6.1f} {v[5]:11.1f} {v[6]:8.1f} {v[7]:9.2f}x")
    for r, j in enumerate(rows, 1):
        line(str(r), [j[k] for k in keys])
    line("med", [statistics.median(j[k] for j in rows) for k in keys])
EOF
