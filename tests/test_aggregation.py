"""lsa_aggregate and the PyTorch composite (the other tests' reference) against an independent,
slow transcription of paper Eq. 5."""
import pytest
import torch

from dcdc.layers import lsa_aggregate
from dcdc.layers.ops import lsa_aggregate_composite


def eq5_reference(x, kernels, kernel_size, stride):
    """Eq. 5 read literally, one output pixel and tap at a time, no padding tensor.

    Y[b, c, h, w] = sum_{i, j} X[b, c, h*s + i - p, w*s + j - p] * H[b, c // (C/G), i*K + j, h, w],
    with out-of-range input positions contributing zero.
    """
    batch, channels, height, width = x.shape
    groups, out_h, out_w = kernels.shape[1], kernels.shape[3], kernels.shape[4]
    pad = (kernel_size - 1) // 2
    group_of = torch.arange(channels) // (channels // groups)
    out = torch.zeros(batch, channels, out_h, out_w, dtype=torch.float64)
    x, kernels = x.double(), kernels.double()
    for h in range(out_h):
        for w in range(out_w):
            for i in range(kernel_size):
                for j in range(kernel_size):
                    src_h, src_w = h * stride + i - pad, w * stride + j - pad
                    if 0 <= src_h < height and 0 <= src_w < width:
                        tap = kernels[:, group_of, i * kernel_size + j, h, w]  # (B, C)
                        out[:, :, h, w] += x[:, :, src_h, src_w] * tap
    return out


def ceil_div(a, b):
    return -(-a // b)


# (B, C, H, W, groups, K, stride): odd and even sizes, strides 1 and 2, one group and many.
SHAPES = [
    (2, 8, 9, 11, 2, 3, 1),
    (1, 16, 7, 7, 1, 7, 1),
    (2, 32, 12, 10, 2, 7, 2),
    (2, 16, 9, 13, 4, 5, 2),
    (1, 4, 5, 3, 4, 3, 2),
    (3, 6, 4, 4, 3, 1, 1),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_eq5(shape):
    batch, channels, height, width, groups, k, stride = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(batch, channels, height, width, generator=gen)
    kernels = torch.randn(batch, groups, k * k, ceil_div(height, stride), ceil_div(width, stride),
                          generator=gen)
    expected = eq5_reference(x, kernels, k, stride)
    out = lsa_aggregate(x, kernels, k, stride)
    assert out.shape == expected.shape
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lsa_aggregate_composite(x, kernels, k, stride).double(), expected,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["non_contiguous", "channels_last"])
def test_memory_layouts(layout):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 11, 9, generator=gen)
    kernels = torch.randn(2, 2, 9, 6, 5, generator=gen)
    if layout == "non_contiguous":
        x_in = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
        kernels_in = kernels.transpose(3, 4).contiguous().transpose(3, 4)
        assert not x_in.is_contiguous() and not kernels_in.is_contiguous()
    else:
        x_in = x.contiguous(memory_format=torch.channels_last)
        kernels_in = kernels
    expected = eq5_reference(x, kernels, 3, 2)
    torch.testing.assert_close(lsa_aggregate(x_in, kernels_in, 3, 2).double(), expected,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_gradcheck(stride):
    gen = torch.Generator().manual_seed(stride)
    x = torch.randn(2, 4, 5, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    kernels = torch.randn(2, 2, 9, ceil_div(5, stride), ceil_div(7, stride), dtype=torch.float64,
                          generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: lsa_aggregate(a, b, 3, stride), (x, kernels))


def test_gradient_matches_reference():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 8, 9, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    kernels = torch.randn(1, 2, 25, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(1, 8, 5, 4, dtype=torch.float64, generator=gen)
    (lsa_aggregate(x, kernels, 5, 2) * weight).sum().backward()
    ours = (x.grad.clone(), kernels.grad.clone())
    x.grad = kernels.grad = None
    (eq5_reference(x, kernels, 5, 2) * weight).sum().backward()
    torch.testing.assert_close(ours[0], x.grad)
    torch.testing.assert_close(ours[1], kernels.grad)


def test_empty_batch():
    x = torch.randn(0, 8, 6, 6, requires_grad=True)
    kernels = torch.randn(0, 2, 9, 6, 6, requires_grad=True)
    out = lsa_aggregate(x, kernels, 3)
    assert out.shape == (0, 8, 6, 6)
    out.sum().backward()
    assert x.grad.shape == x.shape and kernels.grad.shape == kernels.shape


@pytest.mark.parametrize(
    "x_shape, k_shape, kernel_size, stride, match",
    [
        ((2, 8, 6, 6), (2, 2, 9, 6, 6), 4, 1, "kernel_size must be a positive odd"),
        ((8, 6, 6), (2, 2, 9, 6, 6), 3, 1, "x must be a 4-D"),
        ((2, 8, 6, 6), (2, 2, 9, 3, 3), 3, 1, r"kernels has shape .* needs"),
        ((2, 8, 6, 6), (2, 3, 9, 6, 6), 3, 1, "G dividing"),
        ((2, 8, 6, 6), (2, 2, 49, 6, 6), 3, 1, "kernels has shape"),
        ((2, 8, 6, 6), (2, 2, 9, 6), 3, 1, "kernels must be a 5-D"),
        ((2, 8, 6, 6), (2, 2, 9, 6, 6), 3, 0, "stride must be a positive"),
    ],
)
def test_bad_input(x_shape, k_shape, kernel_size, stride, match):
    with pytest.raises(ValueError, match=match):
        lsa_aggregate(torch.zeros(x_shape), torch.zeros(k_shape), kernel_size, stride)
