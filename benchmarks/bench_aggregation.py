"""Op-level benchmark of the LSA aggregation (paper Eq. 5): unfold reference vs ours.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_aggregation            # CPU, both sizes
    .venv/bin/python -m benchmarks.bench_aggregation --device cuda
    .venv/bin/python -m benchmarks.bench_aggregation --device cuda --dtype bfloat16

Sizes: the ResNet stage-2 operator (2x64x200x336, K=7) and the FPN P2 neck operator
(2x256x200x320, K=7), 16 channels per group. Implementations, each in its own process:

* ``unfold``: :func:`benchmarks.common.lsa_aggregate_unfold_baseline`, the official involution
  formulation (what other projects run);
* ``shift``: :func:`dcdc.layers.lsa_aggregate` with ``DCDC_BACKEND=torch`` (the pure-PyTorch
  shift-and-accumulate composite);
* ``ours``: :func:`dcdc.layers.lsa_aggregate` with ``DCDC_BACKEND=auto`` (the native kernel
  ``dcdc._C`` on CPU, on CUDA the Triton kernels of the ``simple`` family); the table names the
  backend that ran;
* ``ours tiled`` (CUDA only): the same with ``DCDC_TRITON_KERNELS=tiled``, the Triton kernels of
  the ``tiled`` family (see ``dcdc/layers/triton_kernels.py``), autotuned in an untimed call
  before the measured ones.

A second table times the aggregation together with the 1x1 conv that makes its kernels (the
kernel generator's last layer, R = C/4 -> G*K*K channels), as ``LSA.forward`` runs it:

* ``conv + ours``: the conv writes the B x G*K*K x H x W kernels, then ``lsa_aggregate``;
* ``fused``: :func:`dcdc.layers.lsa_generate_aggregate`, which computes each row's kernels in
  cache inside the native kernel (on CPU float32) and regenerates them in backward.

Times are medians of ``--repeat`` calls after a warm-up; memory is the extra peak RSS of the
call on CPU, on CUDA the peak of ``torch.cuda.max_memory_allocated`` above the memory allocated
before the first call (see ``benchmarks/common.py``). Ratios are against ``unfold`` measured in
the same run.
When ``unfold`` does not fit in memory at batch 2 (the P2 size needs ~13 GB forward and ~20 GB
forward+backward), it is rerun at batch 1 and its time and memory doubled (both are linear in
the batch); the table marks such rows "batch 1 x2".
"""
import argparse
import json

import torch

from benchmarks.common import format_table, machine_line, measure, run_case

SIZES = {"stage2": (2, 64, 200, 336), "p2": (2, 256, 200, 320)}
IMPLS = {"unfold": {}, "shift": {"DCDC_BACKEND": "torch"},
         "ours": {"DCDC_BACKEND": "auto", "DCDC_TRITON_KERNELS": "simple"}}
CUDA_IMPLS = {**IMPLS, "ours tiled": {"DCDC_BACKEND": "auto", "DCDC_TRITON_KERNELS": "tiled"}}
GENERATOR_IMPLS = {"conv + ours": {"DCDC_BACKEND": "auto"}, "fused": {"DCDC_BACKEND": "auto"}}


def _case(args):
    """Runs inside the child process: time one implementation on one size and mode."""
    import torch.nn.functional as F

    from benchmarks.common import lsa_aggregate_unfold_baseline
    from dcdc.layers import lsa_aggregate, lsa_generate_aggregate
    from dcdc.layers.dispatch import resolve_backend, triton_family

    device = torch.device(args["device"])
    dtype = getattr(torch, args["dtype"])
    batch, channels, height, width = args["shape"]
    k, groups, reduced = args["kernel_size"], channels // 16, channels // 4
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=gen).to(device, dtype)
    if args["impl"] in GENERATOR_IMPLS:  # inputs: hidden features and the 1x1 conv
        hidden = torch.randn(batch, reduced, height, width, generator=gen).to(device, dtype)
        weight = (torch.randn(groups * k * k, reduced, generator=gen) / reduced**0.5).to(device, dtype)
        bias = torch.zeros(groups * k * k, device=device, dtype=dtype)
        inputs = [x, hidden, weight, bias]
        if args["impl"] == "fused":
            def fn():
                return lsa_generate_aggregate(x, hidden, weight, bias, k)
        else:
            def fn():
                kernels = F.conv2d(hidden, weight[:, :, None, None], bias)
                return lsa_aggregate(x, kernels.view(batch, groups, k * k, height, width), k)
    else:
        kernels = torch.randn(batch, groups, k * k, height, width, generator=gen)
        kernels = kernels.to(device, dtype)
        inputs = [x, kernels]
        aggregate = lsa_aggregate_unfold_baseline if args["impl"] == "unfold" else lsa_aggregate

        def fn():
            return aggregate(x, kernels, k)
    backward = args["mode"] == "fwd+bwd"
    if backward:
        for t in inputs:
            t.requires_grad_(True)
        grad = torch.randn(batch, channels, height, width, generator=gen).to(device, dtype)

    def step():
        if backward:
            for t in inputs:
                t.grad = None
            fn().backward(grad)
        else:
            with torch.no_grad():
                fn()

    if device.type == "cuda":
        # the tiled kernels autotune at their first call, benchmarking each config with Triton's
        # 256 MiB cache-flush buffer: done here, outside the timed calls and measure()'s
        # peak-memory window
        step()
    result = measure(step, device, args["repeat"])
    backend = "" if args["impl"] == "unfold" else resolve_backend(device)
    result["backend"] = f"triton {triton_family()}" if backend == "triton" else backend
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls of the fast paths")
    parser.add_argument("--ref-repeat", type=int, default=1, help="timed calls of unfold")
    args = parser.parse_args()
    if args.case:
        return _case(json.loads(args.case))

    device = torch.device(args.device)
    print(f"LSA aggregation, K=7, 16 channels/group, {args.dtype}, {machine_line(device)}\n")
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            results = {}
            for impl, env in (CUDA_IMPLS if device.type == "cuda" else IMPLS).items():
                case = {"impl": impl, "mode": mode, "shape": SIZES[size], "kernel_size": 7,
                        "device": args.device, "dtype": args.dtype,
                        "repeat": args.ref_repeat if impl == "unfold" else args.repeat}
                results[impl] = run_case("benchmarks.bench_aggregation", case, env)
                if impl == "unfold" and "error" in results[impl] and case["shape"][0] > 1:
                    batch = case["shape"][0]
                    case["shape"] = (1, *case["shape"][1:])
                    r = run_case("benchmarks.bench_aggregation", case, env)
                    if "error" not in r:
                        r = {"seconds": r["seconds"] * batch, "extra_mb": r["extra_mb"] * batch,
                             "backend": "", "note": f" (batch 1 x{batch})"}
                    results[impl] = r
            ref = results["unfold"]
            for impl, r in results.items():
                shape = "x".join(map(str, SIZES[size]))
                if "error" in r:
                    rows.append([shape, mode, impl, "failed: " + r["error"][:60], "", "", ""])
                    continue
                name = impl + (f" ({r['backend']})" if r["backend"] else "") + r.get("note", "")
                speedup = ref["seconds"] / r["seconds"] if "seconds" in ref else float("nan")
                mem_ratio = r["extra_mb"] / ref["extra_mb"] if ref.get("extra_mb") else float("nan")
                rows.append([shape, mode, name, f"{r['seconds'] * 1e3:.1f}", f"{speedup:.1f}x",
                             f"{r['extra_mb']:.0f}", f"{mem_ratio:.3f}"])
            print(format_table(["input", "pass", "impl", "ms", "speed-up vs unfold",
                                "extra peak MiB", "memory vs unfold"], rows[-len(results):]),
                  flush=True)
            print()
    print(format_table(["input", "pass", "impl", "ms", "speed-up vs unfold", "extra peak MiB",
                        "memory vs unfold"], rows))

    print(f"\nKernel generation (1x1 conv, C/4 -> G*K*K) + aggregation, K=7, {args.dtype}\n")
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            results = {impl: run_case("benchmarks.bench_aggregation", {
                "impl": impl, "mode": mode, "shape": SIZES[size], "kernel_size": 7,
                "device": args.device, "dtype": args.dtype, "repeat": args.repeat}, env)
                for impl, env in GENERATOR_IMPLS.items()}
            ref = results["conv + ours"]
            for impl, r in results.items():
                shape = "x".join(map(str, SIZES[size]))
                if "error" in r or "error" in ref:
                    rows.append([shape, mode, impl, "failed: " + r.get("error", "")[:60], "", "",
                                 ""])
                    continue
                rows.append([shape, mode, impl, f"{r['seconds'] * 1e3:.1f}",
                             f"{ref['seconds'] / r['seconds']:.2f}x", f"{r['extra_mb']:.0f}",
                             f"{r['extra_mb'] / ref['extra_mb']:.2f}"])
    print(format_table(["input", "pass", "impl", "ms", "speed-up vs conv + ours",
                        "extra peak MiB", "memory vs conv + ours"], rows))


if __name__ == "__main__":
    main()
