#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
# Formatting of every C++ file, clang-tidy of the changed ones (none on a clean checkout).
bash scripts/lint.sh
cd "${FLATUNE_BUILD:-build}"
ctest --output-on-failure -j 2 --timeout 900
