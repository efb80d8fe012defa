#!/usr/bin/env bash
# The GPU checks and tables, in one run (about 10 minutes on one recent GPU):
#   bash benchmarks/run_gpu.sh [python]   (from the repository root; default .venv/bin/python)
set -u
PY=${1:-.venv/bin/python}
"$PY" -m pytest -q -p no:cacheprovider tests/test_ops_library.py tests/test_aggregation_fast.py \
    -k "cuda" || echo "CUDA tests FAILED"
for dtype in float32 bfloat16; do
    "$PY" -m benchmarks.bench_aggregation --device cuda --dtype "$dtype" --repeat 20 --ref-repeat 5
done
"$PY" -m benchmarks.bench_models --device cuda --only backbone --backbone-train --rounds 2
"$PY" -m benchmarks.bench_models --device cuda --only maskrcnn --amp --rounds 2
