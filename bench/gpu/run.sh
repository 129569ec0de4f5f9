#!/usr/bin/env bash
# Issue 26's GPU measurements in one call (one H200: JAX 0.11, Python 3.12, torch; no TF, no
# Java). From the repository root, with the wheels of WHEELS.md under .whl/ (carry: [".whl"]):
#   bash bench/gpu/run.sh [OUTDIR]        OUTDIR defaults to $OUT
#   SMALL=1 PYTHON=/tmp/jaxvenv/bin/python bash bench/gpu/run.sh /tmp/x
#       CPU dry run: tiny sizes, JAX on the CPU, PYTHON a venv as in WHEELS.md
# Writes OUTDIR/gpu.json (every figure; rewritten after each section, so a timeout keeps what
# ran), OUTDIR/log.txt and OUTDIR/smi.csv (nvidia-smi once a second). Budget: under 6 minutes.
set -o pipefail
OUTDIR=${1:-${OUT:?give an output folder or set OUT}}
mkdir -p "$OUTDIR"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
SMI=
if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L; nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,clocks.sm \
    --format=csv -lms 1000 > "$OUTDIR/smi.csv" 2>&1 & SMI=$!
fi
PY=${PYTHON:-python3}
timeout 350 "$PY" bench/gpu/measure.py "$OUTDIR" ${SMALL:+--small} 2>&1 \
  | grep -v "^WARNING: All log messages before absl" | tee "$OUTDIR/log.txt"
rc=$?
[ -n "$SMI" ] && kill "$SMI"
exit $rc
