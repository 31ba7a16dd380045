#!/usr/bin/env bash
# Configures and builds flatune into ${FLATUNE_BUILD:-build} (Release, Ninja when present).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FLATUNE_BUILD:-build}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
fi
cmake --build "$build" -j "${FLATUNE_JOBS:-2}"
