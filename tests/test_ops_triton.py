"""The Triton kernels under ``TRITON_INTERPRET=1`` on CPU tensors, against the float64 Eq. 5
reference (the PyTorch composite): values and both gradients, for both kernel families
(``simple`` and ``tiled``, chosen by ``DCDC_TRITON_KERNELS``); offsets past int32 (views of a
huge, untouched buffer); float64, which the triton backend hands to the exact composite.

Triton reads ``TRITON_INTERPRET`` when it is imported, and another test may already have
imported it in this process, so the cases run in one child process (this file run as a script)
that sets the variable first and prints each case's result as it finishes; each case is then
reported as its own test here (a case that crashes the child, as an int32 offset that wraps to
an unmapped address does, is reported as such).
"""
import json
import os
import subprocess
import sys

import pytest

# (B, C, H, W, G, K, stride): K = 3, 5, 7; strides 1, 2 on odd sizes (ceil); several group counts
# (the models' 16 channels per group are in the module case)
SHAPES = [(2, 4, 5, 7, 2, 3, 1), (1, 6, 7, 5, 3, 3, 2), (1, 4, 5, 9, 1, 5, 2),
          (1, 8, 7, 7, 4, 7, 1), (1, 2, 9, 5, 2, 7, 2), (0, 4, 5, 5, 2, 3, 2)]
DTYPES = ["float32", "float16", "bfloat16"]
LAYOUTS = ["contiguous", "channels_last", "non_contiguous"]
# Max abs error allowed, as a fraction of the reference's largest magnitude
TOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2, "float64": 0.0}
FAMILIES = ["simple", "tiled"]  # dcdc.layers.dispatch.TRITON_KERNELS
CASES = ([("aggregate", s, d, "contiguous") for s in SHAPES for d in DTYPES]
         + [("aggregate", SHAPES[1], "float32", layout) for layout in LAYOUTS[1:]]
         # 3 channels per group: the tiled kernels pad the group to 4 channels and mask one
         + [("aggregate", (2, 9, 6, 5, 3, 5, 2), "float32", "channels_last"),
            ("partial_grads", SHAPES[2], "float32", "contiguous"),
            ("generate_aggregate", SHAPES[1], "float32", "contiguous"),
            ("module", SHAPES[1], "float32", "contiguous"),
            ("opcheck", SHAPES[0], "float32", "contiguous"),
            ("opcheck", SHAPES[0], "bfloat16", "contiguous"),
            ("float64", SHAPES[1], "float64", "contiguous"),
            ("large_index", (2, 4, 3, 5, 2, 3, 1), "float32", "huge_strides"),
            ("large_index", (2, 4, 3, 5, 2, 3, 2), "float32", "huge_strides")])
CASES = [(family, *case) for family in FAMILIES for case in CASES]
# A large-index case may touch this much new memory at most (its buffer is 8 GiB of address space)
LARGE_INDEX_RSS_MB = 256


def _case_id(case):
    return "-".join(map(str, case)).replace(" ", "")


def _max_error(actual, expected):
    if not expected.numel():
        return 0.0
    scale = expected.abs().max().clamp_min(1e-12)
    return float((actual.detach().double() - expected).abs().max() / scale)


def _layout(t, layout):
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=__import__("torch").channels_last)
    if layout == "non_contiguous":  # every other column of a wider tensor
        import torch

        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _huge_strided_inputs(shape):
    """x, kernels and grad_out of ``shape`` as views of one float32 buffer of 2^31 + 4096 elements
    (8 GiB of address space, of which only the views' pages are ever touched), with strides
    that put elements at and past offset 2^31: rows of x and grad_out 2^30 apart (row 2 at 2^31),
    kernel taps 2^28 apart (tap 8 at 2^31). Small strides and storage offsets keep the three
    views apart; the function checks that they fit and do not overlap."""
    import torch

    batch, channels, height, width, groups, k, stride = shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    buf = torch.empty(2**31 + 4096)
    views = [buf.as_strided((batch, channels, height, width), (64, 8, 2**30, 1), 0),
             buf.as_strided((batch, groups, k * k, out_h, out_w), (256, 64, 2**28, 8, 1), 1024),
             buf.as_strided((batch, channels, out_h, out_w), (64, 8, 2**30, 1), 2048)]
    offsets = torch.cat([sum(torch.arange(n).view([-1] + [1] * (v.dim() - d - 1)) * st
                             for d, (n, st) in enumerate(zip(v.shape, v.stride()))).flatten()
                         + v.storage_offset() for v in views])
    if offsets.max() >= buf.numel() or offsets.unique().numel() != offsets.numel():
        raise ValueError(f"shape {shape} does not fit the huge-stride layout")
    if offsets.max() < 2**31:
        raise ValueError(f"shape {shape} does not reach offset 2^31")
    gen = torch.Generator().manual_seed(sum(shape))
    for view in views:
        view.copy_(torch.randn(view.shape, generator=gen))
    return views


def _run_case(family, kind, shape, dtype_name, layout):
    import torch

    from dcdc.layers import lsa_aggregate, lsa_generate_aggregate
    from dcdc.layers.ops import lsa_aggregate_composite

    os.environ["DCDC_TRITON_KERNELS"] = family
    dtype = getattr(torch, dtype_name)
    batch, channels, height, width, groups, k, stride = shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(batch, channels, height, width, generator=gen).to(dtype)
    kernels = torch.randn(batch, groups, k * k, out_h, out_w, generator=gen).to(dtype)
    grad = torch.randn(batch, channels, out_h, out_w, generator=gen).to(dtype)
    if kind == "large_index":  # the ops on the views, against float64 on contiguous copies
        rss = _rss_mb()
        x, kernels, grad = _huge_strided_inputs(shape)
        out = torch.ops.dcdc.lsa_aggregate(x, kernels, k, stride)
        grads = torch.ops.dcdc.lsa_aggregate_backward(grad, x, kernels, k, stride, True, True)
        rss = _rss_mb() - rss
        x64 = x.contiguous().double().requires_grad_(True)
        k64 = kernels.contiguous().double().requires_grad_(True)
        expected = lsa_aggregate_composite(x64, k64, k, stride)
        expected.backward(grad.contiguous().double())
        errors = [_max_error(a, e) for a, e in zip([out, *grads], [expected, x64.grad, k64.grad])]
        return {"max_error": max(errors), "rss_growth_mb": rss}
    if kind == "float64":  # the triton backend runs float64 on the exact composite
        results = []
        for name in ("triton", "torch"):
            os.environ["DCDC_BACKEND"] = name
            xin, kin = x.clone().requires_grad_(True), kernels.clone().requires_grad_(True)
            out = lsa_aggregate(xin, kin, k, stride)
            out.backward(grad)
            results.append([out.detach(), xin.grad, kin.grad])
        os.environ["DCDC_BACKEND"] = "triton"
        return {"max_error": max(_max_error(a, e) for a, e in zip(*results))}
    if kind == "opcheck":
        torch.library.opcheck(torch.ops.dcdc.lsa_aggregate,
                              [x.requires_grad_(True), kernels.requires_grad_(True), k, stride])
        torch.library.opcheck(torch.ops.dcdc.lsa_aggregate_backward,
                              [grad, x.detach(), kernels.detach(), k, stride, True, True])
        return {"max_error": 0.0}
    if kind == "module":  # DCDCConv2d, stride 2, odd size: triton backend vs the torch composite
        from dcdc.layers import DCDCConv2d

        torch.manual_seed(0)
        op = DCDCConv2d(16, kernel_size=3, stride=2)
        x = torch.randn(2, 16, 7, 9)
        results = []
        for name in ("triton", "torch"):
            os.environ["DCDC_BACKEND"] = name
            op.zero_grad()
            xin = x.clone().requires_grad_(True)
            out = op(xin)
            out.square().sum().backward()
            results.append([out, xin.grad] + [p.grad for p in op.parameters()])
        os.environ["DCDC_BACKEND"] = "triton"
        return {"max_error": max(_max_error(a, e.double()) for a, e in zip(*results))}
    if kind == "generate_aggregate":
        reduced = 3
        hidden = torch.randn(batch, reduced, out_h, out_w, generator=gen)
        weight = torch.randn(groups * k * k, reduced, generator=gen)
        bias = torch.randn(groups * k * k, generator=gen)
        leaves = [t.requires_grad_(True) for t in (x, hidden, weight, bias)]
        lsa_generate_aggregate(*leaves, k, stride).backward(grad)
        ref = [t.detach().double().requires_grad_(True) for t in leaves]
        ref_kernels = torch.einsum("or,brhw->bohw", ref[2], ref[1]) + ref[3].view(1, -1, 1, 1)
        expected_out = lsa_aggregate_composite(
            ref[0], ref_kernels.view(batch, groups, k * k, out_h, out_w), k, stride)
        expected_out.backward(grad.double())
        return {"max_error": max(_max_error(a.grad, e.grad) for a, e in zip(leaves, ref))}
    xin, kin = _layout(x, layout).requires_grad_(True), _layout(kernels, layout).requires_grad_(True)
    need_kernels = kind != "partial_grads"
    kin.requires_grad_(need_kernels)
    out = lsa_aggregate(xin, kin, k, stride)
    out.backward(grad)
    x64 = x.detach().double().requires_grad_(True)
    k64 = kernels.detach().double().requires_grad_(True)
    expected = lsa_aggregate_composite(x64, k64, k, stride)
    expected.backward(grad.double())
    errors = [_max_error(out, expected), _max_error(xin.grad, x64.grad)]
    if need_kernels:
        errors.append(_max_error(kin.grad, k64.grad))
    elif kin.grad is not None:
        raise AssertionError("a gradient for kernels was computed although none was asked for")
    dtypes_ok = out.dtype == xin.grad.dtype == dtype and out.is_contiguous()
    return {"max_error": max(errors), "dtypes_ok": dtypes_ok}


@pytest.fixture(scope="module")
def results():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "DCDC_BACKEND": "triton", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env,
                          timeout=900)
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            out[result.pop("id")] = result
    died = (f"the child process died (exit code {proc.returncode}) during this case; its "
            f"stderr ends:\n{proc.stderr[-3000:]}")
    for case in CASES:  # the cases after a crash did not run
        if _case_id(case) not in out:
            out[_case_id(case)] = {"error": died}
            died = "not run: the child process died during an earlier case"
    return out


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_triton_kernel_matches_float64_reference(case, results):
    family, kind, shape, dtype, _ = case
    result = results[_case_id(case)]
    assert "error" not in result, result.get("error")
    assert result.get("dtypes_ok", True), "outputs / gradients not in the input dtype, NCHW"
    assert result["max_error"] <= TOL[dtype], result
    # which Triton kernels ran: the family asked for; none for float64 or an empty input
    launches = kind != "float64" and 0 not in shape[:4]
    assert result["families"] == ([family] if launches else []), result
    assert result.get("rss_growth_mb", 0) < LARGE_INDEX_RSS_MB, result


def test_family_variable(monkeypatch):
    from dcdc.layers.dispatch import TRITON_KERNELS, triton_family

    assert list(TRITON_KERNELS) == FAMILIES
    monkeypatch.delenv("DCDC_TRITON_KERNELS", raising=False)
    assert triton_family() == "simple"
    monkeypatch.setenv("DCDC_TRITON_KERNELS", " Tiled ")
    assert triton_family() == "tiled"
    monkeypatch.setenv("DCDC_TRITON_KERNELS", "fast")
    with pytest.raises(RuntimeError, match="DCDC_TRITON_KERNELS='fast'.*simple, tiled"):
        triton_family()


def test_launch_limits_raise_clearly():
    """Launches past CUDA's grid limit or int32 pixel indices raise before launching (meta
    tensors: nothing is allocated or run)."""
    pytest.importorskip("triton")
    import torch

    from dcdc.layers import triton_kernels

    def launches(shape, groups, family):
        batch, channels, height, width = shape
        x = torch.empty(shape, device="meta")
        kernels = torch.empty(batch, groups, 9, height, width, device="meta")
        (launch,) = triton_kernels._forward_launches(x, kernels, x, 3, 1, family)
        # the tiled family's grid is a function of the autotuned BLOCK: the smallest config's
        return launch.grid({"BLOCK": 64}) if callable(launch.grid) else launch.grid

    for family in FAMILIES:
        # 2^14 x 1024 (simple) or x 64 groups (tiled) rows of 2^18 pixels: over 2^31 programs
        with pytest.raises(ValueError, match="over CUDA's grid limit"):
            launches((2**14, 1024, 2**9, 2**9), 64, family)
        with pytest.raises(ValueError, match="in int32"):  # a map of 2^32 pixels
            launches((1, 16, 2**16, 2**16), 1, family)
        assert launches((2, 64, 200, 336), 4, family)  # the benchmark's size launches
    with pytest.raises(ValueError, match="simple, tiled"):
        triton_kernels.lsa_forward(torch.empty(1, 1, 1, 1), torch.empty(1, 1, 9, 1, 1), 3, 1,
                                   "fast")


def _record_families():
    """Make triton_kernels record, in the returned set, the family of every kernel it launches."""
    from dcdc.layers import triton_kernels

    launched = set()
    tiled = {triton_kernels._tiled_forward, triton_kernels._tiled_grad_x,
             triton_kernels._tiled_grad_kernels}
    run = triton_kernels._run

    def recording_run(launches, like):
        launched.update("tiled" if launch.kernel in tiled else "simple" for launch in launches)
        return run(launches, like)

    triton_kernels._run = recording_run
    return launched


if __name__ == "__main__":  # the child process: TRITON_INTERPRET=1 is set before triton loads
    import traceback

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    launched = _record_families()
    for case in CASES:  # a line per case, flushed: a crash loses only the case it happens in
        launched.clear()
        try:
            result = _run_case(*case)
        except Exception:  # reported by the test of that case
            result = {"error": traceback.format_exc()[-2000:]}
        print(json.dumps({"id": _case_id(case), **result, "families": sorted(launched)}),
              flush=True)
