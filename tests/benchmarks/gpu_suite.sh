#!/usr/bin/env bash
# The GPU benchmarks and the GPU study in one command, on one H100/H200, in at most ten minutes of wall time:
#   bash tests/benchmarks/gpu_suite.sh            # writes reports/benchmarks/*_gpu.{json,md} and reports/gpu-study/
#   bash tests/benchmarks/gpu_suite.sh --smoke    # the same code paths on the CPU at toy sizes, into a temp dir
# Stages, time budgets and options: tests/benchmarks/gpu_suite.py (--help). Installs the project with its test and
# demo extras first when they are missing. PYTHON picks the interpreter (default: python3, the one with torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" tests/benchmarks/gpu_suite.py "$@"
