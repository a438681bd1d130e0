#!/usr/bin/env bash
# Every GPU figure makd promises, in one prepared run on one GPU; prints ONE JSON (bench/gpu_bench.py
# documents each section). Budget: under 8 minutes on one H100 (the driver is stopped at 7 min 30 s
# and the figures gathered so far are printed, marked "incomplete").
#
#   bash bench/gpu.sh                 # on the GPU machine, from the repository root
#   bash bench/gpu.sh --dry-run       # tiny sizes on the CPU: checks the script (tests/test_gpu_bench.py)
#   bash bench/gpu.sh --fetch-wheels  # on a machine WITH network: put the wheels it needs into .whl/
#
# What it needs on the GPU machine (which has no network):
#   * python3 with torch and torchvision, a CUDA build of each (never carried: they must match the
#     machine's driver); makd itself runs from this checkout (PYTHONPATH), not installed;
#   * the distributions of bench/gpu_wheels.txt (transformers, tokenizers, safetensors, huggingface_hub,
#     timm, h5py, pycocotools, pyyaml, regex, tqdm, rich, jinja2, pillow) and their dependencies,
#     installed from .whl/ (pip --no-index) when not importable; fetch them for the GPU machine's Python
#     with PYTHON=python3.X bash bench/gpu.sh --fetch-wheels (roughly 50 MiB: a lent machine takes
#     64 MiB of carried files in all; drop numpy/pillow wheels the machine already has to save room).
# Environment: PYTHON (default python3), GPU_BENCH_LIMIT (seconds for the driver, default 450),
# GPU_BENCH_OUT (default bench/gpu-results.json).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${GPU_BENCH_OUT:-bench/gpu-results.json}
LIMIT=${GPU_BENCH_LIMIT:-450}

if [ "${1:-}" = "--fetch-wheels" ]; then
  mkdir -p .whl
  with_deps=$(sed -n '/^# no-deps/q;/^[^#]/p' bench/gpu_wheels.txt)
  no_deps=$(sed -n '/^# no-deps/,$p' bench/gpu_wheels.txt | grep -v '^#')
  "$PY" -m pip download --only-binary=:all: -d .whl $with_deps || exit 2
  "$PY" -m pip download --only-binary=:all: --no-deps -d .whl $no_deps || exit 2
  du -sh .whl
  exit 0
fi

need=$("$PY" bench/gpu_bench.py --missing) || { echo "gpu.sh: $PY cannot run bench/gpu_bench.py" >&2; exit 2; }
if [ -n "$need" ]; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu.sh: missing $need and no wheels in .whl/ (run bash bench/gpu.sh --fetch-wheels where there is network)" >&2
    exit 2
  fi
  echo "gpu.sh: installing $need from .whl/" >&2
  "$PY" -m pip install -q --no-index --find-links .whl $need || { echo "gpu.sh: installing from .whl/ failed" >&2; exit 2; }
fi

rm -f "$OUT"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout "$LIMIT" "$PY" bench/gpu_bench.py --out "$OUT" "$@" >/dev/null
rc=$?
if [ ! -s "$OUT" ]; then
  echo "gpu.sh: bench/gpu_bench.py gave no figures (exit $rc)" >&2
  exit 2
fi
if [ "$rc" -ne 0 ]; then  # cut off by the limit (124) or failed: print what it had, marked
  "$PY" - "$OUT" "$rc" <<'EOF'
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
d = json.load(open(path))
d["incomplete"] = f"the driver stopped (exit {rc}{', time limit' if rc == 124 else ''}); sections missing here did not run"
open(path, "w").write(json.dumps(d, indent=1))
EOF
fi
cat "$OUT"
