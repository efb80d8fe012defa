"""The kernel generator's depth-wise convs (sigma_dw of Eq. 7) on the native CPU kernel.

oneDNN runs a depth-wise conv on NCHW tensors by reordering them into a blocked layout and back
around each call, which costs more than the 9 multiply-adds per value on the generator's maps.
``dcdc._C`` has a depth-wise K x K conv (K = 3, 5, 7; stride 1, zero padding K // 2) that works
on NCHW directly, forward and backward, registered as ``torch.ops.dcdc.depthwise_conv`` (see
:mod:`.ops`). :func:`depthwise_conv` calls that op for CPU float32 tensors, and the module itself
everywhere else (other devices, where cuDNN and the compilers handle depth-wise convs; other
dtypes; JIT traces for counting, so FLOP counters see a conv, see
:func:`.backend.deployment_tracing`; other conv geometries).
"""
import torch

from . import ops  # noqa: F401  (registers torch.ops.dcdc)
from .backend import tracing_convs

__all__ = ["depthwise_conv", "native_depthwise_applies"]


def native_depthwise_applies(conv, x):
    """Whether ``conv(x)`` is a conv ``torch.ops.dcdc.depthwise_conv`` computes, on CPU float32."""
    k = conv.weight.shape[-1]
    # not under autocast: the conv must run in the autocast dtype there, as conv(x) does
    return (x.device.type == "cpu" and x.dim() == 4 and not torch.is_autocast_enabled("cpu")
            and x.dtype == conv.weight.dtype == torch.float32 and x.numel() > 0
            and not tracing_convs() and conv.bias is None
            and getattr(conv, "norm", None) is None and getattr(conv, "activation", None) is None
            and conv.groups == conv.in_channels == conv.out_channels == x.shape[1]
            and tuple(conv.weight.shape[-2:]) == (k, k) and k in ops.NATIVE_DEPTHWISE_SIZES
            and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (k // 2, k // 2)
            and tuple(conv.dilation) == (1, 1) and conv.padding_mode == "zeros")


def depthwise_conv(conv, x):
    """``conv(x)`` for a depth-wise ``Conv2d`` (groups = channels, no bias / norm / activation)."""
    if native_depthwise_applies(conv, x):
        return torch.ops.dcdc.depthwise_conv(x, conv.weight)
    return conv(x)
