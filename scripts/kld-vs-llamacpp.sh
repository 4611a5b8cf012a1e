#!/bin/bash
# kld throughput side by side with llama.cpp's `llama-perplexity --kl-divergence`, alternating runs.
# Both figures are every token processed (chunks x n_ctx) per second of wall clock: llama.cpp from its
# "computing over" line to its "Mean KLD" line (each output line timestamped as it is printed), ours
# the `seconds` of `kld --json` (start-up excluded for both).
#
# usage: scripts/kld-vs-llamacpp.sh LLAMA_PERPLEXITY LLAMA_MODELS_DIR REFERENCE_TRACE [ROUNDS]
#   LLAMA_MODELS_DIR holds q8_0.gguf, q4_0.gguf (llama-quantize outputs of the FP32 model) and base.kld
#   (llama-perplexity --kl-divergence-base of the FP32 model); REFERENCE_TRACE is ours, from
#   `quantdrift kld --scheme q8_0 --file EVAL --ctx 512 --save-reference TRACE`.
set -euo pipefail
LLAMA=$1; DIR=$2; TRACE=$3; ROUNDS=${4:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
EVAL=$HERE/Tests/QuantDriftTests/Fixtures/eval.txt
QD=$HERE/.build/release/quantdrift
OUT=$(mktemp -d)
stamp() { while IFS= read -r l; do printf '%s %s\n' "$(date +%s.%N)" "$l"; done; }
for i in $(seq "$ROUNDS"); do
  for s in q8_0 q4_0; do
    "$LLAMA" -m "$DIR/$s.gguf" --kl-divergence-base "$DIR/base.kld" --kl-divergence -c 512 -t 2 -f "$EVAL" 2>&1 \
      | stamp > "$OUT/llama.log"
    a=$(grep "computing over" "$OUT/llama.log" | cut -d' ' -f1)
    b=$(grep "Mean    KLD" "$OUT/llama.log" | cut -d' ' -f1)
    n=$(grep -o "computing over [0-9]* chunks, n_ctx=[0-9]*" "$OUT/llama.log" | awk -F'[ =,]' '{print $3 * $7}')
    "$QD" kld --scheme "$s" --file "$EVAL" --ctx 512 --reference "$TRACE" --json > "$OUT/ours.json"
    ours=$(grep '"tokens_per_s"' "$OUT/ours.json" | tr -d ' ,' | cut -d: -f2)
    awk -v r="$i" -v s="$s" -v n="$n" -v a="$a" -v b="$b" -v o="$ours" \
      'BEGIN { l = n / (b - a); printf "round %s %s: llama.cpp %.1f tok/s, ours %.1f tok/s, ratio %.2f\n", r, s, l, o, o / l }'
  done
done
rm -rf "$OUT"
