#!/bin/bash
# Decode speed side by side with llama.cpp's llama-bench, alternating rounds, medians at the end.
# llama.cpp: `llama-bench -t 2 -p 0 -n 64` on its own quantized file (tg64 tok/s); ours:
# `quantdrift bench --threads 2 --decode 64` with the matching scheme on the default model
# (decode_tok_s, the median of its own runs). fp32 compares with llama.cpp's F32 file.
#
# usage: scripts/decode-vs-llamacpp.sh LLAMA_BENCH LLAMA_MODELS_DIR [ROUNDS]
#   LLAMA_MODELS_DIR holds f32.gguf, q8_0.gguf, q4_0.gguf and q4_1.gguf: llama-quantize outputs of
#   the FP32 model (`llama-quantize --allow-requantize Weights/<default>.gguf f32.gguf F32`, …).
set -euo pipefail
LLAMA=$1; DIR=$2; ROUNDS=${3:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
QD=$HERE/.build/release/quantdrift
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for i in $(seq "$ROUNDS"); do
  for s in fp32 q8_0 q4_0 q4_1; do
    file=$DIR/${s/fp32/f32}.gguf
    llama=$("$LLAMA" -m "$file" -t 2 -p 0 -n 64 -o json 2>/dev/null \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])')
    ours=$("$QD" bench --scheme "$s" --threads 2 --prefill 8 --decode 64 --runs 3 --json 2>/dev/null \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["decode_tok_s"])')
    echo "$s $llama $ours" >> "$OUT/rounds"
    awk -v r="$i" -v s="$s" -v l="$llama" -v o="$ours" \
      'BEGIN { printf "round %s %s: llama.cpp %.1f tok/s, ours %.1f tok/s, ratio %.2f\n", r, s, l, o, o / l }'
  done
done
echo "medians over $ROUNDS rounds:"
python3 - "$OUT/rounds" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for s in ["fp32", "q8_0", "q4_0", "q4_1"]:
    l = statistics.median(float(r[1]) for r in rows if r[0] == s)
    o = statistics.median(float(r[2]) for r in rows if r[0] == s)
    print(f"{s}: llama.cpp {l:.1f} tok/s, ours {o:.1f} tok/s, ratio {o / l:.2f}")
PY
