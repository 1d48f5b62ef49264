#!/usr/bin/env bash
# The GPU check, ready for a machine with one GPU (torch, transformers, tokenizers, safetensors
# and scikit-learn installed; the rest of memaudit's dependencies as wheels in .whl/ if missing:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_17_x86_64 -d .whl rapidfuzz pydivsufsort
# ). Finishes in under 8 minutes on an H100-class GPU; the log goes to $OUT (or .) too.
#   bash benchmarks/gpu_suite.sh            # the 1B configs, 2,000 texts of 512 tokens
#   bash benchmarks/gpu_suite.sh --tiny     # the same code at toy size (CPU smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/memaudit-site .whl/*.whl
    export PYTHONPATH=/tmp/memaudit-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export MPLCONFIGDIR=${TMPDIR:-/tmp}/memaudit-mpl HF_HOME=${TMPDIR:-/tmp}/memaudit-hf
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true)
echo "${gpu:-no GPU}"
{
    timeout 400 "$PY" benchmarks/gpu_suite.py "$@"
    # scores on the GPU in fp32 and bf16 against the CPU's, on a trained micro model
    if [ -n "$gpu" ]; then timeout 60 "$PY" benchmarks/check_device.py; fi
} 2>&1 | tee "${OUT:-.}/gpu_suite.log"
