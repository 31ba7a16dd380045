#!/usr/bin/env bash
# Everything bench/RESULTS.md reports, in one go (about 35 minutes on a 2-core machine):
# training (bench/run.sh) at 1M, 10M and 50M parameters, sequence 256 and 1024, fp32 and bf16,
# AdamW, SAM, ASAM, LookSAM and sam-subset, full and LoRA; multiple-choice evaluation (shared
# context vs one forward per choice); tokenizer MB/s for each kind in ../shared/testdata.
#   bash bench/matrix.sh [OUT_DIR]      (default bench/results/matrix-<UTC time>)
# Writes one JSON per part into OUT_DIR and OUT_DIR/summary.json, which gathers them. The training
# reference runs with the project venv's python (.venv/bin/python, torch 2.13 and transformers;
# scripts/setup.sh), transformers' default sdpa attention.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/matrix-$(date -u +%Y-%m-%dT%H%M%SZ)}
mkdir -p "$out"
[ -x build/flatune ] || bash scripts/build.sh
testdata=${FLATUNE_TESTDATA:-../shared/testdata}

train() {  # name, run.sh options...
  local name=$1; shift
  echo "=== train $name: $*"
  bash bench/run.sh "$@" --json "$out/train-$name.json" | tee "$out/train-$name.txt"
}
train 1m-256 --shape 1m --steps 10 --rounds 3 --lora-rank 8
train 10m-256 --shape 10m --steps 5 --rounds 2 --lora-rank 8 --no-check
train 10m-1024 --shape 10m --seq 1024 --batch 2 --steps 5 --rounds 2 --variants "none sam" --no-check
train 50m-256 --shape 50m --batch 4 --steps 3 --rounds 2 --variants "none sam" --no-check
train 10m-256-bf16 --shape 10m --steps 5 --rounds 2 --variants "none sam" --bf16 --no-check
train 50m-256-bf16 --shape 50m --batch 4 --steps 3 --rounds 1 --variants "none sam" --bf16 --no-check

echo "=== eval: 4-choice items with long shared contexts"
build/flatune bench eval --items 64 --context 256 --choice-tokens 8 | tee "$out/eval.txt"

echo "=== tokenize"
text=$(mktemp /tmp/flatune-bench-text.XXXXXX)
trap 'rm -f "$text"' EXIT
for i in 1 2 3 4; do cat /usr/share/common-licenses/*; done > "$text"  # English prose every Debian has
: > "$out/tokenize.txt"
for tok in tokenizers/llama2-spm tokenizers/llama3 tokenizers/qwen3 tokenizers/spm-bpe-32k tokenizers/bytes-320; do
  [ -d "$testdata/$tok" ] || continue
  echo "--- $tok" | tee -a "$out/tokenize.txt"
  build/flatune bench tokenize --tokenizer "$testdata/$tok" --input "$text" --repeats 3 | tee -a "$out/tokenize.txt"
done

.venv/bin/python - "$out" <<'PYEOF'
import glob, json, os, sys
out = sys.argv[1]
summary = {"train": {}, "eval": open(f"{out}/eval.txt").read(), "tokenize": open(f"{out}/tokenize.txt").read()}
for f in sorted(glob.glob(f"{out}/train-*.json")):
    summary["train"][os.path.basename(f)[6:-5]] = json.load(open(f))
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print(f"written: {out}/summary.json")
PYEOF
