#!/usr/bin/env bash
# The GPU check of issue 18, in one command: install, then benchmarks/gpu_check.py runs the Triton and
# CUDA tests natively, the GPU benchmarks at the released sizes, the precision checks, the stage-1
# training throughput and the quick start (--minutes 3) on the GPU, writing ONE JSON report as it goes.
#
#   bash benchmarks/gpu_check.sh [--out FILE] [--cpu] [--no-install] [--wheels DIR] [--assets DIR]
#                                [--minutes N] [--deadline-s S]
#   bash benchmarks/gpu_check.sh --prepare    # on a machine with PyPI: fill .gpu_check/ for an offline box
#
# --out      the report (default .gpu_check/gpu_check.json); phase logs go to <stem>_logs/ beside it
# --cpu      CPU mode (automatic without CUDA): Triton through the interpreter, smoke sizes, no quick start
# --wheels   wheels to install from, offline (default .gpu_check/wheels when it holds any)
# --assets   the MeshTalk assets folder the tests read (default $MESHTALK_ASSETS, else .gpu_check/assets
#            when present, else the tests' default ../shared/assets/meshtalk)
# Exit status: 0 when every phase passed; the report says which did not, and how far it got.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
REPORT=.gpu_check/gpu_check.json
CPU=() INSTALL=1 WHEELS="" MINUTES=3 DEADLINE="" PREPARE=0
ASSETS=${MESHTALK_ASSETS:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) REPORT=$2; shift 2 ;;
    --cpu) CPU=(--cpu); shift ;;
    --no-install) INSTALL=0; shift ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --assets) ASSETS=$2; shift 2 ;;
    --minutes) MINUTES=$2; shift 2 ;;
    --deadline-s) DEADLINE=$2; shift 2 ;;
    --prepare) PREPARE=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# The packages that a GPU image with the usual ML stack (torch, triton, numpy, safetensors, tqdm, pillow,
# pytest, pytest-benchmark, scikit-build-core, pybind11, cmake) lacks and the check needs. The
# package's other dependencies (pygltflib, imageio-ffmpeg: animation export) are imported lazily and
# are not used by the check, so an offline install skips them (--no-deps) rather than carry ~35 MB.
OFFLINE_WHEELS="soundfile cffi pycparser soxr trimesh espeakng-loader scipy-openblas32"

if [ "$PREPARE" = 1 ]; then
  mkdir -p .gpu_check/wheels .gpu_check/assets
  cp -r "${ASSETS:-../shared/assets/meshtalk}/." .gpu_check/assets/ || exit 1
  chmod -R u+w .gpu_check/assets
  # the GPU image's python is CPython 3.12 on x86-64 Linux; pure-Python wheels match any platform
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .gpu_check/wheels $OFFLINE_WHEELS || exit 1
  du -sh .gpu_check
  echo "carry .gpu_check to the GPU machine, then run: bash benchmarks/gpu_check.sh --out \$OUT/gpu_check.json"
  exit 0
fi

mkdir -p "$(dirname "$REPORT")"
LOGS="$(dirname "$REPORT")/$(basename "$REPORT" .json)_logs"
mkdir -p "$LOGS"
MODE=gpu; [ ${#CPU[@]} -gt 0 ] && MODE=cpu
if [ -z "$WHEELS" ] && compgen -G ".gpu_check/wheels/*.whl" > /dev/null; then WHEELS=.gpu_check/wheels; fi
if [ -z "$ASSETS" ] && [ -d .gpu_check/assets ]; then ASSETS=$ROOT/.gpu_check/assets; fi
[ -n "$ASSETS" ] && export MESHTALK_ASSETS=$ASSETS
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

install() {
  # torch first (README). A torch that already sees a CUDA GPU is kept: on a GPU image it is the build
  # that matches the driver, and replacing it means gigabytes. Otherwise torch==2.13.0 as the README
  # says: from PyPI on x86-64 Linux that IS the CUDA build (it pulls the nvidia-* runtime wheels), which
  # is what a GPU machine needs; the README's CPU build comes from a CPU index where one is configured.
  if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "keeping torch $("$PY" -c 'import torch; print(torch.__version__)') (it sees a CUDA GPU)"
  elif [ "$MODE" = cpu ] && "$PY" -c "import torch" 2>/dev/null; then
    echo "CPU mode: keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
  elif [ -n "$WHEELS" ]; then
    echo "no usable torch and offline (--wheels): carry a torch wheel or use an image with torch" >&2; return 1
  else
    "$PY" -m pip install torch==2.13.0 || return 1
  fi
  if [ -n "$WHEELS" ]; then
    # offline (the GPU machines reach no registry): the carried wheels, then the package itself, built
    # against what is installed (scikit-build-core, pybind11 and scipy-openblas32 are there by now)
    "$PY" -m pip install --no-index --no-deps "$WHEELS"/*.whl || return 1
    "$PY" -m pip install --no-index --no-deps --no-build-isolation ".[gpu,test]" || return 1
  else
    "$PY" -m pip install ".[gpu,test]" || return 1   # the README's install, with the gpu extra
  fi
  # everything the check imports, from outside the source tree (the installed package)
  (cd / && "$PY" -c "import torch, triton, pytest, pytest_benchmark, soundfile, trimesh, espeakng_loader
import meshtalk_fast as mf, meshtalk_fast._core
print('installed', mf.__file__, 'torch', torch.__version__, 'triton', triton.__version__)")
}

status=skipped DETAIL="--no-install: the current environment" t0=$(date +%s)
if [ "$INSTALL" = 1 ]; then
  timeout 300 bash -c "$(declare -f install); PY='$PY' MODE='$MODE' WHEELS='$WHEELS' install" > "$LOGS/install.log" 2>&1
  rc=$?
  status=ok; [ $rc = 124 ] && status=timeout; [ $rc != 0 ] && [ $rc != 124 ] && status=failed
  DETAIL=$(tail -n 1 "$LOGS/install.log")
  tail -n 3 "$LOGS/install.log"
  if [ $status != ok ]; then
    # the phases still run, from the source tree (reference and Triton paths; no C++ core unless one is
    # installed): the report then says what worked and what the environment lacks
    export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
    DETAIL="$DETAIL (phases run from the source tree: PYTHONPATH=python)"
  fi
fi
if [ "$MODE" = gpu ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check.sh: torch sees no CUDA GPU here: CPU mode" >&2
  MODE=cpu CPU=(--cpu)
fi
"$PY" benchmarks/gpu_check.py record --json "$REPORT" --mode "$MODE" --phase install --status $status \
  --seconds $(( $(date +%s) - t0 )) --log "$LOGS/install.log" --detail "$DETAIL"
# the 8 minutes of a GPU run count from the start of this script, the install included
[ -z "$DEADLINE" ] && { [ "$MODE" = gpu ] && DEADLINE=470 || DEADLINE=3600; }
LEFT=$(( DEADLINE - ($(date +%s) - t0) ))
"$PY" benchmarks/gpu_check.py run --json "$REPORT" "${CPU[@]}" --minutes "$MINUTES" --deadline-s "$LEFT"
