#!/usr/bin/env bash
# The tests: set up, lint, then run the whole suite (every extra installed, so nothing skips).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/ruff check layerdsl tests benchmarks examples
.venv/bin/python -m pytest -q "$@"
