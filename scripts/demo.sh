#!/usr/bin/env bash
# Sets up, builds and runs the main job: the embedded study (WordNet data, a small base model,
# AdamW vs SAM fine-tuning, forgetting and flatness) -> runs/demo/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec "${FLATUNE_BUILD:-build}/flatune" demo --out "${1:-runs/demo}" "${@:2}"
