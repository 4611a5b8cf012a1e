#!/usr/bin/env bash
# Installs what building QuantDrift needs on Debian (OpenBLAS, zstd, pkg-config) when missing,
# then fetches and verifies both models of Weights/models.json. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
packages=(libopenblas-dev libzstd-dev pkg-config)
if ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi
Weights/fetch.sh
# The second model family (Gemma 3 270M): its golden tests need it too.
Weights/fetch.sh gemma3-270m
