#!/usr/bin/env bash
# Create (or reuse) ./.venv and install smart_nets with the given extras. Sourced by demo.sh and test.sh.
# torch goes in first and by exact version: on these machines `pip install torch==2.13.0` takes a CPU build from
# local disk, while letting monai pull torch would download a multi-GB CUDA build. Override with TORCH_SPEC.
set -euo pipefail
EXTRAS="${1:-}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if ! python -c "import torch" 2>/dev/null; then
    echo "[setup] installing $TORCH_SPEC"
    pip install -q --disable-pip-version-check "$TORCH_SPEC"
fi
echo "[setup] installing smart_nets${EXTRAS:+[$EXTRAS]}"
pip install -q --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}"
python -c "import smart_nets, torch, monai; print(f'[setup] smart_nets {smart_nets.__version__}, torch {torch.__version__}, monai {monai.__version__}')"
