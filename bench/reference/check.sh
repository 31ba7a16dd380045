#!/usr/bin/env bash
# Same model, same batch: flatune's training step against the Python reference
# (bench/reference/train_step.py: transformers' own model class, run by the project venv's python).
#   bash bench/reference/check.sh [MODEL_DIR...]   (default: every ../shared/testdata/models/*)
#   ATTN="eager sdpa" (default both): transformers' attention implementations the reference runs.
# First the reference itself against each model's testdata vectors (logits and loss an independent
# implementation computed). Then for each model: a seeded text is tokenised by `flatune tokenize`
# and cut into blocks of LEN tokens exactly as `flatune train --format text` does (per line: BOS as
# the tokenizer adds it, the ids, EOS); flatune trains STEPS steps with every block in one batch (so
# the batch is the same whatever order it shuffles the rows into) and the reference runs the same
# steps on the same ids, once per attention implementation. Compared per step: loss, grad_norm
# (before clipping) and, for SAM/ASAM, perturbed_loss and e_norm; for AdamW (none), sam and asam.
# Ends with the largest relative difference per model, attention and field. Exit 1 if any relative
# difference exceeds TOL.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}  # the project venv (scripts/setup.sh): torch 2.13, transformers 5.24
FLATUNE=${FLATUNE:-build/flatune}
LEN=${LEN:-64}
STEPS=${STEPS:-2}
LR=${LR:-1e-3}
TOL=${TOL:-1e-5}
ATTN=${ATTN:-eager sdpa}
[ -x "$PY" ] || { echo "check.sh: no $PY: run scripts/setup.sh (makes .venv)" >&2; exit 1; }
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
models=("$@")
if [ ${#models[@]} -eq 0 ]; then models=("${FLATUNE_SHARED:-../shared}"/testdata/models/*/); fi
work=$(mktemp -d /tmp/flatune-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$PY" - "$work/text.txt" <<'PYEOF'
import random, sys
r = random.Random(11)
words = "the a of to in model loss sharp flat minimum step weight gradient token layer norm attention head train".split()
with open(sys.argv[1], "w") as f:
    for _ in range(6):
        f.write(" ".join(r.choice(words) for _ in range(r.randint(12, 30))) + "\n")
PYEOF
status=0
# The reference itself against the testdata's independent logits and loss (vectors.safetensors).
for m in "${models[@]}"; do
  m=${m%/}
  [ -f "$m/vectors.safetensors" ] && [ -f "$m/expected.json" ] || continue
  for attn in $ATTN; do
    "$PY" bench/reference/train_step.py --check --attn "$attn" --model "$m" --batch "$m/vectors.safetensors" > "$work/vectors.jsonl"
    "$PY" - "$work/vectors.jsonl" "$m/expected.json" "$(basename "$m")" "$TOL" "$attn" <<'PYEOF' || status=1
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
d = lines[0]["logits_max_abs_diff"]; loss = lines[1]["loss"]; want = json.load(open(sys.argv[2]))["loss"]
rel = abs(loss - want) / abs(want)
ok = d <= 1e-4 and rel <= float(sys.argv[4])
print(f"reference vs testdata {sys.argv[3]:<12} {sys.argv[5]:<5} logits max|diff| {d:.2e}  loss {loss:.10g} vs {want:.10g} rel {rel:.2e}{'' if ok else '  MISMATCH'}")
sys.exit(0 if ok else 1)
PYEOF
  done
done
printf '%-12s %-5s %-6s %-5s %-15s %18s %18s %10s\n' model attn sam step field flatune reference rel.diff
for m in "${models[@]}"; do
  m=${m%/}
  name=$(basename "$m")
  "$FLATUNE" tokenize --tokenizer "$m" --add-special --input "$work/text.txt" > "$work/$name.ids"
  nblocks=$("$PY" - "$work/$name.ids" "$m/config.json" "$LEN" "$work/$name.batch.json" <<'PYEOF'
import json, sys
ids_path, config, L, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
eos = json.load(open(config)).get("eos_token_id")
stream = []
for line in open(ids_path):
    if line.strip():
        stream += json.loads(line) + ([eos] if eos is not None else [])
blocks = [stream[i:i + L] for i in range(0, len(stream) - L + 1, L)]
json.dump({"input_ids": blocks, "labels": blocks}, open(out, "w"))
print(len(blocks))
PYEOF
)
  for sam in none sam asam; do
    out="$work/$name.$sam"
    "$FLATUNE" train --model "$m" --data "$work/text.txt" --format text --max-length "$LEN" --batch-size "$nblocks" \
      --max-steps "$STEPS" --lr "$LR" --schedule constant --max-grad-norm 1 --sam "$sam" --rho 0.05 --asam-eta 0.01 \
      --log-every 1 --threads 1 --out "$out" > "$out.log" 2>&1 || { echo "flatune train failed: $out.log"; cat "$out.log"; exit 1; }
    for attn in $ATTN; do
      "$PY" bench/reference/train_step.py --check --attn "$attn" --model "$m" --batch "$work/$name.batch.json" --steps "$STEPS" \
        --lr "$LR" --schedule constant --max-grad-norm 1 --sam "$sam" --rho 0.05 --eta 0.01 --threads 1 > "$out.$attn.ref.jsonl"
      "$PY" - "$out/metrics.jsonl" "$out.$attn.ref.jsonl" "$name" "$sam" "$TOL" "$attn" "$work/rel.jsonl" <<'PYEOF' || status=1
import json, sys
fl = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ref = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
name, sam, tol, attn = sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6]
bad = False
with open(sys.argv[7], "a") as log:
    for a, b in zip(fl, ref):
        for k in ("loss", "grad_norm", "perturbed_loss", "e_norm"):
            if k in b:
                rel = abs(a[k] - b[k]) / max(abs(b[k]), 1e-30)
                bad |= rel > tol
                log.write(json.dumps({"model": name, "attn": attn, "field": k, "rel": rel}) + "\n")
                print(f"{name:<12} {attn:<5} {sam:<6} {b['step']:<5} {k:<15} {a[k]:18.10g} {b[k]:18.10g} {rel:10.2e}{'  MISMATCH' if rel > tol else ''}")
if len(fl) != len(ref):
    print(f"{name}: flatune logged {len(fl)} steps, the reference ({attn}) {len(ref)}"); bad = True
sys.exit(1 if bad else 0)
PYEOF
    done
  done
done
[ -s "$work/rel.jsonl" ] && "$PY" - "$work/rel.jsonl" "$TOL" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
fields = ["loss", "grad_norm", "perturbed_loss", "e_norm"]
worst = {}
for r in rows:
    key = (r["model"], r["attn"], r["field"])
    worst[key] = max(worst.get(key, 0.0), r["rel"])
print(f"\nlargest relative difference, flatune vs reference (TOL {sys.argv[2]}):")
print(f"{'model':<12} {'attn':<5} " + " ".join(f"{f:>14}" for f in fields))
for model, attn in dict.fromkeys((r["model"], r["attn"]) for r in rows):
    print(f"{model:<12} {attn:<5} " + " ".join(f"{worst.get((model, attn, f), float('nan')):14.2e}" for f in fields))
PYEOF
exit $status
