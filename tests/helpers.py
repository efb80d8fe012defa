"""Shared by the tests."""
from pathlib import Path

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
