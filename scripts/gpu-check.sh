#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and a CUDA build of PyTorch (python's torch,
# not the project venv's CPU wheel): builds flatune against that torch's libtorch into
# build-cuda, runs the test suite with FLATUNE_TEST_DEVICE=cuda (the numerics tests then run on
# the GPU), and times a TinyLlama-shaped (1.1B) bf16 training step in flatune against
# transformers' LlamaForCausalLM + torch.optim.AdamW on the same GPU. Each phase has its own
# time limit; the whole fits in 8 minutes. Results go to $OUT (if set) and ./gpu-check/.
#
#   bash scripts/gpu-check.sh            # FLATUNE_GPU_PYTHON=python3, FLATUNE_JOBS=all cores
#
# Exit status: 0 all passed; 1 a phase failed (the summary says which); 3 the machine lacks
# something the build needs (listed, with the apt command).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=${FLATUNE_GPU_PYTHON:-python3}
jobs=${FLATUNE_JOBS:-$(nproc)}
build=${FLATUNE_BUILD:-build-cuda}
results=${OUT:-$root/gpu-check}
mkdir -p "$results"
summary="$results/summary.txt"
: >"$summary"
status=0
say() { echo "gpu-check: $*" | tee -a "$summary"; }
# phase NAME SECONDS CMD...: runs CMD with a time limit, its output in $results/NAME.log.
phase() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" >"$results/$name.log" 2>&1 || rc=$?
  local took=$((SECONDS - t0))
  if [ "$rc" -eq 0 ]; then
    say "$name: ok (${took} s)"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    say "$name: TIMED OUT after ${limit} s (log: $results/$name.log)"
    status=1
  else
    say "$name: FAILED with status $rc after ${took} s (last lines of $results/$name.log below)"
    tail -n 25 "$results/$name.log" | sed 's/^/    /' | tee -a "$summary"
    status=1
  fi
  return "$rc"
}

# ---------------------------------------------------------------- what the machine has
missing=()
command -v "$py" >/dev/null || { say "no python ($py): set FLATUNE_GPU_PYTHON to the python that has torch"; exit 3; }
torch_info=$("$py" - <<'EOF' 2>&1
import torch, torch.utils
print(torch.__version__, torch.version.cuda or "none", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", torch.utils.cmake_prefix_path, sep="|")
EOF
) || { say "python cannot import torch: $torch_info"; exit 3; }
IFS='|' read -r torch_version cuda_version cuda_ok gpu_name prefix <<<"$torch_info"
say "torch $torch_version (CUDA $cuda_version) on $gpu_name; libtorch at $prefix"
[ "$cuda_version" != "none" ] || { say "this torch is a CPU build: the GPU check needs a CUDA build"; exit 3; }
[ "$cuda_ok" = "True" ] || { say "torch sees no GPU (torch.cuda.is_available() is False)"; exit 3; }
for tool in cmake c++ pkg-config; do command -v "$tool" >/dev/null || missing+=("$tool"); done
# The CUDA libtorch's CMake config looks for the CUDA toolkit (nvcc) even though flatune compiles
# no CUDA code.
if ! command -v nvcc >/dev/null; then
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do [ -x "$d/nvcc" ] && export PATH="$d:$PATH" && break; done
fi
command -v nvcc >/dev/null || missing+=("nvcc (the CUDA toolkit, for libtorch's CMake config)")

# Debian/Ubuntu packages the build needs (scripts/setup.sh's list, less the demo's data and the
# runtime-only ones). tcmalloc and GoogleTest are optional here: without them the build goes on
# with glibc's malloc, or without the tests (then only the bench runs).
required=(libgloo-dev nlohmann-json3-dev libsentencepiece-dev libcli11-dev libyaml-cpp-dev libfmt-dev libspdlog-dev
  libplplot-dev libpcre2-dev libicu-dev)
optional=(libgoogle-perftools-dev libgtest-dev)
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
absent_required=() absent_optional=()
if command -v dpkg-query >/dev/null; then
  for p in "${required[@]}"; do have_pkg "$p" || absent_required+=("$p"); done
  for p in "${optional[@]}"; do have_pkg "$p" || absent_optional+=("$p"); done
  if [ $((${#absent_required[@]} + ${#absent_optional[@]})) -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${absent_required[*]} ${absent_optional[*]} (apt, at most 150 s)"
    if timeout 150 bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"' \
      _ "${absent_required[@]}" "${absent_optional[@]}" >"$results/apt.log" 2>&1; then
      absent_required=() absent_optional=()
    else
      say "apt could not install them (no network or no such package; see $results/apt.log)"
      still=()
      for p in "${absent_required[@]}"; do have_pkg "$p" || still+=("$p"); done
      absent_required=("${still[@]}")
      still=()
      for p in "${absent_optional[@]}"; do have_pkg "$p" || still+=("$p"); done
      absent_optional=("${still[@]}")
    fi
  fi
else
  say "no dpkg: cannot check the packages; CMake will name what it does not find"
fi
missing+=("${absent_required[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  say "MISSING for the build: ${missing[*]}"
  say "install them (Debian/Ubuntu: apt-get install -y ${absent_required[*]}) and run this again"
  exit 3
fi
cmake_args=()
tests=ON
for p in "${absent_optional[@]}"; do
  case $p in
    libgoogle-perftools-dev) say "no tcmalloc: building with glibc's malloc"; cmake_args+=(-DFLATUNE_TCMALLOC=OFF) ;;
    libgtest-dev) say "no GoogleTest: building without the tests (the bench still runs)"; tests=OFF; status=1 ;;
  esac
done

# ---------------------------------------------------------------- build
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
# The tests find ../shared/testdata beside the repository; a copy inside it serves as well.
if [ -z "${FLATUNE_SHARED:-}" ] && [ ! -d "$root/../shared/testdata" ] && [ -d "$root/shared/testdata" ]; then
  export FLATUNE_SHARED="$root/shared"
fi
phase configure 45 cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DFLATUNE_CUDA=ON -DFLATUNE_BUILD_TESTS=$tests -DTORCH_CUDA_ARCH_LIST="$("$py" -c \
  'import torch; p = torch.cuda.get_device_capability(); print(f"{p[0]}.{p[1]}")')" "${cmake_args[@]}" ||
  { say "see $results/configure.log"; exit 1; }
grep -q "NCCL process groups ON" "$results/configure.log" && say "NCCL process groups: on" ||
  say "NCCL process groups: off (this libtorch has no c10d NCCL: Gloo on CPU buffers)"
phase build 200 cmake --build "$build" -j "$jobs" || { say "the build failed: nothing to test"; exit 1; }

# ---------------------------------------------------------------- tests on the GPU
if [ "$tests" = ON ]; then
  # parity.* compare with the project venv's transformers/PEFT (CPU); they are not this check's.
  phase tests 100 env FLATUNE_TEST_DEVICE=cuda ctest --test-dir "$build" --output-on-failure \
    -j "$((jobs / 2 > 1 ? jobs / 2 : 1))" --timeout 90 -E '^parity\.' || true
  grep -E "tests passed|tests failed" "$results/tests.log" | tee -a "$summary" || true
fi

# ---------------------------------------------------------------- TinyLlama-shaped bf16 step
# TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads, 4 KV heads, MLP 5632, vocab 32000),
# random weights, bf16 autocast with fp32 master weights and AdamW state, same batch and length.
batch=${FLATUNE_BENCH_BATCH:-4} seq=${FLATUNE_BENCH_SEQ:-1024} steps=${FLATUNE_BENCH_STEPS:-5}
shape=(--hidden 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5632 --vocab 32000)
phase bench-flatune 60 "$build/flatune" bench train --device cuda --bf16 "${shape[@]}" --seq "$seq" --batch "$batch" \
  --steps "$steps" --variants none sam --json "$results/bench-flatune.json" || true
phase bench-transformers 60 "$py" - "$batch" "$seq" "$steps" "$results/bench-transformers.json" <<'EOF' || true
import json, sys, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM
batch, seq, steps, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
cfg = LlamaConfig(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                  intermediate_size=5632, vocab_size=32000, max_position_embeddings=seq, tie_word_embeddings=False)
model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa").cuda().train()  # fp32 master weights
opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
ids = torch.randint(0, cfg.vocab_size, (batch, seq), device="cuda")
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()
step()  # warm-up
torch.cuda.synchronize()
torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
for _ in range(steps):
    step()
torch.cuda.synchronize()
secs = time.perf_counter() - t0
row = {"variant": "adamw", "tokens_per_s": batch * seq * steps / secs,
       "peak_mib": torch.cuda.max_memory_allocated() / 2**20, "torch": torch.__version__}
json.dump([row], open(out, "w"), indent=2)
print(row)
EOF

"$py" - "$results" "$batch" "$seq" <<'EOF' | tee -a "$summary" || true
import json, os, sys
d, batch, seq = sys.argv[1], sys.argv[2], sys.argv[3]
def rows(name):
    p = os.path.join(d, name)
    return {r["variant"]: r for r in json.load(open(p))} if os.path.exists(p) else {}
f, t = rows("bench-flatune.json"), rows("bench-transformers.json")
print(f"TinyLlama-shaped (1.1B) bf16 training step, batch {batch} x {seq} tokens, tokens/s")
print(f"{'step':<16}{'flatune':>12}{'transformers':>14}{'ratio':>8}")
for v in ("adamw", "sam"):
    a = f.get(v, {}).get("tokens_per_s"); b = t.get(v, {}).get("tokens_per_s")
    cell = lambda x: f"{x:12.0f}" if x else f"{'-':>12}"
    ratio = f"{a / b:7.2f}x" if a and b else f"{'-':>8}"
    print(f"{v:<16}{cell(a)}{cell(b):>14}{ratio}")
EOF
say "results in $results"
exit "$status"
