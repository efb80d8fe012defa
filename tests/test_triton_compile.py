"""Every Triton kernel specialization the models and benchmarks use compiles to sm_90 (H100)
code, and none spills registers. No GPU is needed: Triton ships ptxas.

The specializations are ``triton_kernels.SPECIALIZATIONS`` (family x pass x dtype x K x
stride), each with its launches (one, or one per stride phase for the tiled input gradient) as
the host code builds them (``specialization_launches``, on meta tensors), compiled with
``triton.compile(..., target=GPUTarget("cuda", 90, 32))`` under the signature, constants and
divisibility hints that a launch on those tensors would use (the binder Triton's own launcher
uses), for the simple family's one config and the tiled family's autotune configs (those its
pruner keeps for 16 channels per group): every one in float32, the first (the default) in
float16 and bfloat16, whose code differs from float32's only in the loads' and stores'
conversions (checking all of them too would double the test's time). Also the config the pruner
makes for a group too wide for every config (128 channels), in float32.

How spills are counted: ``CompiledKernel.n_spills`` is filled only when the cubin is loaded on a
GPU, but Triton's nvidia backend runs ``ptxas -v`` for every cubin it makes and, with
``knobs.nvidia.dump_ptxas_log`` set, prints that log, which has per function the line ``N bytes
stack frame, N bytes spill stores, N bytes spill loads`` (and ``Used N registers``). The child
captures it per compile; both spill counts must be 0.

The compiles run in a child process (this file as a script; it forks JOBS workers), so that the
knobs above, a fresh cache directory (with ``always_compile``: a kernel from the cache prints no
log) and an unset ``TRITON_INTERPRET`` stay out of the test process.
"""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed: no Triton kernels to compile")
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from dcdc.layers import triton_kernels  # noqa: E402

SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
REGISTERS = re.compile(r"Used (\d+) registers")
# ~150 compiles take ~45 s of CPU (the simple family's unrolled K=7 kernels ~1.5 s each, the rest
# ~0.2 s); two workers where there are two cores.
JOBS = min(2, os.cpu_count() or 1)
# 128 channels per group (the P2 neck operator's size): no config of the tiled family fits, the
# pruner makes a narrower one
WIDE_SIZE = dict(shape=(2, 256, 200, 320), group_channels=128)
WIDE_SPECS = [("wide", p, "float32", 7, 2) for p in triton_kernels.PASSES]


@triton.jit
def _spilling_kernel(x_ptr, n, BLOCK: tl.constexpr):
    """A canary that must spill: two live [BLOCK] float32 tiles on one warp (2 * BLOCK / 32
    values per thread, against 255 registers), for the check that spill counts are read."""
    offs = tl.arange(0, BLOCK)
    v = tl.load(x_ptr + offs)
    acc = v
    for i in range(n):
        acc = acc * v + i
    tl.store(x_ptr + offs, acc + v)


def _spec_id(spec):
    return spec if isinstance(spec, str) else "-".join(map(str, spec))


def _compile(fn, args, kwargs):
    """Compile ``fn[grid](*args, **kwargs)`` for sm_90 as a launch would; its spill bytes (or
    the error)."""
    import contextlib
    import io

    from triton.runtime.jit import create_function_from_signature

    target = triton.backends.compiler.GPUTarget("cuda", 90, 32)
    backend = triton.compiler.make_backend(target)
    try:
        # what JITFunction.run does before it compiles (triton 3.x)
        binder = create_function_from_signature(fn.signature, fn.params, backend)
        bound, specialization, options = binder(*args, **kwargs)
        options, signature, constants, attrs = fn._pack_args(backend, kwargs, bound,
                                                             specialization, options)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):  # the ptxas -v log is printed there
            triton.compile(triton.compiler.ASTSource(fn, signature, constants, attrs),
                           target=target, options=options.__dict__)
    except Exception as e:  # reported by the test of that specialization
        return {"error": f"{type(e).__name__}: {e}"[-2000:]}
    log = log.getvalue()
    spills = [int(n) for pair in SPILLS.findall(log) for n in pair]
    return {"spill_bytes": sum(spills), "logged": bool(spills),
            "registers": [int(r) for r in REGISTERS.findall(log)]}


def _compile_spec(spec):
    """Compile every launch and config of one specialization; a result per compile."""
    from triton.runtime.autotuner import Autotuner

    if spec == "canary":
        x = torch.empty(8192, device="meta")
        return [{"name": "canary", **_compile(_spilling_kernel, (x, 4),
                                              dict(BLOCK=8192, num_warps=1))}]
    size = {}
    if spec[0] == "wide":  # a group wider than any config fits: the pruner's own config
        spec, size = ("tiled", *spec[1:]), WIDE_SIZE
    try:
        launches = triton_kernels.specialization_launches(*spec, **size)
    except Exception as e:  # reported by the test of that specialization
        return [{"name": "specialization_launches", "error": f"{type(e).__name__}: {e}"}]
    compiles = []
    for launch in launches:
        fn, configs = launch.kernel, [triton.Config({}, num_warps=4)]  # the launch's defaults
        if isinstance(fn, Autotuner):  # the configs the autotuner would time for this launch
            configs = fn.early_config_prune(fn.configs, dict(zip(fn.arg_names, launch.args)),
                                            **launch.meta)
            # every one in float32, the first in fp16 / bf16
            fn, configs = fn.fn, configs if spec[2] == "float32" else configs[:1]
        for config in configs:
            compiles.append({"name": f"{fn.__name__} {launch.meta} {config}",
                             **_compile(fn, launch.args, {**launch.meta, **config.all_kwargs()})})
    return compiles


def _compile_all():
    """The child: compile every specialization, in JOBS forked workers; one JSON line."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    triton.knobs.nvidia.dump_ptxas_log = True
    triton.knobs.compilation.always_compile = True
    specs = ("canary", *triton_kernels.SPECIALIZATIONS, *WIDE_SPECS)
    with ProcessPoolExecutor(JOBS, mp_context=multiprocessing.get_context("fork")) as pool:
        results = dict(zip(map(_spec_id, specs), pool.map(_compile_spec, specs)))
    print(json.dumps(results))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path_factory.mktemp("triton_cache")),
           "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1])


@pytest.mark.parametrize("spec", triton_kernels.SPECIALIZATIONS, ids=_spec_id)
def test_kernel_compiles_for_sm90_without_spills(spec, compiled):
    compiles = compiled[_spec_id(spec)]
    assert compiles, "no launch built for this specialization"
    for c in compiles:
        assert "error" not in c, f"{c['name']}: {c.get('error')}"
        assert c["logged"], f"{c['name']}: no spill counts in the ptxas log (format changed?)"
        assert c["spill_bytes"] == 0, f"{c['name']} spills registers: {c}"


@pytest.mark.parametrize("spec", WIDE_SPECS, ids=_spec_id)
def test_wide_group_compiles_without_spills(spec, compiled):
    test_kernel_compiles_for_sm90_without_spills(spec, compiled)


def test_spill_check_sees_spills(compiled):
    """The check above can fail: a kernel built to spill is seen spilling."""
    (canary,) = compiled["canary"]
    assert "error" not in canary, canary.get("error")
    assert canary["spill_bytes"] > 0, canary


if __name__ == "__main__":  # the child process
    _compile_all()
