"""The fast LSA aggregation paths against the float64 reference.

``lsa_aggregate`` has two implementations of the same autograd function: the native CPU kernel
``dcdc._C`` (built by setup.py when a compiler is present; an AVX-512/AVX2 register-tiled float32
path for maps at least 16 columns wide, a generic path otherwise) and the pure-PyTorch
shift-and-accumulate path (CUDA, or installs without the extension). Both must reproduce the
float64 reference (the composite, ``lsa_aggregate_composite``, itself checked against a per-pixel
loop in test_aggregation.py), in values and gradients, in fp32 / bf16 / fp16, and agree with each
other.
"""
import pytest
import torch

from dcdc.layers import aggregation
from dcdc.layers import lsa_aggregate, lsa_generate_aggregate
from dcdc.layers.ops import lsa_aggregate_composite
from helpers import AGGREGATION_TOL, aggregation_inputs, assert_close_scaled, value_and_grads

NATIVE = aggregation.native_available()
needs_native = pytest.mark.skipif(not NATIVE, reason="dcdc._C not built (no compiler at install)")

# (B, C, H, W, G, K, stride). Widths >= 16 take the native float32 tiled path (including a last,
# overlapping tile and a channel count per group that is not a multiple of 4); narrower ones the
# generic loops. Heights/widths smaller than K exercise the zero padding on both sides.
SHAPES = [
    (2, 32, 9, 37, 2, 7, 1),
    (1, 20, 7, 16, 4, 3, 1),
    (2, 48, 13, 35, 3, 7, 2),
    (1, 16, 5, 40, 1, 5, 3),
    (1, 16, 3, 20, 1, 7, 1),
    (2, 8, 6, 5, 2, 3, 1),
    (1, 12, 7, 9, 3, 5, 2),
]
@pytest.fixture(params=[True, False] if NATIVE else [False], ids=lambda n: "native" if n else "torch")
def path(request, monkeypatch):
    """Run a test once on the native kernel (when built) and once on the PyTorch path."""
    monkeypatch.setenv("DCDC_BACKEND", "native" if request.param else "torch")
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dtypes_match_float64_reference(shape, dtype, path):
    x, kernels, grad, k, stride = aggregation_inputs(shape, dtype)
    # the reference sees the same (rounded) inputs, in float64
    expected = value_and_grads(lsa_aggregate_composite, x.double(), kernels.double(), grad.double(),
                                k, stride)
    actual = value_and_grads(lsa_aggregate, x, kernels, grad, k, stride)
    for a, e in zip(actual, expected):
        assert a.dtype == dtype
        assert_close_scaled(a, e, AGGREGATION_TOL[dtype])


@needs_native
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_native_equals_torch_path(shape, monkeypatch):
    x, kernels, grad, k, stride = aggregation_inputs(shape, torch.float32, seed=1)
    results = []
    for enabled in (True, False):
        monkeypatch.setenv("DCDC_BACKEND", "native" if enabled else "torch")
        results.append(value_and_grads(lsa_aggregate, x, kernels, grad, k, stride))
    for fast, fallback in zip(*results):
        torch.testing.assert_close(fast, fallback, rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize("shape", [(1, 4, 5, 7, 2, 3, 1), (2, 4, 6, 5, 2, 3, 2),
                                   (1, 2, 4, 17, 1, 5, 1)], ids=str)
def test_native_gradcheck(shape):
    x, kernels, _, k, stride = aggregation_inputs(shape, torch.float64, seed=2)
    x.requires_grad_(True)
    kernels.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: lsa_aggregate(a, b, k, stride), (x, kernels))


def test_layouts_and_partial_grads(path):
    """Non-contiguous / channels_last inputs and a gradient for only one of the inputs."""
    x, kernels, grad, k, stride = aggregation_inputs((2, 32, 9, 20, 2, 3, 1), torch.float32, seed=3)
    expected = value_and_grads(lsa_aggregate_composite, x.double(), kernels.double(), grad.double(),
                                k, stride)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    k_nc = kernels.transpose(3, 4).contiguous().transpose(3, 4)
    actual = value_and_grads(lsa_aggregate, x_cl, k_nc, grad, k, stride)
    for a, e in zip(actual, expected):
        assert_close_scaled(a, e, AGGREGATION_TOL[torch.float32])
    x_only = x.clone().requires_grad_(True)
    lsa_aggregate(x_only, kernels, k, stride).backward(grad)
    assert_close_scaled(x_only.grad, expected[1], AGGREGATION_TOL[torch.float32])


def test_mixed_dtypes_promote(path):
    x, kernels, _, k, stride = aggregation_inputs((1, 16, 5, 18, 1, 3, 1), torch.float32)
    out = lsa_aggregate(x.to(torch.bfloat16), kernels, k, stride)
    assert out.dtype == torch.float32


# (B, C, H, W, G, R, K, stride) for lsa_generate_aggregate: outputs >= 16 wide run the fused
# native kernel (taps in register tiles of 7 plus a remainder for K = 3, 5), narrower ones the
# unfused path.
FUSED_SHAPES = [
    (2, 32, 9, 37, 2, 8, 7, 1),
    (1, 48, 13, 35, 3, 12, 7, 2),
    (1, 16, 5, 50, 1, 5, 5, 3),
    (1, 32, 7, 16, 2, 3, 3, 1),
    (2, 16, 6, 9, 1, 4, 3, 1),
]


def _fused_inputs(shape, seed=0):
    batch, channels, height, width, groups, reduced, k, stride = shape
    gen = torch.Generator().manual_seed(seed + sum(shape))
    out_h, out_w = -(-height // stride), -(-width // stride)
    return (torch.randn(batch, channels, height, width, generator=gen),
            torch.randn(batch, reduced, out_h, out_w, generator=gen),
            torch.randn(groups * k * k, reduced, generator=gen) / reduced ** 0.5,
            torch.randn(groups * k * k, generator=gen),
            torch.randn(batch, channels, out_h, out_w, generator=gen), k, stride)


def _generate_then_aggregate(x, hidden, weight, bias, k, stride):
    """Independent float64 reference: an explicit 1x1 conv, then the composite aggregation."""
    kernels = torch.einsum("or,brhw->bohw", weight, hidden)
    if bias is not None:
        kernels = kernels + bias.view(1, -1, 1, 1)
    kernels = kernels.view(x.shape[0], -1, k * k, *kernels.shape[2:])
    return lsa_aggregate_composite(x, kernels, k, stride)


def _fused_value_and_grads(fn, inputs, grad, k, stride):
    inputs = [t.detach().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*inputs, k, stride)
    out.backward(grad)
    return [out.detach()] + [t.grad for t in inputs if t is not None]


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("shape", FUSED_SHAPES, ids=str)
def test_generate_aggregate_matches_float64_reference(shape, with_bias, path):
    x, hidden, weight, bias, grad, k, stride = _fused_inputs(shape)
    bias = bias if with_bias else None
    inputs = [x, hidden, weight, bias]
    expected = _fused_value_and_grads(
        _generate_then_aggregate, [t.double() if t is not None else None for t in inputs],
        grad.double(), k, stride)
    actual = _fused_value_and_grads(lsa_generate_aggregate, inputs, grad, k, stride)
    assert len(actual) == len(expected) == (5 if with_bias else 4)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == torch.float32
        assert_close_scaled(a, e, 2e-5)


def test_generate_aggregate_gradcheck():
    """float64 takes the unfused path; this checks the composition the fused path must equal."""
    x, hidden, weight, bias, _, k, stride = _fused_inputs((1, 4, 4, 6, 2, 3, 3, 2), seed=4)
    inputs = [t.double().requires_grad_(True) for t in (x, hidden, weight, bias)]
    assert torch.autograd.gradcheck(
        lambda *a: lsa_generate_aggregate(*a, k, stride), inputs)


@needs_native
def test_generate_aggregate_threads_agree():
    """Forward and input gradients: tasks own disjoint rows, so any thread count gives the same
    bits. The weight / bias gradients sum per-thread partials in float64: equal to ~1 ulp."""
    x, hidden, weight, bias, grad, k, stride = _fused_inputs((2, 64, 23, 40, 4, 16, 7, 2), seed=5)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results.append(_fused_value_and_grads(lsa_generate_aggregate, [x, hidden, weight, bias],
                                              grad, k, stride))
    for one, two in zip(results[0][:3], results[1][:3]):
        assert torch.equal(one, two)
    for one, two in zip(results[0][3:], results[1][3:]):
        torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weight_shape,match", [((49, 7), "do not make LSA kernels"),
                                                ((50, 8), "do not make LSA kernels"),
                                                ((49 * 3, 8), "G dividing")])
def test_generate_aggregate_bad_shapes(weight_shape, match):
    x, hidden = torch.randn(1, 32, 8, 20), torch.randn(1, 8, 8, 20)
    with pytest.raises(ValueError, match=match):
        lsa_generate_aggregate(x, hidden, torch.randn(weight_shape), None, 7)
