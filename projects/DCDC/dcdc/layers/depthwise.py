"""The kernel generator's depth-wise convs (sigma_dw of Eq. 7) on the native CPU kernel.

oneDNN runs a depth-wise conv on NCHW tensors by reordering them into a blocked layout and back
around each call, which costs more than the 9 multiply-adds per value on the generator's maps.
``dcdc._C`` has a depth-wise K x K conv (K = 3, 5, 7; stride 1, zero padding K // 2) that works
on NCHW directly, forward and backward (see ``benchmarks/``). :func:`depthwise_conv` uses it for CPU
float32 tensors when it was built, and the module itself everywhere else (other devices and
dtypes, JIT tracing so FLOP counters see a conv, other conv geometries).
"""
import torch

from . import aggregation

__all__ = ["depthwise_conv"]


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return aggregation._native.depthwise_forward(x, weight)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x, grad_weight = aggregation._native.depthwise_backward(
            grad_out, x, weight, *ctx.needs_input_grad[:2])
        return grad_x, grad_weight


def _native_applies(conv, x):
    k = conv.weight.shape[-1]
    return (aggregation.native_available() and x.device.type == "cpu" and x.dim() == 4
            and x.dtype == conv.weight.dtype == torch.float32 and x.numel() > 0
            and not torch.jit.is_tracing() and conv.bias is None
            and getattr(conv, "norm", None) is None and getattr(conv, "activation", None) is None
            and conv.groups == conv.in_channels == conv.out_channels == x.shape[1]
            and tuple(conv.weight.shape[-2:]) == (k, k) and tuple(conv.stride) == (1, 1)
            and tuple(conv.padding) == (k // 2, k // 2) and tuple(conv.dilation) == (1, 1)
            and conv.padding_mode == "zeros" and aggregation._native.depthwise_supported(k))


def depthwise_conv(conv, x):
    """``conv(x)`` for a depth-wise ``Conv2d`` (groups = channels, no bias / norm / activation)."""
    if _native_applies(conv, x):
        return _DepthwiseConv.apply(x, conv.weight)
    return conv(x)
