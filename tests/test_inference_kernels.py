"""The native inference kernel of the generators' narrow 1x1 convs (``dcdc._C.pointwise_forward``)
and when ``DCDCConv2d`` uses it, against float64 references and the PyTorch composite."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, FrozenBatchNorm2d

from dcdc.layers import DCDCConv2d, aggregation, dcdc_conv

needs_native = pytest.mark.skipif(not aggregation.native_available(),
                                  reason="dcdc._C not built (no compiler at install)")


def _reference(x, weight, bias, dw, relu):
    x = x.double()
    if dw is not None:
        x = F.conv2d(x, dw.double(), padding=dw.shape[-1] // 2, groups=x.shape[1])
    y = F.conv2d(x, weight.double()[:, :, None, None], None if bias is None else bias.double())
    return y.relu() if relu else y


@needs_native
@pytest.mark.parametrize("shape,out_channels,k", [
    ((2, 8, 5, 7), 3, 3), ((1, 16, 9, 37), 20, 0), ((2, 4, 3, 20), 9, 7), ((1, 3, 1, 1), 1, 3),
    ((2, 5, 17, 16), 8, 5), ((1, 24, 6, 33), 17, 0), ((0, 4, 5, 5), 2, 3)], ids=str)
@pytest.mark.parametrize("relu", [False, True])
def test_pointwise_kernel_matches_float64(shape, out_channels, k, relu):
    gen = torch.Generator().manual_seed(sum(shape) + out_channels + k)
    x = torch.randn(shape, generator=gen)
    weight = torch.randn(out_channels, shape[1], generator=gen)
    bias = torch.randn(out_channels, generator=gen) if k != 5 else None
    dw = torch.randn(shape[1], 1, k, k, generator=gen) if k else None
    out = dcdc_conv.native.pointwise_forward(x, weight.t().contiguous(), bias, dw, relu)
    ref = _reference(x, weight, bias, dw, relu)
    assert out.dtype == torch.float32 and out.shape == ref.shape and out.is_contiguous()
    if ref.numel():
        assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max().clamp_min(1)


@needs_native
def test_pointwise_kernel_threads_agree():
    x, weight = torch.randn(2, 32, 40, 50), torch.randn(12, 32)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(dcdc_conv.native.pointwise_forward(x, weight.t().contiguous(), None, None, True))
    assert torch.equal(*outs)


@needs_native
@pytest.mark.parametrize("args,match", [
    (lambda x: (x.double(), torch.ones(8, 4), None, None, False), "float32"),
    (lambda x: (x, torch.ones(7, 4), None, None, False), "weight_t"),
    (lambda x: (x, torch.ones(8, 4), torch.ones(3), None, False), "bias"),
    (lambda x: (x, torch.ones(8, 4), None, torch.ones(8, 1, 4, 4), False), "depthwise_weight"),
], ids=["dtype", "weight", "bias", "depthwise"])
def test_pointwise_kernel_bad_input_raises(args, match):
    with pytest.raises(RuntimeError, match=match):
        dcdc_conv.native.pointwise_forward(*args(torch.randn(1, 8, 5, 5)))


def _generator_conv(norm):
    conv = Conv2d(16, 4, 1, bias=False, norm=norm, activation=nn.ReLU(inplace=True))
    with torch.no_grad():
        conv.weight.normal_()
        conv.norm.weight.uniform_(0.5, 2)
        conv.norm.bias.normal_()
        conv.norm.running_mean.normal_()
        conv.norm.running_var.uniform_(0.5, 2)
    return conv


class _Counting:
    """Stands in for ``dcdc._C`` in dcdc_conv and counts the inference kernel's calls."""

    def __init__(self, native):
        self.native, self.calls = native, 0

    def pointwise_forward(self, *args):
        self.calls += 1
        return self.native.pointwise_forward(*args)


@needs_native
@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_conv1x1_folds_frozen_norm_and_runs_native_in_inference(norm, monkeypatch):
    conv = _generator_conv(nn.BatchNorm2d(4) if norm == "BN" else FrozenBatchNorm2d(4)).eval()
    dw = Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
    x = torch.randn(2, 16, 11, 21)
    counting = _Counting(dcdc_conv.native)
    monkeypatch.setattr(dcdc_conv, "native", counting)
    with torch.no_grad():
        out = dcdc_conv._conv1x1(conv, x, depthwise=dw)
        ref = conv.double()(dw.double()(x.double()))
    assert counting.calls == 1
    assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max()


@needs_native
def test_conv1x1_keeps_autograd_and_batch_statistics(monkeypatch):
    conv = _generator_conv(nn.BatchNorm2d(4))
    counting = _Counting(dcdc_conv.native)
    monkeypatch.setattr(dcdc_conv, "native", counting)
    x = torch.randn(2, 16, 6, 7, requires_grad=True)
    conv.eval()
    dcdc_conv._conv1x1(conv, x).sum().backward()  # a gradient is needed: not the native kernel
    assert counting.calls == 0 and x.grad is not None and conv.weight.grad is not None
    conv.train()  # batch statistics do not fold
    with torch.no_grad():
        out = dcdc_conv._conv1x1(conv, x.detach())
        ref = conv(x.detach())
    assert counting.calls == 0 and torch.allclose(out, ref, atol=1e-5)


@needs_native
@pytest.mark.parametrize("stride,size", [(1, (13, 35)), (2, (17, 23))], ids=str)
def test_dcdc_conv_inference_equals_composite(stride, size, monkeypatch):
    torch.manual_seed(0)
    op = DCDCConv2d(32, kernel_size=7, stride=stride).eval()
    with torch.no_grad():
        for m in op.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 32, *size)
    counting = _Counting(dcdc_conv.native)
    monkeypatch.setattr(dcdc_conv, "native", counting)
    with torch.no_grad():
        fast = op(x)
        monkeypatch.setenv("DCDC_BACKEND", "torch")
        composite = op(x)
    assert counting.calls == 2  # LSA's depth-wise + reduce, GSI's reduce
    assert (fast - composite).abs().max() <= 1e-4 * composite.abs().max()
