"""The Triton kernels under ``TRITON_INTERPRET=1`` on CPU tensors, against the float64 Eq. 5
reference (unfold): values and both gradients.

Triton reads ``TRITON_INTERPRET`` when it is imported, and another test may already have
imported it in this process, so the cases run in one child process (this file run as a script)
that sets the variable first; each case is then reported as its own test here.
"""
import json
import os
import subprocess
import sys

import pytest

# (B, C, H, W, G, K, stride): K = 3, 5, 7; strides 1, 2 on odd sizes (ceil); several group counts
SHAPES = [(2, 4, 5, 7, 2, 3, 1), (1, 6, 7, 5, 3, 3, 2), (1, 4, 5, 9, 1, 5, 2),
          (1, 8, 7, 7, 4, 7, 1), (1, 2, 9, 5, 2, 7, 2), (0, 4, 5, 5, 2, 3, 2)]
DTYPES = ["float32", "float16", "bfloat16"]
LAYOUTS = ["contiguous", "channels_last", "non_contiguous"]
# Max abs error allowed, as a fraction of the reference's largest magnitude
TOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}
CASES = ([("aggregate", s, d, "contiguous") for s in SHAPES for d in DTYPES]
         + [("aggregate", SHAPES[1], "float32", layout) for layout in LAYOUTS[1:]]
         + [("partial_grads", SHAPES[2], "float32", "contiguous"),
            ("generate_aggregate", SHAPES[1], "float32", "contiguous"),
            ("module", SHAPES[1], "float32", "contiguous"),
            ("opcheck", SHAPES[0], "float32", "contiguous"),
            ("opcheck", SHAPES[0], "bfloat16", "contiguous")])


def _case_id(case):
    return "-".join(map(str, case)).replace(" ", "")


def _max_error(actual, expected):
    scale = expected.abs().max().clamp_min(1e-12) if expected.numel() else 1.0
    return float((actual.double() - expected).abs().max() / scale) if expected.numel() else 0.0


def _layout(t, layout):
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=__import__("torch").channels_last)
    if layout == "non_contiguous":  # every other column of a wider tensor
        import torch

        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


def _run_case(kind, shape, dtype_name, layout):
    import torch

    from dcdc.layers import lsa_aggregate, lsa_aggregate_unfold, lsa_generate_aggregate

    dtype = getattr(torch, dtype_name)
    batch, channels, height, width, groups, k, stride = shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(batch, channels, height, width, generator=gen).to(dtype)
    kernels = torch.randn(batch, groups, k * k, out_h, out_w, generator=gen).to(dtype)
    grad = torch.randn(batch, channels, out_h, out_w, generator=gen).to(dtype)
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
        expected_out = lsa_aggregate_unfold(
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
    expected = lsa_aggregate_unfold(x64, k64, k, stride)
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
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1])


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_triton_kernel_matches_float64_reference(case, results):
    result = results[_case_id(case)]
    assert "error" not in result, result.get("error")
    assert result.get("dtypes_ok", True), "outputs / gradients not in the input dtype, NCHW"
    assert result["max_error"] <= TOL[case[2]], result


if __name__ == "__main__":  # the child process: TRITON_INTERPRET=1 is set before triton loads
    import traceback

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    out = {}
    for case in CASES:
        try:
            out[_case_id(case)] = _run_case(*case)
        except Exception:  # reported by the test of that case
            out[_case_id(case)] = {"error": traceback.format_exc()[-2000:]}
    print(json.dumps(out))
