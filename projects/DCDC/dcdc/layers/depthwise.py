"""The kernel generator's depth-wise convs (sigma_dw of Eq. 7) on the native CPU kernel.

oneDNN runs a depth-wise conv on NCHW tensors by reordering them into a blocked layout and back
around each call, which costs more than the 9 multiply-adds per value on the generator's maps.
``dcdc._C`` has a depth-wise K x K conv (K = 3, 5, 7; stride 1, zero padding K // 2) that works
on NCHW directly, forward and backward, registered as ``torch.ops.dcdc.depthwise_conv`` (see
:mod:`.ops`). :func:`depthwise_conv` calls that op for CPU float32 tensors, and the module itself
everywhere else (other devices, where cuDNN and the compilers handle depth-wise convs; other
dtypes; JIT traces for counting, so FLOP counters see a conv, see
:func:`.dispatch.deployment_tracing`; other conv geometries).
"""
import torch

from . import dispatch, ops  # noqa: F401  (ops registers torch.ops.dcdc)

__all__ = ["depthwise_conv"]


def depthwise_conv(conv, x):
    """``conv(x)`` for a depth-wise ``Conv2d`` (groups = channels, no bias / norm / activation):
    ``dcdc::depthwise_conv`` where :func:`.dispatch.depthwise_form` says so, else the module."""
    if dispatch.depthwise_form(conv, x) == "dcdc":
        return torch.ops.dcdc.depthwise_conv(x, conv.weight)
    return conv(x)
