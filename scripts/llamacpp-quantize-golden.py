#!/usr/bin/env python3
"""Writes the fixture QuantizerGoldenTests checks our ggml quantizers and mix rules against:
what llama-quantize writes for the default model, tensor by tensor.

    scripts/llamacpp-quantize-golden.py LLAMA_BUILD_BIN GGUF_PY_DIR F32_GGUF OUT_JSON

LLAMA_BUILD_BIN holds llama-quantize; GGUF_PY_DIR is llama.cpp's gguf-py folder (it reads the
files; needs numpy); F32_GGUF is the default model converted to F32 with
`llama-quantize --allow-requantize Weights/SmolLM2-135M-Instruct.Q4_1.gguf f32.gguf F32` (its
values are exactly QuantDrift's FP32 reference). Every mix is made from it, plus --pure files so
that every k-quant type (and IQ4_NL) is applied to every tensor whose rows allow it. The fixture holds, per
ggml type and tensor, the first 16 hex digits of the SHA-256 of the tensor's bytes, and per mix
the type llama-quantize chose for each tensor (layers folded as blk.N)."""
import hashlib, json, os, subprocess, sys, tempfile

bin_dir, gguf_py, f32, out = sys.argv[1:5]
sys.path.insert(0, gguf_py)
from gguf import GGUFReader  # noqa: E402

MIXES = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
PURE = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL"]

hashes, mixes = {}, {}
with tempfile.TemporaryDirectory() as tmp:
    def quantize(name, ftype, pure):
        path = os.path.join(tmp, name + ".gguf")
        cmd = [os.path.join(bin_dir, "llama-quantize"), "--allow-requantize"] + (["--pure"] if pure else []) + [f32, path, ftype, "1"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        types = {}
        for t in GGUFReader(path).tensors:
            kind = t.tensor_type.name
            types[t.name] = kind
            if kind in ("F32", "F16"):
                continue
            h = hashlib.sha256(bytes(t.data.tobytes())).hexdigest()[:16]
            old = hashes.setdefault(kind, {}).setdefault(t.name, h)
            assert old == h, f"{t.name} as {kind} differs between files"
        os.remove(path)
        return types

    for m in MIXES:
        types = quantize(m, m, False)
        folded = {}
        for name, kind in sorted(types.items()):
            if kind == "F32":
                continue
            parts = name.split(".")
            if parts[0] == "blk":
                key = ".".join(["blk", "N"] + parts[2:])
                folded.setdefault(key, {}).setdefault(kind, []).append(int(parts[1]))
            else:
                folded[name] = kind
        for key, v in folded.items():
            if isinstance(v, dict):
                folded[key] = next(iter(v)) if len(v) == 1 else {k: sorted(ls) for k, ls in v.items()}
        mixes[m.lower()] = folded
    for p in PURE:
        quantize("pure_" + p, p, True)

doc = {
    "source": "llama-quantize --allow-requantize [--pure] F32 OUT TYPE 1 (llama.cpp 0c1e570, no importance matrix) on "
              "SmolLM2-135M-Instruct converted to F32; written by scripts/llamacpp-quantize-golden.py",
    "hashes": {k: dict(sorted(v.items())) for k, v in sorted(hashes.items())},
    "mixes": mixes,
}
with open(out, "w") as f:
    json.dump(doc, f, indent=1, sort_keys=False)
    f.write("\n")
