#!/usr/bin/env bash
# Installs what building QuantDrift needs on Debian (OpenBLAS, zstd, pkg-config) when missing,
# then fetches and verifies both models of Weights/models.json. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
packages=(libopenblas-dev libzstd-dev pkg-config)
# Slurm and munge for the sweep test on a throwaway single-node cluster (scripts/slurm/test-sweep.sh);
# without recommends: 9 packages instead of 42.
slurm=(slurm-wlm munge procps)
if ! dpkg -s "${packages[@]}" "${slurm[@]}" >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
    $sudo apt-get install -y -qq --no-install-recommends "${slurm[@]}" >/dev/null
fi
Weights/fetch.sh
# The second model family (Gemma 3 270M): its golden tests need it too.
Weights/fetch.sh gemma3-270m
