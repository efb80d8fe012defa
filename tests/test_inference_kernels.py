"""The native inference kernel of the 1x1 convs (``dcdc._C.pointwise_forward``), when
``DCDCConv2d`` and the DCDC-ResNet blocks (``folded_conv``) use it, against float64 references,
the PyTorch composite and the autograd path."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, FrozenBatchNorm2d, get_norm

from dcdc.layers import DCDCConv2d, aggregation, dcdc_conv, folded_conv, norm_relu_
from dcdc.layers import ops
from dcdc.layers.ops import lsa_aggregate_composite
from dcdc.modeling import build_classifier

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
    ((2, 5, 17, 16), 8, 5), ((1, 24, 6, 33), 17, 0), ((0, 4, 5, 5), 2, 3),
    ((1, 4, 181, 333), 24, 3)],  # a 5.5 MiB output: its pages are advised for huge pages
    ids=str)
@pytest.mark.parametrize("relu", [False, True])
def test_pointwise_kernel_matches_float64(shape, out_channels, k, relu):
    gen = torch.Generator().manual_seed(sum(shape) + out_channels + k)
    x = torch.randn(shape, generator=gen)
    weight = torch.randn(out_channels, shape[1], generator=gen)
    bias = torch.randn(out_channels, generator=gen) if k != 5 else None
    dw = torch.randn(shape[1], 1, k, k, generator=gen) if k else None
    out = ops._native.pointwise_forward(x, weight.t().contiguous(), bias, dw, relu)
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
        outs.append(ops._native.pointwise_forward(x, weight.t().contiguous(), None, None, True))
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
        ops._native.pointwise_forward(*args(torch.randn(1, 8, 5, 5)))


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
    """Stands in for ``dcdc._C`` in dcdc.layers.ops (which alone calls it) and counts the
    inference kernels' calls (``calls``: the 1x1 kernel; ``fused_gsi``: the fused LSA kernel
    with the GSI branch); the other kernels pass through."""

    def __init__(self, native):
        self.native, self.calls, self.fused_gsi = native, 0, 0

    def __getattr__(self, name):
        return getattr(self.native, name)

    def pointwise_forward(self, *args):
        self.calls += 1
        return self.native.pointwise_forward(*args)

    def lsa_fused_forward(self, *args, **kwargs):
        self.fused_gsi += kwargs.get("gsi_z") is not None
        return self.native.lsa_fused_forward(*args, **kwargs)


@needs_native
@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_conv1x1_folds_frozen_norm_and_runs_native_in_inference(norm, monkeypatch):
    conv = _generator_conv(nn.BatchNorm2d(4) if norm == "BN" else FrozenBatchNorm2d(4)).eval()
    dw = Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
    x = torch.randn(2, 16, 11, 21)
    counting = _Counting(ops._native)
    monkeypatch.setattr(ops, "_native", counting)
    with torch.no_grad():
        out = dcdc_conv._conv1x1(conv, x, depthwise=dw)
        ref = conv.double()(dw.double()(x.double()))
    assert counting.calls == 1
    assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max()


@needs_native
def test_conv1x1_keeps_autograd_and_batch_statistics(monkeypatch):
    conv = _generator_conv(nn.BatchNorm2d(4))
    counting = _Counting(ops._native)
    monkeypatch.setattr(ops, "_native", counting)
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
@pytest.mark.parametrize("stride,size,dtype", [
    (1, (13, 35), torch.float32), (2, (17, 23), torch.float32), (1, (181, 333), torch.float32),
    (1, (8, 20), torch.float64)], ids=str)
def test_dcdc_conv_inference_equals_composite(stride, size, dtype, monkeypatch):
    torch.manual_seed(0)
    op = DCDCConv2d(32, kernel_size=7, stride=stride).eval().to(dtype)
    with torch.no_grad():
        for m in op.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 32, *size, dtype=dtype)
    counting = _Counting(ops._native)
    monkeypatch.setattr(ops, "_native", counting)
    with torch.no_grad():
        fast = op(x)
        monkeypatch.setenv("DCDC_BACKEND", "torch")
        composite = op(x)
    # float32 only: LSA's depth-wise + reduce and GSI's reduce on the native 1x1 kernel, and
    # LSA + GSI in one pass where the output is at least 16 columns wide (the fused kernel's tile)
    native_f32 = dtype == torch.float32
    assert counting.calls == 2 * native_f32
    assert counting.fused_gsi == (native_f32 and -(-size[1] // stride) >= 16)
    assert fast.dtype == dtype
    assert (fast - composite).abs().max() <= 1e-4 * composite.abs().max()


@needs_native
@pytest.mark.parametrize("kernel_size,stride,channels,group_channels,size", [
    (7, 1, 32, 16, (9, 37)), (7, 2, 32, 16, (15, 39)), (3, 1, 24, 6, (5, 16)),
    (5, 2, 20, 10, (12, 33)), (7, 1, 32, 16, (1, 16))], ids=str)
def test_fused_forward_with_gsi_against_float64(kernel_size, stride, channels, group_channels,
                                                size):
    """The native fused LSA kernel with the GSI term equals Eq. 5 plus gsi_weight @ gsi_z,
    computed in float64 by the composite; any channel count per group (whole register tiles or
    not), both strides, odd sizes, the overlapping last column tile."""
    torch.manual_seed(0)
    batch, groups, reduced, m = 2, channels // group_channels, 5, 3
    out_h, out_w = (-(-n // stride) for n in size)
    x = torch.randn(batch, channels, *size)
    hidden = torch.randn(batch, reduced, out_h, out_w)
    weight = torch.randn(groups * kernel_size ** 2, reduced)
    bias = torch.randn(groups * kernel_size ** 2)
    gsi_z = torch.randn(batch, m, out_h, out_w)
    gsi_weight = torch.randn(batch, channels, m)
    got = ops._native.lsa_fused_forward(x, hidden, weight, bias, kernel_size, stride,
                                        gsi_z=gsi_z, gsi_weight=gsi_weight)
    kernels = (torch.einsum("or,brhw->bohw", weight.double(), hidden.double())
               + bias.double().view(1, -1, 1, 1))
    kernels = kernels.view(batch, groups, kernel_size ** 2, out_h, out_w)
    want = lsa_aggregate_composite(x.double(), kernels, kernel_size, stride)
    want = want + torch.einsum("bcm,bmhw->bchw", gsi_weight.double(), gsi_z.double())
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


@needs_native
def test_fused_forward_gsi_bad_input():
    x, hidden = torch.randn(1, 16, 4, 16), torch.randn(1, 4, 4, 16)
    weight = torch.randn(49, 4)
    with pytest.raises(RuntimeError, match="both gsi_z and gsi_weight"):
        ops._native.lsa_fused_forward(x, hidden, weight, None, 7, 1,
                                      gsi_z=torch.randn(1, 3, 4, 16))
    with pytest.raises(RuntimeError, match=r"gsi_weight \(B, C, m\)"):
        ops._native.lsa_fused_forward(x, hidden, weight, None, 7, 1,
                                      gsi_z=torch.randn(1, 3, 4, 16),
                                      gsi_weight=torch.randn(1, 15, 3))


def _with_stats(module):
    """``module`` in eval mode with random BatchNorm statistics and affine parameters."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                m.weight.uniform_(0.5, 2)
                m.bias.normal_()
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    return module.eval()


@pytest.mark.parametrize("in_ch,out_ch,k,stride,norm,native_calls", [
    (16, 24, 1, 1, "BN", 1),          # block 1x1 conv: the native kernel, BN folded
    (24, 16, 1, 1, "FrozenBN", 1),
    (16, 520, 1, 1, "BN", 0),         # wider than 512: one folded F.conv2d
    (16, 24, 1, 2, "BN", 0),          # strided shortcut
    (3, 8, 3, 2, "BN", 0),            # stem conv
    (8, 16, 3, 1, "FrozenBN", 0),
    (32, 32, 3, 1, "GN", 0),          # no running statistics: conv(x)
    (16, 8, 1, 1, "", 1),             # no norm
], ids=str)
def test_folded_conv_equals_conv_in_inference(in_ch, out_ch, k, stride, norm, native_calls,
                                              monkeypatch):
    torch.manual_seed(0)
    conv = _with_stats(Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2, bias=not norm,
                              norm=get_norm(norm, out_ch), activation=nn.ReLU()))
    x = torch.randn(2, in_ch, 13, 18)
    if aggregation.native_available():
        counting = _Counting(ops._native)
        monkeypatch.setattr(ops, "_native", counting)
    with torch.no_grad():
        out = folded_conv(conv, x)
        ref = conv.double()(x.double())
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
    if aggregation.native_available():
        assert counting.calls == native_calls


@pytest.mark.parametrize("norm", ["BN", "FrozenBN", "GN"])
def test_norm_relu_in_place_only_in_inference(norm):
    torch.manual_seed(0)
    module = _with_stats(get_norm(norm, 32))
    y = torch.randn(2, 32, 5, 6)
    ref = F.relu(module(y))
    with torch.no_grad():
        out = norm_relu_(module, y.clone())
    assert torch.allclose(out, ref, atol=1e-6)
    fresh = y.clone()
    with torch.no_grad():
        in_place = norm_relu_(module, fresh).data_ptr() == fresh.data_ptr()
    assert in_place == (norm != "GN")  # GN has no running statistics to fold
    y.requires_grad_()
    out = norm_relu_(module, y * 1)  # with autograd: the module, then an in-place ReLU
    out.sum().backward()
    assert torch.allclose(out, ref, atol=1e-6) and y.grad is not None


def test_inference_paths_follow_autocast():
    """Under autocast the blocks' convs and norms are the modules, in the autocast dtype."""
    conv = _with_stats(Conv2d(16, 24, 1, bias=False, norm=nn.BatchNorm2d(24)))
    norm = _with_stats(nn.BatchNorm2d(24))
    x = torch.randn(2, 16, 7, 9)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = folded_conv(conv, x), conv(x)
        y = torch.randn(2, 24, 7, 9)
        normed, normed_ref = norm_relu_(norm, y.clone()), F.relu(norm(y))
    assert out.dtype == ref.dtype == torch.bfloat16 and torch.equal(out, ref)
    assert normed.dtype == normed_ref.dtype and torch.equal(normed, normed_ref)


def test_folded_conv_is_conv_under_autograd():
    conv = _with_stats(Conv2d(16, 24, 1, bias=False, norm=nn.BatchNorm2d(24)))
    x = torch.randn(2, 16, 7, 9, requires_grad=True)
    out = folded_conv(conv, x)
    assert torch.equal(out, conv(x))  # the module itself, not a folded or native pass
    out.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


@pytest.mark.parametrize("operator", ["conv", "dcdc"])
def test_dcdc_resnet_inference_equals_autograd_path(operator):
    """The blocks' folded convs and in-place sums in inference give the autograd path's values."""
    torch.manual_seed(0)
    model = _with_stats(build_classifier(26, operator=operator, num_classes=None))
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        fast = model(x)["res5"]
    ref = model(x.requires_grad_())["res5"].detach()
    assert (fast - ref).abs().max() <= 1e-4 * ref.abs().max()
