#!/usr/bin/env bash
# Style and defects, in seconds: clang-format over every C++ file, clang-tidy (.clang-tidy's
# checks) over the C++ sources that changed: uncommitted or untracked ones, plus those changed
# since FLATUNE_LINT_BASE (a commit) or the branch's upstream when there is one. Both tools come
# from the venv (scripts/requirements.txt pins them, so every machine formats alike); clang-tidy
# reads the build's compile_commands.json. Fails naming the files and the command that fixes them.
#   bash scripts/lint.sh          check
#   bash scripts/lint.sh --fix    format every file; apply clang-tidy's fixes to the changed ones
#   FLATUNE_LINT_ALL=1 bash scripts/lint.sh    clang-tidy on every source (half an hour on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
fix=0
[ "${1:-}" = "--fix" ] && fix=1
bin=.venv/bin
build=${FLATUNE_BUILD:-build}
for tool in clang-format clang-tidy; do
  [ -x "$bin/$tool" ] || { echo "lint: $bin/$tool missing: run scripts/setup.sh" >&2; exit 1; }
done
# The tracked C++ files; outside a git checkout (a source archive) every one under the code folders.
if git rev-parse --git-dir >/dev/null 2>&1; then
  mapfile -t sources < <(git ls-files '*.cpp' '*.h')
else
  mapfile -t sources < <(find src app tests bench -name '*.cpp' -o -name '*.h' | sort)
fi
[ ${#sources[@]} -gt 0 ] || { echo "lint: no C++ sources found" >&2; exit 1; }

if [ $fix = 1 ]; then
  "$bin/clang-format" -i "${sources[@]}"
else
  mapfile -t unformatted < <("$bin/clang-format" --dry-run "${sources[@]}" 2>&1 | grep -o '^[^:]*\.\(cpp\|h\):' | tr -d ':' | sort -u)
  if [ ${#unformatted[@]} -gt 0 ]; then
    echo "lint: ${#unformatted[@]} file(s) not formatted: ${unformatted[*]}" >&2
    echo "lint: fix with: bash scripts/lint.sh --fix" >&2
    exit 1
  fi
fi

base=${FLATUNE_LINT_BASE:-$(git rev-parse -q --verify '@{upstream}' 2>/dev/null || true)}
mapfile -t changed < <(git rev-parse --git-dir >/dev/null 2>&1 && {
  git diff --name-only HEAD
  git ls-files --others --exclude-standard
  if [ -n "$base" ]; then git diff --name-only "$base"...HEAD; fi
  if [ -n "${FLATUNE_LINT_ALL:-}" ]; then git ls-files; fi
} | grep -E '^(src|app|tests|bench)/.*\.cpp$' | sort -u | while read -r f; do [ -f "$f" ] && echo "$f"; done)
if [ ${#changed[@]} -eq 0 ]; then
  echo "lint: formatted; no changed C++ sources for clang-tidy"
  exit 0
fi
[ -f "$build/compile_commands.json" ] || { echo "lint: $build/compile_commands.json missing: run scripts/build.sh" >&2; exit 1; }
# The build's commands without GCC's precompiled header (-include cmake_pch.hxx): clang would
# parse all of torch for every file; each file includes what it uses. Without -fopenmp too: the
# venv's clang has no omp.h, and without OpenMP torch's headers take their serial path.
mkdir -p "$build/lint"
.venv/bin/python - "$build/compile_commands.json" "$build/lint/compile_commands.json" <<'PYEOF'
import json, re, sys
commands = json.load(open(sys.argv[1]))
for c in commands:
    c["command"] = re.sub(r"\s-include \S+cmake_pch\.hxx|\s-Winvalid-pch|\s-fopenmp\b", "", c["command"])
json.dump(commands, open(sys.argv[2], "w"))
PYEOF
args=(-p "$build/lint" --quiet --extra-arg=-Wno-unknown-warning-option)
[ $fix = 1 ] && args+=(--fix)
# Two at a time; a torch translation unit takes clang-tidy about a minute.
log_of() { echo "$build/lint/$(echo "$1" | tr / _).log"; }
for f in "${changed[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n || true; done
  ( "$bin/clang-tidy" "${args[@]}" "$f" >"$(log_of "$f")" 2>&1; echo $? >"$(log_of "$f").rc" ) &
done
wait
failed=()
for f in "${changed[@]}"; do
  if [ "$(cat "$(log_of "$f").rc")" != 0 ]; then
    failed+=("$f")
    grep -E "(warning|error):" "$(log_of "$f")" | head -20 >&2
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: clang-tidy reports on: ${failed[*]}" >&2
  echo "lint: fix them (or suppress with NOLINT(check) and a reason); bash scripts/lint.sh --fix applies its fixes" >&2
  exit 1
fi
echo "lint: formatted; clang-tidy clean on ${#changed[@]} changed file(s)"
