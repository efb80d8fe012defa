"""Fuzz lsa_aggregate and DCDCConv2d: a correct result or a clear ValueError, never garbage."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcdc.layers import DCDCConv2d, lsa_aggregate
from test_aggregation import eq5_reference

# Magnitudes whose K*K-term sums stay representable in each dtype ("very large" inputs).
LARGE = {torch.float64: 1e100, torch.float32: 1e17, torch.bfloat16: 1e17, torch.float16: 20.0}
DTYPES = list(LARGE)
# derandomize: CI sees the same examples every run; database=None: nothing written to the tree.
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def aggregation_case(draw):
    groups, group_width = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(
        batch=draw(st.integers(0, 2)), channels=groups * group_width, groups=groups,
        height=draw(st.integers(1, 10)), width=draw(st.integers(1, 10)),
        kernel_size=draw(st.sampled_from([1, 3, 5, 7])), stride=draw(st.integers(1, 3)),
        dtype=draw(st.sampled_from(DTYPES)), values=draw(st.sampled_from(["normal", "zero", "large", "nonfinite"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _values(shape, case, gen):
    t = torch.randn(shape, generator=gen, dtype=torch.float64)
    if case["values"] == "zero":
        t.zero_()
    elif case["values"] == "large":
        t *= LARGE[case["dtype"]]
    elif case["values"] == "nonfinite" and t.numel():
        flat = t.view(-1)
        idx = torch.randint(0, flat.numel(), (3,), generator=gen)
        flat[idx] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=t.dtype)
    return t.to(case["dtype"])


@FUZZ
@given(aggregation_case())
def test_fuzz_lsa_aggregate(case):
    gen = torch.Generator().manual_seed(case["seed"])
    k, s = case["kernel_size"], case["stride"]
    out_h, out_w = -(-case["height"] // s), -(-case["width"] // s)
    x = _values((case["batch"], case["channels"], case["height"], case["width"]), case, gen)
    kernels = _values((case["batch"], case["groups"], k * k, out_h, out_w), case, gen)
    out = lsa_aggregate(x, kernels, k, s)
    assert out.dtype == case["dtype"] and out.shape == (case["batch"], case["channels"], out_h, out_w)
    expected = eq5_reference(x, kernels, k, s)
    # Rounding bound of a k*k-term sum: k*k * eps * sum |terms| (plus the dtype's own rounding).
    bound = eq5_reference(x.abs(), kernels.abs(), k, s)
    eps = torch.finfo(case["dtype"]).eps
    # Zero padding follows F.conv2d: a padded 0 times a non-finite kernel tap is NaN.
    taps_finite = torch.isfinite(kernels).all(dim=2).repeat_interleave(
        case["channels"] // case["groups"], dim=1)
    finite = torch.isfinite(expected) & torch.isfinite(bound) & taps_finite
    err = (out.double() - expected).abs()
    assert (err[finite] <= (k * k + 1) * eps * bound[finite] + 1e-300).all()
    assert torch.isfinite(out[finite]).all()
    # Non-finite values are never masked: a NaN (or inf) of Eq. 5 is non-finite in ours too.
    assert torch.isnan(out[torch.isnan(expected)]).all()
    assert not torch.isfinite(out[torch.isinf(expected)]).any()


@FUZZ
@given(
    group_channels=st.sampled_from([1, 4, 8, 16]), groups=st.integers(1, 4),
    extra_channels=st.sampled_from([0, 0, 0, 1, 3]), kernel_size=st.sampled_from([1, 3, 5, 7, 2, 4]), stride=st.integers(1, 3), size=st.integers(1, 12),
    global_branch=st.sampled_from(["gsi", "conv_small", "conv_large", "none"]),
    gsi_kernel_size=st.sampled_from([1, 3]), seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_dcdc_conv(group_channels, groups, extra_channels, kernel_size, stride, size,
                        global_branch, gsi_kernel_size, seed):
    torch.manual_seed(seed)
    channels = group_channels * groups + extra_channels
    kwargs = dict(kernel_size=kernel_size, stride=stride, group_channels=group_channels,
                  global_branch=global_branch, gsi_kernel_size=gsi_kernel_size)
    if channels % group_channels or kernel_size % 2 == 0 or channels < 4:
        with pytest.raises(ValueError, match="channels|kernel_size|reduction"):
            DCDCConv2d(channels, **kwargs)
        return
    op = DCDCConv2d(channels, **kwargs)
    x = torch.randn(2, channels, size, size + 1, requires_grad=True)
    out = op(x)
    assert out.shape == (2, channels, -(-size // stride), -(-(size + 1) // stride))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    # A NaN in the input is not hidden: it reaches the output.
    with torch.no_grad():
        poisoned = x.detach().clone()
        poisoned[0, 0, 0, 0] = float("nan")
        assert torch.isnan(op.eval()(poisoned)).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_module(dtype):
    torch.manual_seed(0)
    op = DCDCConv2d(32, stride=2, gsi_kernel_size=3).eval()
    x = torch.randn(2, 32, 11, 9)
    ref = op(x)
    out = op.to(dtype)(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
