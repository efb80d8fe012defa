#!/usr/bin/env bash
# The GPU checks and tables in one command, on a machine that reaches no package index:
#
#   bash benchmarks/run_gpu.sh [PYTHON] [OUT_DIR]     (from the repository root)
#
# PYTHON (default python3) must have CUDA PyTorch; everything else comes from ./wheelhouse
# (`make wheelhouse` on a machine that reaches PyPI, carried beside the tree). Each stage has a
# time budget (`timeout`), prints its wall time, writes its log under OUT_DIR (default
# output/gpu) and is reported in OUT_DIR/summary.txt; a stage that fails or runs out of time is
# reported there and the next one still runs. Budgets add up to 8 minutes on one H100:
#
#   stage              budget  what
#   install              40 s  throw-away venv that sees PYTHON's torch; wheelhouse installed
#                              offline; this tree installed without the native CPU kernels,
#                              which no GPU stage uses (DCDC_BUILD_NATIVE=1 builds them too:
#                              about a minute more, with INSTALL_BUDGET=120)
#   env                  15 s  GPU, driver, CUDA, torch, triton, numpy versions
#   cuda-tests          115 s  tests/test_cuda.py: opcheck of every dcdc op on CUDA, both Triton
#                              kernel families vs the float64 Eq. 5 reference (fp32/fp16/bf16,
#                              values and gradients), torch.compile(fullgraph) with Inductor,
#                              bf16 autocast without upcast, devices, large maps, float64
#   bench-aggregation   130 s  the FPN P2 operator (2x256x200x320, K=7): unfold vs PyTorch shift
#                              vs both Triton families, time and torch.cuda.max_memory_allocated;
#                              bf16 forward+backward first, then fp32 forward and forward+backward
#   bench-models         90 s  DCDC-R50 vs ResNet-50 backbone training step; Mask R-CNN
#                              training iteration with bf16 AMP
#   train                90 s  quickstart Panoptic FPN on the built-in shapes data, AMP, 300
#                              iterations and one evaluation: losses finite, AP / PQ printed
#
# Without a CUDA device the last four stages say "no CUDA device" and skip (the CPU rehearsal,
# see README). STAGES="env cuda-tests" runs a subset; with no install stage, PYTHON is used as
# it is (it must already have dcdc installed).
set -u
cd "$(dirname "$0")/.."
PY=${1:-python3}
OUT=${2:-output/gpu}
WHEELHOUSE=${WHEELHOUSE:-wheelhouse}
STAGES=${STAGES:-install env cuda-tests bench-aggregation bench-models train}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)  # the throw-away venv, data and run folders
trap 'rm -rf "$WORK"' EXIT
SUMMARY="$OUT/summary.txt"
echo "stage               status      seconds  budget" > "$SUMMARY"
FAILED=0

# whether PY sees a CUDA device: asked once, after the install stage (each ask imports torch)
CUDA=unknown

# stage NAME BUDGET_S NEEDS_CUDA FUNCTION: runs FUNCTION (below) with a time limit, its output
# to the terminal and to OUT/NAME.log; one line in the summary.
stage() {
    local name=$1 budget=$2 needs_cuda=$3 fn=$4
    case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
    local log="$OUT/$name.log" start status rc
    echo "=== $name (budget ${budget} s) ==="
    start=$(date +%s%N)
    if [ "$needs_cuda" = cuda ] && [ "$CUDA" != yes ]; then
        echo "no CUDA device: $name skipped" | tee "$log"
        status=skipped
    else
        export PY OUT WHEELHOUSE WORK
        timeout --kill-after=10 "$budget" bash -c "$fn" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
        case $rc in
            0) status=ok ;;
            124|137) status=timeout; FAILED=1 ;;
            *) status="failed($rc)"; FAILED=1 ;;
        esac
    fi
    local seconds=$((($(date +%s%N) - start) / 1000000000))
    echo "=== $name: $status in $seconds s (budget $budget s)"
    printf "%-19s %-11s %7s  %6s\n" "$name" "$status" "$seconds" "$budget" >> "$SUMMARY"
}

install_env() {
    # A venv of PYTHON's base interpreter plus a .pth line per site-packages folder of PYTHON:
    # it sees PYTHON's torch even when PYTHON is itself a venv (--system-site-packages would
    # see only the base interpreter's packages).
    local env=$WORK/venv
    "$PY" -m venv "$env" || return 1
    "$PY" -c 'import site; print("\n".join(site.getsitepackages()))' \
        > "$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_base.pth"
    DCDC_BUILD_NATIVE=${DCDC_BUILD_NATIVE:-0} "$env/bin/python" tools/wheelhouse.py install --wheelhouse "$WHEELHOUSE" --project . || return 1
    echo "$env/bin/python" > "$OUT/.python"
}

versions() {
    "$PY" - <<'EOF'
import platform, subprocess
import numpy, torch
from dcdc.layers import dispatch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA",
      torch.version.cuda, "| numpy", numpy.__version__)
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton not installed")
print("native CPU kernels:", dispatch.native_available())
import shutil  # Triton builds its CUDA launcher with the host C compiler at first use
print("host C compiler:", shutil.which("cc") or shutil.which("gcc") or "none found")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB")
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm",
                          "--format=csv"], capture_output=True, text=True).stdout)
else:
    print("no CUDA device")
EOF
}

train() {
    local data=$WORK/data run=$WORK/train
    "$PY" -m dcdc.data.shapes --root "$data/shapes" || return 1
    DETECTRON2_DATASETS=$data "$PY" train_net.py \
        --config-file configs/quickstart_panoptic_fpn_dcdc_shapes.yaml OUTPUT_DIR "$run" \
        MODEL.DEVICE cuda SOLVER.AMP.ENABLED True SOLVER.MAX_ITER 300 TEST.EVAL_PERIOD 0 \
        || return 1
    "$PY" - "$run/metrics.json" <<'EOF'
import json, math, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
losses = [r["total_loss"] for r in rows if "total_loss" in r]
evals = {k: v for r in rows for k, v in r.items() if "/" in k and k.split("/")[0] in
         ("bbox", "segm", "panoptic_seg", "sem_seg")}
print(f"{len(losses)} logged losses, first {losses[0]:.3f}, last {losses[-1]:.3f}")
print("evaluation:", {k: round(v, 2) for k, v in evals.items() if k.endswith(("AP", "PQ", "mIoU"))})
sys.exit(0 if losses and all(math.isfinite(x) for x in losses) and evals else 1)
EOF
}

cuda_tests() {
    "$PY" -m pytest -q -p no:cacheprovider -n 4 tests/test_cuda.py
}

bench_aggregation() {
    # one process per case (about 18 in all); each table is printed as soon as it is complete
    local common="-m benchmarks.bench_aggregation --device cuda --sizes p2 --repeat 20 --ref-repeat 5"
    "$PY" $common --dtype bfloat16 --modes fwd+bwd && "$PY" $common --dtype float32
}

bench_models() {
    "$PY" -m benchmarks.bench_models --device cuda --only backbone --backbone-train --rounds 2 &&
    "$PY" -m benchmarks.bench_models --device cuda --only maskrcnn --amp --rounds 2
}

export -f install_env versions cuda_tests bench_aggregation bench_models train
stage install ${INSTALL_BUDGET:-40} cpu install_env
[ -f "$OUT/.python" ] && PY=$(cat "$OUT/.python") && rm "$OUT/.python"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    && CUDA=yes || CUDA=no
stage env 15 cpu versions
stage cuda-tests 115 cuda cuda_tests
stage bench-aggregation 130 cuda bench_aggregation
stage bench-models 90 cuda bench_models
stage train 90 cuda train
cat "$SUMMARY"
exit $FAILED
