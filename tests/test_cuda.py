"""Every CUDA check, in one file (``benchmarks/run_gpu.sh`` runs it on a GPU machine; without a
CUDA device it is skipped): both Triton kernel families against the float64 Eq. 5 reference in
fp32 / fp16 / bf16 (values and both gradients, any layout), ``opcheck`` of every ``dcdc`` op on
CUDA, ``torch.compile(fullgraph=True)`` with Inductor, bf16 autocast without a silent upcast,
float64 exact, a tensor on another device than the current one, and maps too large for a
65535-block grid axis. The same kernels run on CPU tensors under Triton's interpreter in
``test_ops_triton.py``.

To rehearse this file without a GPU, ``TRITON_INTERPRET=1 DCDC_TEST_DEVICE=cpu pytest
tests/test_cuda.py`` runs it on CPU tensors under Triton's interpreter (slow: minutes; the
tests that need a second device or a huge map are skipped there)."""
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dcdc.layers import DCDCConv2d, lsa_aggregate, lsa_generate_aggregate
from dcdc.layers.ops import lsa_aggregate_composite
from dcdc.layers.dispatch import TRITON_KERNELS, triton_available
from helpers import AGGREGATION_TOL, aggregation_inputs, assert_close_scaled, value_and_grads

DEVICE = os.environ.get("DCDC_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    not triton_available() or (DEVICE == "cuda" and not torch.cuda.is_available()),
    reason="no CUDA device (or no Triton)")
on_gpu = pytest.mark.skipif(DEVICE != "cuda", reason="too large or needs GPUs")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (B, C, H, W, G, K, stride): the models' K = 7 (3 in the stem), K = 5; strides 1 and 2 on odd
# and even sizes; 16 channels per group as in the models, and 8 and 24 (tile remainders)
SHAPES = [(2, 32, 9, 37, 2, 7, 2), (2, 32, 20, 33, 2, 7, 1), (1, 16, 13, 11, 1, 3, 1),
          (2, 48, 8, 21, 3, 5, 2), (1, 16, 12, 16, 2, 3, 2), (1, 48, 7, 9, 2, 7, 1)]


@pytest.fixture(params=TRITON_KERNELS)
def family(request, monkeypatch):
    monkeypatch.setenv("DCDC_BACKEND", "triton")
    monkeypatch.setenv("DCDC_TRITON_KERNELS", request.param)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triton_matches_float64_reference(family, shape, dtype):
    x, kernels, grad, k, stride = aggregation_inputs(shape, dtype)
    expected = value_and_grads(lsa_aggregate_composite, x.double(), kernels.double(),
                                grad.double(), k, stride)
    actual = value_and_grads(lsa_aggregate, x.to(DEVICE), kernels.to(DEVICE), grad.to(DEVICE), k, stride)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == dtype and a.is_contiguous()
        assert_close_scaled(a, e, AGGREGATION_TOL[dtype])


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_triton_reads_any_layout(family, layout):
    x, kernels, grad, k, stride = aggregation_inputs(SHAPES[0], torch.float32)
    expected = value_and_grads(lsa_aggregate_composite, x.double(), kernels.double(),
                                grad.double(), k, stride)
    xc, kc = x.to(DEVICE), kernels.to(DEVICE)
    if layout == "channels_last":
        xc = xc.contiguous(memory_format=torch.channels_last)
    else:  # every other column of wider tensors
        xc, kc = (torch.stack([t, torch.zeros_like(t)], dim=-1)[..., 0] for t in (xc, kc))
    assert not xc.is_contiguous()
    for a, e in zip(value_and_grads(lsa_aggregate, xc, kc, grad.to(DEVICE), k, stride), expected):
        assert_close_scaled(a, e, AGGREGATION_TOL[torch.float32])


def _on_device(args, grad):
    return [t.to(DEVICE).detach().requires_grad_(grad and t.is_floating_point())
            if isinstance(t, torch.Tensor) else t for t in args]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_opcheck_every_op(family, dtype):
    x, kernels, grad, k, stride = aggregation_inputs(SHAPES[0], dtype)
    ops = torch.ops.dcdc
    torch.library.opcheck(ops.lsa_aggregate, _on_device([x, kernels, k, stride], True))
    torch.library.opcheck(ops.lsa_aggregate_backward,
                          _on_device([grad, x, kernels, k, stride, True, True], False))
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 8, 5, 19, generator=gen).to(dtype)
    weight = torch.randn(2 * 49, 8, generator=gen).to(dtype)
    bias = torch.randn(2 * 49, generator=gen).to(dtype)
    torch.library.opcheck(ops.lsa_generate_aggregate,
                          _on_device([x, hidden, weight, bias, k, stride], True))
    torch.library.opcheck(ops.lsa_generate_aggregate_backward,
                          _on_device([grad, x, hidden, weight, bias, k, stride, True, True, True, True],
                                False))
    dw = torch.randn(32, 1, 3, 3, generator=gen).to(dtype)
    torch.library.opcheck(ops.depthwise_conv, _on_device([x, dw], True))
    torch.library.opcheck(ops.depthwise_conv_backward,
                          _on_device([torch.randn_like(x), x, dw, True, True], False))


@pytest.mark.parametrize("stride", [1, 2])
def test_compile_fullgraph_inductor(family, stride):
    torch.manual_seed(0)
    op = DCDCConv2d(32, kernel_size=7, stride=stride).to(DEVICE)
    x = torch.randn(2, 32, 19, 24, device=DEVICE)

    def step(module):
        module.zero_grad()
        xin = x.clone().requires_grad_(True)
        out = module(xin)
        out.square().mean().backward()
        return [out.detach(), xin.grad] + [p.grad for p in module.parameters()]

    expected = step(op)
    actual = step(torch.compile(op, fullgraph=True, backend="inductor"))
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


class _DcdcOpDtypes(TorchDispatchMode):
    """Records the floating input dtypes of every ``dcdc::`` op that runs."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "dcdc":
            self.seen.append((func.name(), {a.dtype for a in args
                                            if isinstance(a, torch.Tensor) and a.numel()}))
        return func(*args, **(kwargs or {}))


def test_bf16_autocast_runs_the_ops_in_bf16(family):
    torch.manual_seed(0)
    op = DCDCConv2d(64, kernel_size=7, stride=2).to(DEVICE)
    x = torch.randn(2, 64, 24, 31, device=DEVICE, requires_grad=True)
    with _DcdcOpDtypes() as mode, torch.autocast(DEVICE, dtype=torch.bfloat16):
        out = op(x)
    assert out.dtype == torch.bfloat16
    assert mode.seen and all(dtypes == {torch.bfloat16} for _, dtypes in mode.seen), mode.seen
    out.float().square().mean().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in op.parameters())
    with torch.no_grad():
        reference = op.double()(x.detach().double())
    assert_close_scaled(out, reference, 3e-2)


def test_float64_is_exact(family, monkeypatch):
    """float64 runs the exact composite, not the float32-accumulating kernels."""
    x, kernels, grad, k, stride = aggregation_inputs(SHAPES[0], torch.float64)
    actual = value_and_grads(lsa_aggregate, x.to(DEVICE), kernels.to(DEVICE), grad.to(DEVICE), k, stride)
    monkeypatch.setenv("DCDC_BACKEND", "torch")
    expected = value_and_grads(lsa_aggregate, x.to(DEVICE), kernels.to(DEVICE), grad.to(DEVICE), k, stride)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


@on_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_tensors_on_another_device_than_the_current_one(family):
    x, kernels, grad, k, stride = aggregation_inputs(SHAPES[0], torch.float32)
    expected = value_and_grads(lsa_aggregate_composite, x.double(), kernels.double(),
                                grad.double(), k, stride)
    with torch.cuda.device(0):
        dev = torch.device("cuda:1")
        actual = value_and_grads(lsa_aggregate, x.to(dev), kernels.to(dev), grad.to(dev), k,
                                  stride)
    for a, e in zip(actual, expected, strict=True):
        assert a.device == dev
        assert_close_scaled(a, e, AGGREGATION_TOL[torch.float32])


@on_gpu
def test_maps_larger_than_one_grid_axis(family, monkeypatch):
    """2900 x 2900 = 8.4 M pixels: more than 65535 blocks of 128 pixels."""
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(1, 16, 2900, 2900, device=DEVICE, generator=gen)
    kernels = torch.randn(1, 1, 9, 2900, 2900, device=DEVICE, generator=gen)
    grad = torch.randn_like(x)
    actual = value_and_grads(lsa_aggregate, x, kernels, grad, 3, 1)
    monkeypatch.setenv("DCDC_BACKEND", "torch")
    expected = value_and_grads(lsa_aggregate, x, kernels, grad, 3, 1)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_fused_generate_aggregate_matches_reference(family):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 32, 11, 21, generator=gen)
    hidden = torch.randn(2, 8, 6, 11, generator=gen)
    weight = torch.randn(2 * 49, 8, generator=gen)
    bias = torch.randn(2 * 49, generator=gen)
    leaves = [t.to(DEVICE).requires_grad_(True) for t in (x, hidden, weight, bias)]
    out = lsa_generate_aggregate(*leaves, 7, 2)
    out.square().sum().backward()
    ref = [t.detach().double().requires_grad_(True) for t in (x, hidden, weight, bias)]
    kernels = torch.einsum("or,brhw->bohw", ref[2], ref[1]) + ref[3].view(1, -1, 1, 1)
    expected = lsa_aggregate_composite(ref[0], kernels.view(2, 2, 49, 6, 11), 7, 2)
    expected.square().sum().backward()
    assert_close_scaled(out, expected, AGGREGATION_TOL[torch.float32])
    for a, e in zip(leaves, ref):
        assert_close_scaled(a.grad, e.grad, 1e-4)
