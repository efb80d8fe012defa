"""Shared by the tests."""
from pathlib import Path

import numpy as np
import torch

# the repository root: configs/, tools/ and train_net.py are found from it
REPO = Path(__file__).resolve().parents[1]

# Max abs error of the LSA aggregation allowed, as a fraction of the float64 reference's largest
# magnitude, per dtype (the kernels sum in float32).
AGGREGATION_TOL = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def aggregation_inputs(shape, dtype, seed=0):
    """``x``, ``kernels``, an output gradient, K and the stride of an aggregation of
    ``shape`` = (B, C, H, W, G, K, stride), random in float32, then cast to ``dtype``."""
    batch, channels, height, width, groups, k, stride = shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    gen = torch.Generator().manual_seed(seed + sum(shape))
    x = torch.randn(batch, channels, height, width, generator=gen)
    kernels = torch.randn(batch, groups, k * k, out_h, out_w, generator=gen)
    grad = torch.randn(batch, channels, out_h, out_w, generator=gen)
    return x.to(dtype), kernels.to(dtype), grad.to(dtype), k, stride


def value_and_grads(fn, x, kernels, grad, k, stride):
    """``fn(x, kernels, k, stride)`` and the gradients of ``x`` and ``kernels`` for ``grad``."""
    x = x.detach().requires_grad_(True)
    kernels = kernels.detach().requires_grad_(True)
    out = fn(x, kernels, k, stride)
    out.backward(grad)
    return out.detach(), x.grad, kernels.grad


def assert_close_scaled(actual, expected, tol):
    """Max abs error (on the CPU, in float64) at most ``tol`` x the largest ``|expected|``."""
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.detach().cpu().double() - expected.cpu().double()).abs().max()
    assert err <= tol * scale, f"max error {err:.3g} > {tol} x {scale:.3g}"


def ort_run(path, *inputs):
    """The outputs of the ONNX model at ``path`` in onnxruntime (CPU) for ``inputs``, as torch
    tensors."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return [torch.from_numpy(np.asarray(o))
            for o in session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})]


def assert_standard_onnx(path):
    """The ONNX model at ``path`` uses standard ONNX operators only (no custom domain, no dcdc
    op)."""
    import onnx

    model = onnx.load(str(path))
    domains = {node.domain for node in model.graph.node}
    assert domains <= {"", "ai.onnx"}, f"custom ONNX domains {domains}"
    assert not any(node.op_type.startswith("dcdc") for node in model.graph.node)


def assert_onnx_equals_eager(path, model, inputs, atol=1e-3):
    """Standard ops only, and onnxruntime gives ``model``'s outputs (a tensor, or a dict of them
    in key order) on each input of ``inputs``, within ``atol`` / ``rtol`` = ``atol``."""
    assert_standard_onnx(path)
    for inp in inputs:
        got = ort_run(path, inp)
        with torch.no_grad():
            out = model(inp)
        want = [out[k] for k in sorted(out)] if isinstance(out, dict) else [out]
        assert len(got) == len(want)
        for g, e in zip(got, want):
            assert g.shape == e.shape
            torch.testing.assert_close(g, e, atol=atol, rtol=atol)
