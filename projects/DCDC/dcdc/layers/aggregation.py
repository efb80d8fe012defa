"""The LSA aggregation of Eq. 5 (involution): a per-pixel, per-group K x K weighted sum.

``Y[b, c, h, w] = sum_{i,j} Xpad[b, c, h*s + i, w*s + j] * H[b, c // (C // G), i*K + j, h, w]``

The usual involution code builds this with ``unfold``, which materializes a
``B x C x K^2 x H' x W'`` tensor (49x the input for K=7; the benchmarks' baseline,
``benchmarks.common.lsa_aggregate_unfold_baseline``). :func:`lsa_aggregate` never does, in
forward or backward. It calls the operator ``torch.ops.dcdc.lsa_aggregate`` (see :mod:`.ops`),
which runs one of three implementations of the same math, chosen by ``DCDC_BACKEND`` (see
:mod:`.dispatch`):

* ``native``, CPU tensors, when ``dcdc._C`` was built at install time
  (``csrc/lsa_aggregate.cpp``, C++ / OpenMP): register-tiled loops whose extra memory is a few
  rows per thread.
* ``triton``, CUDA tensors (:mod:`.triton_kernels`): two kernel families (``simple``: one
  output element per thread; ``tiled``: a group's channels per program), fp32 accumulation;
  float64 runs the ``torch`` composite (exact).
* ``torch``, any device: :func:`.ops.lsa_aggregate_composite`, pure PyTorch
  shift-and-accumulate, K^2 in-place multiply-adds of strided views of the padded input; extra
  memory is one padded copy of the input.

Every dtype float64/32/16 and bfloat16 is accepted; fp16/bf16 accumulate in float32. Under
``torch.autocast`` the inputs are cast to the autocast dtype (the op runs in bf16 / fp16).

:func:`lsa_generate_aggregate` also takes the generator's last 1x1 conv into the aggregation
(``torch.ops.dcdc.lsa_generate_aggregate``): on CPU float32 the native kernel computes each
row's kernels in cache, so the B x G*K^2 x H' x W' kernel tensor (3x the input for K=7, G=C/16)
is never written to memory nor kept from forward to backward; backward regenerates it for the
input gradient only. Elsewhere the op generates the kernels by one bmm and aggregates them.

Under ``torch.onnx.export(..., dynamo=False)`` (a JIT trace the TorchScript-based ONNX exporter
converts op by op) both functions record the composite instead of the opaque operators, so the
exporter writes Eq. 5 from its aten ops (see :mod:`dcdc.export.onnx_ops`).
"""
import torch
import torch.nn.functional as F

from . import dispatch
from .ops import (  # registers torch.ops.dcdc
    check_aggregate_inputs,
    check_generator_inputs,
    lsa_aggregate_composite,
    native_available,
)

__all__ = ["lsa_aggregate", "lsa_generate_aggregate", "check_aggregate_inputs", "native_available"]


def lsa_aggregate(x, kernels, kernel_size, stride=1):
    """Aggregate ``x`` with per-pixel kernels (paper Eq. 5).

    Args:
        x: (B, C, H, W) input.
        kernels: (B, G, K*K, H', W') kernels from the LSA kernel generator, H' = ceil(H / stride),
            taps ordered (kh, kw); channel c uses group ``c // (C // G)``.
        kernel_size: K, odd. Zero padding is (K - 1) // 2.
        stride: sampling stride of the output grid.

    Returns:
        (B, C, H', W') tensor in the promoted dtype of ``x`` and ``kernels`` (the autocast
        dtype under ``torch.autocast``).
    """
    check_aggregate_inputs(x, kernels, kernel_size, stride)
    dtype = dispatch.compute_dtype(x, kernels)
    aggregate = lsa_aggregate_composite if dispatch.onnx_tracing() else torch.ops.dcdc.lsa_aggregate
    return aggregate(x.to(dtype), kernels.to(dtype), kernel_size, stride)


def lsa_generate_aggregate(x, hidden, weight, bias, kernel_size, stride=1):
    """``lsa_aggregate(x, kernels)`` with ``kernels`` the output of a 1x1 conv of ``hidden``.

    Args:
        x: (B, C, H, W) input.
        hidden: (B, R, H', W') features of the kernel generator before its last 1x1 conv.
        weight: (G*K*K, R) weight of that conv (a 1x1 conv weight viewed as a matrix), rows
            ordered (group, kh, kw); ``bias``: (G*K*K,) or None.

    Same result as ``lsa_aggregate(x, conv1x1(hidden).view(B, G, K*K, H', W'), K, stride)``.
    A JIT trace outside :func:`~dcdc.layers.dispatch.deployment_tracing` runs exactly that
    (``aten::_convolution`` then ``dcdc::lsa_aggregate``, so FLOP counters see the conv), and so
    does the TorchScript-based ONNX exporter's trace, with the composite for the op; everything
    else runs ``torch.ops.dcdc.lsa_generate_aggregate``.
    """
    kernel_shape = check_generator_inputs(x, hidden, weight, bias, kernel_size, stride)
    dtype = dispatch.compute_dtype(x, hidden, weight, bias)
    x, hidden, weight = x.to(dtype), hidden.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    if dispatch.counting() or dispatch.onnx_tracing():
        kernels = F.conv2d(hidden, weight[:, :, None, None], bias).view(kernel_shape)
        return lsa_aggregate(x, kernels, kernel_size, stride)
    return torch.ops.dcdc.lsa_generate_aggregate(x, hidden, weight, bias, kernel_size, stride)

