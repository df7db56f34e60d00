#!/usr/bin/env bash
# Creates .venv with hitts installed (editable) and what it needs; --dev adds the test tools.
# Usage: bash setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
extras="db,onnx"
[ "${1:-}" = "--dev" ] && extras="db,onnx,dev"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[$extras]"
echo "hitts is installed in $(pwd)/.venv"
