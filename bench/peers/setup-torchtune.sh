#!/usr/bin/env bash
# A venv of its own for torchtune's recipe (bench/peers/torchtune_recipe.py): torchtune 0.6.1 (its newest
# release) imports torchao.dtypes.nf4tensor, which only old torchao has (0.11 works on torch 2.13; 0.18 lacks
# it), and PEFT 0.21 in the project venv refuses any torchao older than 0.16: the two cannot share .venv.
#   bash bench/peers/setup-torchtune.sh      makes .venv-torchtune (torch 2.13 as .venv, torchtune, torchao)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-torchtune/bin/python ] || python3 -m venv .venv-torchtune
.venv-torchtune/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 torchtune==0.6.1 torchao==0.11.0 \
  2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
.venv-torchtune/bin/python -c "import torchtune.models.llama2, torchtune.training" && echo "setup-torchtune: .venv-torchtune ready"
