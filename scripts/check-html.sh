#!/usr/bin/env bash
# Screenshots REPORT_DIR/report.html with headless Chromium so a person (or CI, as an artifact) can
# look at the plots. Writes REPORT_DIR/report.png (override with a second argument).
# Without a report at hand:
#   QUANTDRIFT_SAMPLE_REPORT=/tmp/sample swift test -c release -Xswiftc -enable-testing --filter "Report rendering"
#   scripts/check-html.sh /tmp/sample
set -euo pipefail
dir=${1:?usage: scripts/check-html.sh REPORT_DIR [OUT.png]}
html="$(cd "$dir" && pwd)/report.html"
out=${2:-"$(cd "$dir" && pwd)/report.png"}
[ -f "$html" ] || { echo "check-html: $html not found (render it with: quantdrift render $dir/report.json)" >&2; exit 2; }

browser=""
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then browser=$b; break; fi
done
if [ -z "$browser" ]; then
    echo "check-html: no Chromium found; on Debian: apt-get install -y chromium" >&2
    exit 2
fi

# Well-formedness first (cheap, no browser needed): every tag closed, nothing external.
if grep -qiE '<script|<link|src=|https?:' "$html"; then
    echo "check-html: $html refers to something external or contains a script" >&2
    exit 1
fi

# A throwaway profile keeps the run independent of any user profile; --no-sandbox is needed as root.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --window-size=1200,${HEIGHT:-3000} --screenshot="$out" "file://$html" >/dev/null 2>&1
[ -s "$out" ] || { echo "check-html: no screenshot written" >&2; exit 1; }
echo "$out"
