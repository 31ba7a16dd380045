#!/usr/bin/env bash
# Configures and builds flatune into ${FLATUNE_BUILD:-build} (Release, Ninja when present) against
# the libtorch of the venv's torch wheel (scripts/setup.sh), or the one FLATUNE_TORCH_PREFIX names
# (a folder holding TorchConfig.cmake's share/cmake, e.g. an unpacked libtorch or /usr).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FLATUNE_BUILD:-build}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
prefix=${FLATUNE_TORCH_PREFIX:-}
if [ -z "$prefix" ]; then
  prefix=$(.venv/bin/python -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null) ||
    { echo "build: no libtorch: run scripts/setup.sh (makes .venv with torch), or set FLATUNE_TORCH_PREFIX" >&2; exit 1; }
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" "$@"
fi
cmake --build "$build" -j "${FLATUNE_JOBS:-2}"
