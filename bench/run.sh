#!/usr/bin/env bash
# flatune's training step against the plain PyTorch reference (bench/reference/train_step.py),
# same shape, threads and steps, one program after the other on this machine.
#   bash bench/run.sh [--shape 1m|10m|50m] [--seq N] [--batch N] [--steps N] [--threads N]
#                     [--hidden N --layers N --heads N --ffn N --vocab N] [--no-check]
# Installs Debian's python3-torch if /usr/bin/python3 cannot import torch (never needed by the
# tests), builds flatune if build/flatune is missing, first checks that both programs compute the
# same step on the testdata models (bench/reference/check.sh), then prints one table and writes
# bench/results/<UTC time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3  # Debian's python: a pyenv python3 may shadow it on PATH without torch

shape=10m steps=5 threads=$(nproc) seq=256 batch=8 check=1
hidden= layers= heads= ffn= vocab=
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) shape=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --seq) seq=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --hidden) hidden=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --heads) heads=$2; shift 2 ;;
    --ffn) ffn=$2; shift 2 ;;
    --vocab) vocab=$2; shift 2 ;;
    --no-check) check=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
# Shapes (hidden layers heads ffn vocab): 10m is `flatune bench train`'s default.
case "$shape" in
  1m)  set -- 128 4 4 344 2000 ;;
  10m) set -- 256 8 4 688 8000 ;;
  50m) set -- 512 12 8 1376 16000 ;;
  *) echo "bench/run.sh: --shape is 1m, 10m or 50m" >&2; exit 2 ;;
esac
hidden=${hidden:-$1} layers=${layers:-$2} heads=${heads:-$3} ffn=${ffn:-$4} vocab=${vocab:-$5}

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "== installing python3-torch (Debian; libtorch 1.13 underneath, as flatune's)"
  if [ "$(id -u)" -ne 0 ]; then echo "run as root or: sudo apt-get install -y python3-torch" >&2; exit 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y python3-torch
fi
[ -x build/flatune ] || bash scripts/build.sh

# libtorch's OpenMP threads otherwise spin between operations while OpenBLAS's threads need the
# same cores (see app/flatune.cpp); flatune sets it for itself, the reference needs it too.
export OMP_WAIT_POLICY=PASSIVE

if [ "$check" = 1 ]; then
  echo "== same step, same numbers (bench/reference/check.sh)"
  bash bench/reference/check.sh > /tmp/flatune-bench-check.txt || { cat /tmp/flatune-bench-check.txt; echo "check failed" >&2; exit 1; }
  grep '^reference vs testdata' /tmp/flatune-bench-check.txt || true
  awk '$1 != "reference" && $1 != "model" { if ($7 + 0 > m) m = $7 + 0; n++ }
       END { printf "flatune vs reference: %d values (loss, grad norm, SAM/ASAM perturbed loss and |e|, 2 steps) agree, max relative difference %.2g\n", n, m }' \
    /tmp/flatune-bench-check.txt
fi

mkdir -p bench/results
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
work=$(mktemp -d /tmp/flatune-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
shape_args=(--hidden "$hidden" --layers "$layers" --heads "$heads" --ffn "$ffn" --vocab "$vocab" --seq "$seq")
echo "== flatune bench train"
build/flatune bench train "${shape_args[@]}" --batch "$batch" --steps "$steps" --threads "$threads" \
  --variants none sam asam --json "$work/flatune.json"
echo "== python reference"
"$PY" bench/reference/train_step.py --bench "${shape_args[@]}" --batch-size "$batch" --steps "$steps" \
  --threads "$threads" --json "$work/python.json"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

"$PY" - "$work/flatune.json" "$work/python.json" "bench/results/$stamp.json" <<PYEOF
import json, platform, subprocess, sys
fl = {r["variant"]: r for r in json.load(open(sys.argv[1]))}
py = {r["variant"]: r for r in json.load(open(sys.argv[2]))}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print()
print(f"shape: hidden $hidden, layers $layers, heads $heads, ffn $ffn, vocab $vocab, seq $seq, batch $batch; "
      f"$steps timed steps after 1 warm-up; $threads threads; {cpu}; load average before $load_before, after $load_after")
print(f"{'variant':<8} {'flatune tok/s':>14} {'python tok/s':>13} {'ratio':>7} {'flatune MiB':>12} {'python MiB':>11}")
rows = []
for v in fl:
    f, p = fl[v], py.get(v)
    ratio = f["tokens_per_s"] / p["tokens_per_s"] if p else float("nan")
    print(f"{v:<8} {f['tokens_per_s']:>14.0f} {p['tokens_per_s'] if p else float('nan'):>13.0f} {ratio:>6.2f}x "
          f"{f.get('peak_rss_mib', -1):>12.0f} {p.get('peak_rss_mib', -1) if p else -1:>11.0f}")
    rows.append({"variant": v, "flatune": f, "python": p, "ratio": ratio})
json.dump({"date": "$stamp", "cpu": cpu, "nproc": int(subprocess.check_output(["nproc"]).decode()),
           "threads": $threads, "steps": $steps, "load_before": "$load_before", "load_after": "$load_after",
           "shape": {"hidden": $hidden, "layers": $layers, "heads": $heads, "ffn": $ffn, "vocab": $vocab,
                     "seq": $seq, "batch": $batch},
           "torch_python": subprocess.check_output(["$PY", "-c", "import torch; print(torch.__version__)"]).decode().strip(),
           "checked": bool($check), "rows": rows}, open(sys.argv[3], "w"), indent=2)
print(f"\nwritten: {sys.argv[3]}")
PYEOF
