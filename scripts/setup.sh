#!/usr/bin/env bash
# Installs what flatune needs to build, test and run: Debian packages (apt), and the project venv
# .venv with the torch==2.13.0 wheel, whose libtorch (headers, CMake config, shared libraries)
# flatune builds against, plus the Python packages the parity tests and benchmarks compare with
# (scripts/requirements.txt). Idempotent: installs only what is missing. Not root: prints the
# apt command.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config
  python3-venv
  libgloo-dev             # c10d's ProcessGroupGloo headers (the wheel has the library, not gloo's headers)
  libgoogle-perftools-dev # tcmalloc: glibc's malloc gives large freed tensors back and page-faults them in again
  nlohmann-json3-dev libsentencepiece-dev sentencepiece libcli11-dev libyaml-cpp-dev
  libfmt-dev libspdlog-dev
  libplplot-dev plplot-driver-cairo   # plots; cairo gives the PNG device
  libpcre2-dev libicu-dev
  libgtest-dev libbenchmark-dev
  wordnet-base            # text for the embedded demo
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} Debian packages present"
else
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: not root; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The venv. pip takes torch==2.13.0 (CPU build) from the wheel on this machine's disk when there
# is one, else from PyPI.
python=${FLATUNE_SETUP_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
if ! .venv/bin/python - scripts/requirements.txt <<'PYEOF' 2>/dev/null; then
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    have = version(name.strip())
    if want and not have.startswith(want.strip()):
        sys.exit(1)
PYEOF
  echo "setup: installing scripts/requirements.txt into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/requirements.txt 2>&1 |
    grep -v "is ignored: it is neither a file nor a directory" || true
  .venv/bin/python -c "import torch, transformers, peft, tokenizers, lm_eval" ||
    { echo "setup: the venv's packages do not import" >&2; exit 1; }
else
  echo "setup: .venv has scripts/requirements.txt"
fi
