"""The inference-only ops ``dcdc::lsa_gsi_inference`` and ``dcdc::pointwise_inference`` (native
CPU float32): ``opcheck`` (schema, fake kernel, no autograd registered) and their values against
the float64 math they fuse, written out here with plain PyTorch."""
import pytest
import torch
import torch.nn.functional as F

from dcdc.layers import dispatch, ops

pytestmark = pytest.mark.skipif(not dispatch.native_available(),
                                reason="dcdc._C not built (no compiler at install)")


def _lsa_gsi_args(stride):
    gen = torch.Generator().manual_seed(stride)
    width = 20 * stride  # output maps 20 wide: the native tile is 16
    k, c, groups, hidden, m = 7, 32, 2, 8, 6
    out_w = -(-width // stride)
    x = torch.randn(2, c, 11, width, generator=gen)
    h = torch.randn(2, hidden, -(-11 // stride), out_w, generator=gen)
    weight = torch.randn(groups * k * k, hidden, generator=gen) * 0.2
    bias = torch.randn(groups * k * k, generator=gen) * 0.1
    z = torch.randn(2, m, *h.shape[2:], generator=gen)
    gsi_weight = torch.randn(2, c, m, generator=gen) * 0.3
    return [x, h, weight, bias, k, stride, z, gsi_weight]


@pytest.mark.parametrize("stride", [1, 2])
def test_lsa_gsi_inference(stride):
    args = _lsa_gsi_args(stride)
    torch.library.opcheck(ops.lsa_gsi_inference_op, args)
    x, h, weight, bias, k, stride, z, gsi_weight = [a.double() if torch.is_tensor(a) else a
                                                    for a in args]
    kernels = (torch.einsum("or,brhw->bohw", weight, h) + bias.view(1, -1, 1, 1)).reshape(
        2, 2, k * k, *h.shape[2:])
    want = ops.lsa_aggregate_composite(x, kernels, k, stride)
    want = want + torch.einsum("bcm,bmhw->bchw", gsi_weight, z)
    got = torch.ops.dcdc.lsa_gsi_inference(*args)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("depthwise,relu", [(False, False), (True, True)])
def test_pointwise_inference(depthwise, relu):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 9, 21, generator=gen)
    weight_t = torch.randn(16, 12, generator=gen) * 0.3
    bias = torch.randn(12, generator=gen)
    dw = torch.randn(16, 1, 3, 3, generator=gen) if depthwise else None
    args = [x, weight_t, bias, dw, relu]
    torch.library.opcheck(ops.pointwise_inference_op, args)
    y = x.double()
    if depthwise:
        y = F.conv2d(y, dw.double(), padding=1, groups=16)
    y = torch.einsum("cm,bchw->bmhw", weight_t.double(), y) + bias.double().view(1, -1, 1, 1)
    want = y.relu() if relu else y
    torch.testing.assert_close(torch.ops.dcdc.pointwise_inference(*args).double(), want,
                               rtol=1e-4, atol=1e-4)


def test_inference_ops_refuse_what_they_do_not_compute():
    args = _lsa_gsi_args(1)
    with pytest.raises(ValueError, match="CPU float32"):
        torch.ops.dcdc.lsa_gsi_inference(*[a.double() if torch.is_tensor(a) else a
                                           for a in args])
    with pytest.raises(ValueError, match="do not fit"):
        torch.ops.dcdc.lsa_gsi_inference(*args[:6], args[6][:, :, :3], args[7])
    narrow = [a[..., :12] if torch.is_tensor(a) and a.dim() == 4 else a for a in args]
    with pytest.raises(ValueError, match="at least 16 wide"):
        torch.ops.dcdc.lsa_gsi_inference(*narrow)
