#!/usr/bin/env bash
# The CPU study at GPU scale, on one H100/H200: the study stages of the one-command GPU suite
# (tests/benchmarks/gpu_suite.py). It times the trainer at the paper preset (the trainer benchmark), tokenises the
# offline sample suite once, trains the paper preset with MLM and with the hybrid objective for as many steps as the
# measured tokens/s fit in the time left, then analyses them exactly as on the CPU:
#   RUNS=runs/gpu-study OUT=reports/gpu-study ./reports/cpu-study/analyze.sh
# Everything (the GPU benchmarks too), in at most ten minutes: bash tests/benchmarks/gpu_suite.sh
# Extra arguments go to the suite (e.g. --budget-s 900, --replace-runs, --smoke).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash tests/benchmarks/gpu_suite.sh --stages setup,trainer,study-prepare,study-train,study-analysis "$@"
