#!/usr/bin/env bash
# Everything bench/RESULTS.md reports, in one go (about 2 hours on a 2-core machine):
# training (bench/run.sh: flatune against transformers' LlamaForCausalLM in a plain loop with
# torch.optim.AdamW and two-pass SAM) at 1M, 10M and 50M parameters, sequence 256 and 1024, fp32
# and bf16, AdamW, SAM, ASAM, LookSAM and sam-subset, full and LoRA; the same shapes under
# transformers.Trainer (bench/peers/hf_trainer.py, AdamW and SAM); torchtune's
# full_finetune_single_device recipe against flatune at the recipe's vocabulary
# (bench/peers/torchtune_recipe.py); instruction tuning on variable-length data, `flatune train`
# against transformers.Trainer padded, grouped by length and flattened, and against torchtune's
# recipe packed and padded (bench/sft.py);
# multiple-choice evaluation against lm-evaluation-harness's hf model (bench/peers/lm_eval_mc.py)
# and flatune's own shared-context vs one-forward-per-choice (bench eval); tokenizer MB/s for each
# kind in ../shared/testdata.
#   bash bench/matrix.sh [OUT_DIR]      (default bench/results/matrix-<UTC time>)
# Writes one JSON per part into OUT_DIR and OUT_DIR/summary.json, which gathers them. The peers
# run with the project venv's python (.venv/bin/python: torch 2.13, transformers, lm_eval;
# scripts/setup.sh) and torchtune with .venv-torchtune (bench/peers/setup-torchtune.sh), transformers' default sdpa attention.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/matrix-$(date -u +%Y-%m-%dT%H%M%SZ)}
unset OMP_WAIT_POLICY  # every program waits between parallel regions as it does for a user (bench/run.sh)
mkdir -p "$out"
[ -x build/flatune ] || bash scripts/build.sh
testdata=${FLATUNE_TESTDATA:-../shared/testdata}

train() {  # name, run.sh options...
  local name=$1; shift
  echo "=== train $name: $*"
  bash bench/run.sh "$@" --json "$out/train-$name.json" | tee "$out/train-$name.txt"
}
train 1m-256 --shape 1m --steps 10 --rounds 2 --lora-rank 8
train 10m-256 --shape 10m --steps 5 --rounds 2 --lora-rank 8 --no-check
train 10m-1024 --shape 10m --seq 1024 --batch 2 --steps 5 --rounds 2 --variants "none sam" --no-check
train 50m-256 --shape 50m --batch 4 --steps 3 --rounds 2 --variants "none sam" --no-check
train 10m-256-bf16 --shape 10m --steps 5 --rounds 2 --variants "none sam" --bf16 --no-check
train 50m-256-bf16 --shape 50m --batch 4 --steps 3 --rounds 2 --variants "none sam" --bf16 --no-check

PY=.venv/bin/python
trainer() {  # name, hidden layers heads ffn vocab seq batch steps [--bf16]
  local name=$1; shift
  echo "=== transformers.Trainer $name"
  "$PY" bench/peers/hf_trainer.py --hidden "$1" --layers "$2" --heads "$3" --ffn "$4" --vocab "$5" --seq "$6" \
    --batch "$7" --steps "$8" --threads "$(nproc)" ${9:+"$9"} --json "$out/trainer-$name.json" | tee "$out/trainer-$name.txt"
}
trainer 1m-256 128 4 4 344 2000 256 8 10
trainer 10m-256 256 8 4 688 8000 256 8 5
trainer 10m-1024 256 8 4 688 8000 1024 2 5
trainer 50m-256 512 12 8 1376 16000 256 4 3
trainer 10m-256-bf16 256 8 4 688 8000 256 8 5 --bf16
trainer 50m-256-bf16 512 12 8 1376 16000 256 4 3 --bf16

echo "=== profile: 10M fp32 AdamW (Chrome trace of 3 steps)"
build/flatune bench train --hidden 256 --layers 8 --heads 4 --ffn 688 --vocab 8000 --seq 256 --batch 8 --steps 3 \
  --variants none --rounds 1 --threads "$(nproc)" --profile "$out/profile-10m" | tee "$out/profile-10m.txt"

torchtune() {  # name, run.sh-style shape, [--bf16]: the recipe, then flatune at the recipe's vocabulary
  local name=$1 bf=${2:-}
  echo "=== torchtune full_finetune_single_device $name"
  [ -x .venv-torchtune/bin/python ] || bash bench/peers/setup-torchtune.sh
  .venv-torchtune/bin/python bench/peers/torchtune_recipe.py --hidden 256 --layers 8 --heads 4 --ffn 688 --seq 256 --batch 8 --steps 5 \
    --threads "$(nproc)" $bf --json "$out/torchtune-$name.json" | tee "$out/torchtune-$name.txt"
  build/flatune bench train --hidden 256 --layers 8 --heads 4 --ffn 688 --vocab 32000 --seq 256 --batch 8 --steps 5 \
    --threads "$(nproc)" --variants none --rounds 1 $bf --json "$out/torchtune-flatune-$name.json" | tee -a "$out/torchtune-$name.txt"
}
torchtune 10m-256
torchtune 10m-256-bf16 --bf16

sft() {  # name, bench/sft.py options: instruction tuning on variable-length data, flatune train against Trainer
  local name=$1; shift
  echo "=== instruction tuning $name: $*"
  "$PY" bench/sft.py "$@" --json "$out/sft-$name.json" | tee "$out/sft-$name.txt"
}
sft 1m --shape 1m --rounds 2
sft 10m --shape 10m --rounds 2
sft 10m-bf16 --shape 10m --bf16 --rounds 2
sft 50m --shape 50m --examples 96 --rounds 2
[ -x .venv-torchtune/bin/python ] || bash bench/peers/setup-torchtune.sh
sft 1m-torchtune --shape 1m --rounds 2 --variants adamw --peer torchtune
sft 10m-torchtune --shape 10m --rounds 2 --variants adamw --peer torchtune
sft 50m-torchtune --shape 50m --examples 96 --rounds 2 --variants adamw --peer torchtune

echo "=== eval: lm-evaluation-harness hf against flatune eval (same items, same scores)"
"$PY" bench/peers/lm_eval_mc.py --items 200 --json "$out/lm-eval.json" | tee "$out/lm-eval.txt"

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
summary = {"train": {}, "trainer": {}, "torchtune": {}, "sft": {}, "lm_eval": json.load(open(f"{out}/lm-eval.json")),
           "eval": open(f"{out}/eval.txt").read(), "tokenize": open(f"{out}/tokenize.txt").read()}
# Self time per op from the Chrome trace (children's time taken off their parent, per thread).
trace = json.load(open(f"{out}/profile-10m.adamw.json"))
events = [e for e in (trace if isinstance(trace, list) else trace.get("traceEvents", []))
          if e.get("ph") == "X" and "dur" in e]
self_time = {}
for tid in {e.get("tid") for e in events}:
    stack = []
    for e in sorted((e for e in events if e.get("tid") == tid), key=lambda e: (e["ts"], -e["dur"])):
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
            stack.pop()
        self_time[e["name"]] = self_time.get(e["name"], 0) + e["dur"]
        if stack:
            self_time[stack[-1]["name"]] -= e["dur"]
        stack.append(e)
total = sum(self_time.values())
summary["profile"] = sorted(((k, v / total) for k, v in self_time.items()), key=lambda kv: -kv[1])[:20]
for part in ("train", "trainer", "torchtune", "sft"):
    for f in sorted(glob.glob(f"{out}/{part}-*.json")):
        summary[part][os.path.basename(f)[len(part) + 1:-5]] = json.load(open(f))
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print(f"written: {out}/summary.json")
PYEOF
