#!/usr/bin/env bash
# The main job: set up, compile an example to every backend, and show the backends agree.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/python examples/compare_backends.py "${1:-examples/mnist_convnet.layers}"
