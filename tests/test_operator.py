"""The DCDC operator modules: shapes, gradients, variants, dtypes and errors."""
import copy

import pytest
import torch
import torch.nn.functional as F

from dcdc.layers import GSI, LSA, DCDCConv2d, build_operator, per_sample_conv


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("stride, size", [(1, (9, 9)), (2, (9, 7)), (2, (8, 10)), (2, (1, 1))])
def test_output_shape_odd_sizes(stride, size):
    op = DCDCConv2d(32, kernel_size=7, stride=stride)
    out = op(torch.randn(2, 32, *size))
    assert out.shape == (2, 32, -(-size[0] // stride), -(-size[1] // stride))


def test_gradcheck_dcdc_conv_float64():
    torch.manual_seed(0)
    op = DCDCConv2d(16, kernel_size=3, stride=2, group_channels=8, gsi_kernel_size=3).double()
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,))


@pytest.mark.parametrize("k", [1, 3])
def test_per_sample_conv_matches_loop(k):
    torch.manual_seed(k)
    z = torch.randn(3, 5, 6, 7)
    kernels = torch.randn(3, 4, 5, k, k)
    expected = torch.cat([F.conv2d(z[b : b + 1], kernels[b], padding=k // 2) for b in range(3)])
    torch.testing.assert_close(per_sample_conv(z, kernels), expected, rtol=1e-5, atol=1e-5)


def test_gsi_is_eq8_to_10_per_sample():
    """GSI on a batch equals GSI on each sample alone: one dynamic kernel per sample."""
    torch.manual_seed(0)
    gsi = GSI(64, stride=2, gsi_kernel_size=3).eval()
    x = torch.randn(3, 64, 9, 10)
    batched = gsi(x)
    looped = torch.cat([gsi(x[b : b + 1]) for b in range(3)])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)
    assert gsi.width == 8  # round(1.0 * sqrt(64))


@pytest.mark.parametrize("width", [9, 37])  # output 5 wide: unfused path; 19 wide: fused on CPU
def test_involution_operator_is_rednets_involution(width):
    """operator="involution" computes RedNet's involution (official unfold formulation)."""
    torch.manual_seed(0)
    op = build_operator("involution", 32, kernel_size=7, stride=2).eval()
    lsa = op.lsa
    assert lsa.dw_in is None and lsa.dw_hidden is None and op.gsi is None
    x = torch.randn(2, 32, 11, width)
    weight = lsa.span(lsa.reduce(F.avg_pool2d(x, 2, 2, ceil_mode=True)))
    b, _, h, w = weight.shape
    weight = weight.view(b, 2, 49, h, w).unsqueeze(2)
    patches = F.unfold(x, 7, padding=3, stride=2).view(b, 2, 16, 49, h, w)
    expected = (weight * patches).sum(dim=3).view(b, 32, h, w)
    torch.testing.assert_close(op(x), expected, rtol=1e-5, atol=1e-5)


def test_old_operator_name_rednet_is_refused_naming_involution():
    """RedNet is the network; the operator is "involution": the old value points at the new."""
    with pytest.raises(ValueError, match='"involution"'):
        build_operator("rednet", 32)


def test_parameter_count_matches_the_layer_formula():
    """Parameters counted layer by layer from Eq. 7-10 for C=64, k=7, alpha=1/4, k_dw=3, m=8,
    k_gsi=1: LSA = DW + PW(+norm) + DW + PW(+bias), GSI = PW(+norm) + PW(+bias) + PW."""
    c, k, g, hidden, m = 64, 7, 4, 16, 8
    lsa = 9 * c + c * hidden + 2 * hidden + 9 * hidden + hidden * k * k * g + k * k * g
    gsi = c * m + 2 * m + m * m * m + m * m + m * c
    assert _count(DCDCConv2d(64)) == lsa + gsi
    assert _count(build_operator("lsa", 64)) == lsa
    assert _count(build_operator("involution", 64)) == lsa - 9 * c - 9 * hidden
    assert _count(DCDCConv2d(64, global_branch="conv_small")) == lsa + gsi - (m ** 3 + m * m) + 9 * m * m
    assert _count(DCDCConv2d(64, global_branch="conv_large")) == lsa + 9 * c * c
    assert _count(build_operator("conv", 64)) == 9 * c * c


def test_global_branch_attributes_say_what_they_hold():
    """"gsi" / "conv_small" keep a GSI in ``gsi``; "conv_large" a plain 3x3 conv C->C in
    ``global_conv``, and the output is LSA + that conv."""
    torch.manual_seed(0)
    for branch, dynamic in (("gsi", True), ("conv_small", False)):
        op = DCDCConv2d(32, global_branch=branch)
        assert isinstance(op.gsi, GSI) and op.gsi.dynamic == dynamic and op.global_conv is None
    op = DCDCConv2d(32, stride=2, global_branch="conv_large").eval()
    assert op.gsi is None and op.global_conv.weight.shape == (32, 32, 3, 3)
    assert {k.split(".")[0] for k in op.state_dict()} == {"lsa", "global_conv"}
    x = torch.randn(2, 32, 9, 9)
    expected = op.lsa(x) + F.conv2d(x, op.global_conv.weight, stride=2, padding=1)
    torch.testing.assert_close(op(x), expected, rtol=1e-5, atol=1e-5)
    none = DCDCConv2d(32, global_branch="none")
    assert none.gsi is None and none.global_conv is None


@pytest.mark.parametrize("branch", ["gsi", "conv_small", "conv_large", "none"])
def test_variants_forward_backward(branch):
    op = DCDCConv2d(32, stride=2, global_branch=branch)
    x = torch.randn(2, 32, 9, 9, requires_grad=True)
    op(x).square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in op.named_parameters():
        assert p.grad is not None, name


def test_empty_batch():
    op = DCDCConv2d(32, stride=2, gsi_kernel_size=3)
    x = torch.randn(0, 32, 9, 9, requires_grad=True)
    out = op(x)
    assert out.shape == (0, 32, 5, 5)
    out.sum().backward()


def test_bfloat16_autocast_cpu():
    torch.manual_seed(0)
    op = DCDCConv2d(32, stride=2).eval()
    x = torch.randn(2, 32, 15, 13)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = op(x)
    assert torch.isfinite(low).all()
    ref = op(x)
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_bfloat16_autocast_cpu_inference(stride, mode):
    """Eval under CPU bf16 autocast without autograd: the eager-inference paths step aside (the
    in-place GSI sum crashed on mixed dtypes), the result is bf16 and equals the float64 module
    within bf16's precision."""
    torch.manual_seed(0)
    op = DCDCConv2d(64, stride=stride).eval()
    x = torch.randn(2, 64, 20, 24)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context, torch.autocast("cpu", dtype=torch.bfloat16):
        low = op(x)
    with torch.no_grad():
        ref = copy.deepcopy(op).double()(x.double())
    assert low.dtype == torch.bfloat16
    assert (low.double() - ref).abs().max() < 0.05 * ref.abs().max()


def test_extra_repr_shows_hyperparameters():
    text = repr(DCDCConv2d(64, kernel_size=7, stride=2, gsi_scale=2.0))
    for piece in ("kernel_size=7", "stride=2", "groups=4", "dw_kernel_size=3", "width=16"):
        assert piece in text


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: DCDCConv2d(40), "channels=40 is not divisible by group_channels=16"),
        (lambda: DCDCConv2d(32, kernel_size=4), "kernel_size must be odd"),
        (lambda: DCDCConv2d(32, global_branch="big"), "global_branch must be one of"),
        (lambda: build_operator("conv_large", 32), "operator must be one of"),
        (lambda: LSA(32, dw_kernel_size=2), "dw_kernel_size must be odd"),
        (lambda: GSI(32, gsi_kernel_size=2), "gsi_kernel_size must be odd"),
    ],
)
def test_bad_construction(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("shape", [(32, 8, 8), (2, 16, 8, 8), (1, 2, 32, 8, 8)])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match=r"expects x of shape \(B, 32, H, W\)"):
        DCDCConv2d(32)(torch.randn(shape))


def test_config_defaults_are_the_operator_defaults():
    """MODEL.DCDC's operator keys default to DCDCConv2d's own defaults (one source)."""
    import inspect

    from dcdc.config import get_dcdc_cfg, operator_kwargs_from_cfg

    signature = inspect.signature(DCDCConv2d).parameters
    kwargs = operator_kwargs_from_cfg(get_dcdc_cfg())
    assert kwargs == {name: signature[name].default for name in kwargs}
    assert kwargs == {"group_channels": 16, "reduction": 4, "dw_kernel_size": 3,
                      "gsi_kernel_size": 1, "gsi_scale": 1.0}  # the paper's settings


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 2, 8, 5), (1, 1, 6, 6), (0, 3, 5, 5),
                                   (1, 3, 1, 1)])
def test_stride2_downsampling_equals_ceil_mode_average_pool(shape):
    from dcdc.layers.dcdc_conv import _downsample

    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours, ref = _downsample(2)(x), torch.nn.AvgPool2d(2, 2, ceil_mode=True)(x)
    torch.testing.assert_close(ours, ref)
    if ours.numel():
        g = torch.randn_like(ours)
        torch.testing.assert_close(torch.autograd.grad((ours * g).sum(), x)[0],
                                   torch.autograd.grad((ref * g).sum(), x)[0])
