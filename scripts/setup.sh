#!/usr/bin/env bash
# Installs the Debian packages flatune needs to build, test and run. Idempotent: installs only
# what is missing, runs `apt-get update` once when something is. Not root: prints the command.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev            # libtorch 1.13 (CPU)
  libopenblas0-pthread    # without it libtorch falls back to the reference BLAS (20x slower)
  libgloo-dev             # c10d ProcessGroupGloo headers
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
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: not root; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
