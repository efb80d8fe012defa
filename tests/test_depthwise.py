"""The kernel generator's depth-wise convs on the native CPU kernel against float64 F.conv2d."""
import pytest
import torch
import torch.nn.functional as F

from detectron2.layers import Conv2d

from dcdc.layers import aggregation
from dcdc.layers.depthwise import depthwise_conv
from dcdc.layers.dispatch import depthwise_form

needs_native = pytest.mark.skipif(not aggregation.native_available(),
                                  reason="dcdc._C not built (no compiler at install)")


def _conv(channels, k, **kwargs):
    kwargs = {"padding": k // 2, "groups": channels, "bias": False, **kwargs}
    return Conv2d(channels, channels, k, **kwargs)


@needs_native
@pytest.mark.parametrize("shape,k", [((2, 8, 5, 7), 3), ((1, 16, 9, 37), 5), ((2, 4, 3, 20), 7),
                                     ((1, 3, 1, 1), 3), ((2, 5, 17, 16), 3)], ids=str)
def test_native_depthwise_matches_float64_conv(shape, k):
    gen = torch.Generator().manual_seed(sum(shape) + k)
    conv = _conv(shape[1], k)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    x = torch.randn(shape, generator=gen).requires_grad_(True)
    grad = torch.randn(shape, generator=gen)
    assert depthwise_form(conv, x) == "dcdc"
    out = depthwise_conv(conv, x)
    out.backward(grad)
    x64 = x.detach().double().requires_grad_(True)
    w64 = conv.weight.detach().double().requires_grad_(True)
    ref = F.conv2d(x64, w64, padding=k // 2, groups=shape[1])
    ref.backward(grad.double())
    for actual, expected in ((out, ref), (x.grad, x64.grad), (conv.weight.grad, w64.grad)):
        assert actual.dtype == torch.float32 and actual.shape == expected.shape
        scale = expected.abs().max().clamp_min(1e-12)
        assert (actual.double() - expected).abs().max() <= 1e-5 * scale


@needs_native
def test_native_depthwise_threads_agree_and_partial_grads():
    conv = _conv(32, 3)
    x = torch.randn(2, 32, 20, 40)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        xg = x.clone().requires_grad_(True)
        conv.weight.grad = None
        depthwise_conv(conv, xg).square().sum().backward()
        outs.append((xg.grad, conv.weight.grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    conv.weight.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    depthwise_conv(conv, xg).sum().backward()  # input gradient only
    assert xg.grad is not None and conv.weight.grad is outs[1][1]


@pytest.mark.parametrize("conv,x", [
    (_conv(8, 3, stride=2), torch.randn(1, 8, 9, 9)),          # strided
    (_conv(8, 9), torch.randn(1, 8, 12, 12)),                  # kernel size not compiled
    (_conv(8, 3, bias=True), torch.randn(1, 8, 9, 9)),         # bias
    (_conv(8, 3), torch.randn(1, 8, 9, 9, dtype=torch.float64)),
    (Conv2d(8, 8, 3, padding=1, groups=4, bias=False), torch.randn(1, 8, 9, 9)),  # not depth-wise
], ids=["stride", "k9", "bias", "float64", "grouped"])
def test_other_convs_use_the_module(conv, x):
    conv = conv.to(x.dtype)
    assert depthwise_form(conv, x) == "module"
    torch.testing.assert_close(depthwise_conv(conv, x), conv(x))
