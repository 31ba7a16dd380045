#!/usr/bin/env bash
# Same model, same batch: flatune's training step against the Python reference.
#   bash bench/reference/check.sh [MODEL_DIR...]   (default: every ../shared/testdata/models/*)
# For each model: a seeded text is tokenised by `flatune tokenize` and cut into blocks of
# LEN tokens exactly as `flatune train --format text` does (per line: BOS as the tokenizer adds it,
# the ids, EOS); flatune trains STEPS steps with every block in one batch (so the batch is the
# same whatever order it shuffles the rows into) and the reference runs the same steps on the same
# ids. Compared per step: loss, grad_norm (before clipping) and, for SAM/ASAM, perturbed_loss and
# e_norm; for AdamW (none), sam and asam. Exit 1 if any relative difference exceeds TOL.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
FLATUNE=${FLATUNE:-build/flatune}
LEN=${LEN:-64}
STEPS=${STEPS:-2}
LR=${LR:-1e-3}
TOL=${TOL:-1e-5}
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
  "$PY" bench/reference/train_step.py --check --model "$m" --batch "$m/vectors.safetensors" > "$work/vectors.jsonl"
  "$PY" - "$work/vectors.jsonl" "$m/expected.json" "$(basename "$m")" "$TOL" <<'PYEOF' || status=1
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
d = lines[0]["logits_max_abs_diff"]; loss = lines[1]["loss"]; want = json.load(open(sys.argv[2]))["loss"]
rel = abs(loss - want) / abs(want)
ok = d <= 1e-4 and rel <= float(sys.argv[4])
print(f"reference vs testdata {sys.argv[3]:<12} logits max|diff| {d:.2e}  loss {loss:.10g} vs {want:.10g} rel {rel:.2e}{'' if ok else '  MISMATCH'}")
sys.exit(0 if ok else 1)
PYEOF
done
printf '%-12s %-6s %-5s %-15s %18s %18s %10s\n' model sam step field flatune reference rel.diff
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
    "$PY" bench/reference/train_step.py --check --model "$m" --batch "$work/$name.batch.json" --steps "$STEPS" \
      --lr "$LR" --max-grad-norm 1 --sam "$sam" --rho 0.05 --eta 0.01 --threads 1 > "$out.ref.jsonl"
    "$PY" - "$out/metrics.jsonl" "$out.ref.jsonl" "$name" "$sam" "$TOL" <<'PYEOF' || status=1
import json, sys
fl = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ref = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
name, sam, tol = sys.argv[3], sys.argv[4], float(sys.argv[5])
bad = False
for a, b in zip(fl, ref):
    for k in ("loss", "grad_norm", "perturbed_loss", "e_norm"):
        if k in b:
            rel = abs(a[k] - b[k]) / max(abs(b[k]), 1e-30)
            bad |= rel > tol
            print(f"{name:<12} {sam:<6} {b['step']:<5} {k:<15} {a[k]:18.10g} {b[k]:18.10g} {rel:10.2e}{'  MISMATCH' if rel > tol else ''}")
if len(fl) != len(ref):
    print(f"{name}: flatune logged {len(fl)} steps, the reference {len(ref)}"); bad = True
sys.exit(1 if bad else 0)
PYEOF
  done
done
exit $status
