#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz, makes seed corpora from
# ../shared/testdata, runs each target for FUZZ_SECONDS (default 60) and prints, per target,
# the runs executed and the crashes (crash/leak/timeout/oom artifacts) found.
# Not part of the test suite or CI. Usage: bench/fuzz/run.sh [target ...]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/bench/fuzz"
build="${FUZZ_BUILD_DIR:-$root/build-fuzz}"
seconds="${FUZZ_SECONDS:-60}"
shared="${FLATUNE_SHARED:-$root/../shared}"
data="$shared/testdata"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_safetensors_header fuzz_config_json fuzz_tokenizer_json fuzz_tokenizer_encode)

if [ ! -f "$build/CMakeCache.txt" ]; then
  CXX=clang++ CC=clang cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DFLATUNE_FUZZ=ON -DFLATUNE_BUILD_TESTS=OFF >/dev/null
fi
nice -n 5 cmake --build "$build" -j1 --target "${targets[@]}"

# Seed corpora (regenerated each run, never committed: .gitignore has corpus*/).
python3 - "$data" "$here" <<'PY'
import json, os, struct, sys, glob
data, here = sys.argv[1], sys.argv[2]
def put(target, name, blob):
    d = os.path.join(here, "corpus-" + target)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, name), "wb").write(blob if isinstance(blob, bytes) else blob.encode())
def safetensors(header, payload):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + payload
# Small valid files of every dtype, and real checkpoint headers without their (large) data.
sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
for dt, n in sizes.items():
    put("fuzz_safetensors_header", "dtype-" + dt, safetensors(
        {"__metadata__": {"format": "pt"}, "a": {"dtype": dt, "shape": [2, 3], "data_offsets": [0, 6 * n]},
         "b": {"dtype": dt, "shape": [], "data_offsets": [6 * n, 7 * n]}}, bytes(7 * n)))
for path in glob.glob(os.path.join(data, "models", "*", "model.safetensors")):
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    put("fuzz_safetensors_header", "header-" + path.split(os.sep)[-2], blob[:8 + n])
for path in glob.glob(os.path.join(data, "models", "*", "config.json")):
    put("fuzz_config_json", path.split(os.sep)[-2], open(path).read())
put("fuzz_config_json", "rope-linear", json.dumps({"model_type": "mistral", "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
    "rope_scaling": {"type": "linear", "factor": 2.0}, "sliding_window": 4, "eos_token_id": [1, 2]}))
put("fuzz_tokenizer_json", "bytes-320", open(os.path.join(data, "tokenizers", "bytes-320", "tokenizer.json")).read())
# A small SentencePiece-style BPE in the shape of spm-bpe-32k's file (its pipeline, 300 tokens).
spm = json.load(open(os.path.join(data, "tokenizers", "spm-bpe-32k", "tokenizer.json")))
vocab = dict(list(spm["model"]["vocab"].items())[:300])
spm["model"]["vocab"] = vocab
def merge_ok(m):
    a, b = m.split(" ", 1) if isinstance(m, str) else m
    return a in vocab and b in vocab and a + b in vocab
spm["model"]["merges"] = [m for m in spm["model"]["merges"] if merge_ok(m)][:200]
spm["added_tokens"] = [t for t in spm["added_tokens"] if t["id"] < 300]
put("fuzz_tokenizer_json", "spm-bpe-small", json.dumps(spm))
for name in ["llama3", "qwen3", "spm-bpe-32k", "bytes-320", "llama2-spm"]:
    for i, line in enumerate(open(os.path.join(data, "tokenizers", name, "vectors.jsonl"))):
        put("fuzz_tokenizer_encode", "%s-%03d" % (name, i), json.loads(line)["text"])
PY

summary=()
for t in "${targets[@]}"; do
  rm -f "$here/crash-$t-"*
  log="$here/$t.log"
  # -rss_limit_mb: a parser that tries to allocate gigabytes for a small input is a finding.
  nice -n 5 "$build/fuzz/$t" "$here/corpus-$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$here/crash-$t-" >"$log" 2>&1 || true
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  artifacts=$(find "$here" -maxdepth 1 -name "crash-$t-*" | sort)
  crashes=$(printf '%s' "$artifacts" | grep -c . || true)
  summary+=("$(printf '%-26s runs %10s  crashes %d' "$t" "$runs" "$crashes")")
  for f in $artifacts; do summary+=("    artifact: $f (log: $log)"); done
done
printf '%s\n' "${summary[@]}"
