#!/usr/bin/env bash
# Long fuzz campaign: each target in its own process (a crash kills only that run and leaves
# the input being tried in $QUANTDRIFT_FUZZ_DIR/<target>.current).
#   scripts/fuzz.sh                  # 100,000 executions of every target
#   scripts/fuzz.sh gguf tokenizer   # only these targets
#   QUANTDRIFT_FUZZ_ITERATIONS=1000000 scripts/fuzz.sh scheme
# Targets: gguf safetensors config tokenizer scheme workload thresholds report (FuzzTests.swift).
set -euo pipefail
cd "$(dirname "$0")/.."
export QUANTDRIFT_FUZZ_ITERATIONS="${QUANTDRIFT_FUZZ_ITERATIONS:-100000}"
export QUANTDRIFT_FUZZ_DIR="${QUANTDRIFT_FUZZ_DIR:-${TMPDIR:-/tmp}/quantdrift-fuzz}"
mkdir -p "$QUANTDRIFT_FUZZ_DIR"

declare -A tests=([gguf]=ggufReader [safetensors]=safetensorsReader [config]=configReader
                  [tokenizer]=tokenizerReader [scheme]=schemeParser [workload]=workloadReader [thresholds]=thresholdsReader [report]=reportReaderAndRenderers)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(gguf safetensors config tokenizer scheme workload thresholds report)

swift build -c release -Xswiftc -enable-testing --build-tests >/dev/null
failed=0
for t in "${targets[@]}"; do
    test="${tests[$t]:-}"
    [ -n "$test" ] || { echo "unknown target '$t' (known: ${!tests[*]})" >&2; exit 2; }
    start=$(date +%s)
    set +e
    swift test -c release -Xswiftc -enable-testing --skip-build --filter "FuzzTests/$test" >"$QUANTDRIFT_FUZZ_DIR/$t.log" 2>&1
    status=$?
    set -e
    grep -E "^fuzz |✘|recorded" "$QUANTDRIFT_FUZZ_DIR/$t.log" || true
    echo "$t: exit $status after $(( $(date +%s) - start )) s (log: $QUANTDRIFT_FUZZ_DIR/$t.log)"
    if [ "$status" -ne 0 ]; then
        failed=1
        [ -f "$QUANTDRIFT_FUZZ_DIR/$t.current" ] && echo "  input being tried when it stopped: $QUANTDRIFT_FUZZ_DIR/$t.current"
    fi
done
exit $failed
