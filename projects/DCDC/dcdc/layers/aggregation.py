"""The LSA aggregation of Eq. 5 (involution): a per-pixel, per-group K x K weighted sum.

``Y[b, c, h, w] = sum_{i,j} Xpad[b, c, h*s + i, w*s + j] * H[b, c // (C // G), i*K + j, h, w]``

The usual involution code builds this with ``unfold``, which materializes a
``B x C x K^2 x H' x W'`` tensor (49x the input for K=7). :func:`lsa_aggregate` never does, in
forward or backward (a custom autograd function with two implementations of the same math):

* CPU tensors, when the native extension ``dcdc._C`` was built at install time
  (``csrc/lsa_aggregate.cpp``, C++ / OpenMP): register-tiled loops whose extra memory is a few
  rows per thread; ~20x faster than ``unfold`` on CPU (see ``benchmarks/``).
* everything else (CUDA, or no compiler at install time): pure PyTorch shift-and-accumulate,
  K^2 in-place multiply-adds of strided views of the padded input; extra memory is one padded
  copy of the input. Device-agnostic.

Both accept float64/32/16 and bfloat16; the native kernel accumulates fp16/bf16 in float32.

:func:`lsa_generate_aggregate` also takes the generator's last 1x1 conv into the aggregation:
on CPU float32 the native kernel computes each row's kernels in cache, so the
B x G*K^2 x H' x W' kernel tensor (3x the input for K=7, G=C/16) is never written to memory
nor kept from forward to backward; backward regenerates it for the input gradient only.
"""
import logging
import os

import torch
import torch.nn.functional as F

__all__ = [
    "lsa_aggregate", "lsa_generate_aggregate", "lsa_aggregate_unfold", "check_aggregate_inputs",
    "native_available",
]

logger = logging.getLogger(__name__)

try:  # built by setup.py when a C++ compiler is present; optional
    from .. import _C as _native
except ImportError as e:  # not built, or built against another torch
    _native = None
    logger.debug("dcdc._C not available (%s): using the PyTorch LSA aggregation", e)

# DCDC_DISABLE_NATIVE=1 forces the pure-PyTorch path (debugging, A/B timing).
_native_enabled = os.environ.get("DCDC_DISABLE_NATIVE", "0") in ("", "0")


def native_available():
    """Whether CPU tensors will use the compiled kernel ``dcdc._C``."""
    return _native is not None and _native_enabled


# The native float32 kernels work in tiles of 16 output columns (TW in csrc/simd.h); the fused
# entry points need maps at least that wide.
_NATIVE_MIN_WIDTH = 16


def _use_native(x):
    return x.device.type == "cpu" and native_available()


def check_aggregate_inputs(x, kernels, kernel_size, stride):
    """Validate the arguments of :func:`lsa_aggregate`; return ``(groups, H', W')``."""
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size must be a positive odd integer so the window is centred, got "
            f"{kernel_size!r}; use e.g. 3 or 7."
        )
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}.")
    if x.dim() != 4:
        raise ValueError(
            f"x must be a 4-D (B, C, H, W) tensor, got shape {tuple(x.shape)}; "
            "add a batch dimension with x[None] for a single image."
        )
    batch, channels, height, width = x.shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    if kernels.dim() != 5:
        raise ValueError(
            f"kernels must be a 5-D (B, G, K*K, H', W') tensor, got shape {tuple(kernels.shape)}."
        )
    groups = kernels.shape[1]
    expected = (batch, groups, kernel_size * kernel_size, out_h, out_w)
    if groups == 0 or channels % groups != 0 or tuple(kernels.shape) != expected:
        raise ValueError(
            f"kernels has shape {tuple(kernels.shape)} but x of shape {tuple(x.shape)} with "
            f"kernel_size={kernel_size}, stride={stride} needs (B, G, K*K, H', W') = "
            f"({batch}, G, {kernel_size * kernel_size}, {out_h}, {out_w}) with G dividing "
            f"C={channels} (H' = ceil(H / stride))."
        )
    return groups, out_h, out_w


def _acc_dtype(x):
    """float32 for fp16 / bf16 (their sums of K^2 or C/G products lose digits), else x.dtype."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _offset_views(x_pad, kernel_size, stride, out_h, out_w):
    """Yield ``(i*K + j, strided view of x_pad seen by kernel tap (i, j))``, each (B, C, H', W')."""
    h_span, w_span = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    for i in range(kernel_size):
        for j in range(kernel_size):
            yield i * kernel_size + j, x_pad[:, :, i : i + h_span : stride, j : j + w_span : stride]


class _LSAAggregate(torch.autograd.Function):
    """Eq. 5 with exact, hand-written gradients; never builds the B x C x K^2 x H' x W' tensor."""

    @staticmethod
    def forward(ctx, x, kernels, kernel_size, stride):
        ctx.save_for_backward(x, kernels)
        ctx.geometry = (kernel_size, stride)
        if _use_native(x):
            return _native.lsa_forward(x, kernels, kernel_size, stride)
        batch, channels = x.shape[:2]
        groups, out_h, out_w = kernels.shape[1], kernels.shape[3], kernels.shape[4]
        pad = (kernel_size - 1) // 2
        x_pad = F.pad(x, (pad, pad, pad, pad))
        # fp16 / bf16 accumulate the K^2 taps in float32, like the native kernel
        out = x.new_zeros(batch, groups, channels // groups, out_h, out_w, dtype=_acc_dtype(x))
        for tap, view in _offset_views(x_pad, kernel_size, stride, out_h, out_w):
            # out[b, g, c', h, w] += x[b, g, c', ...] * H[b, g, tap, h, w]
            out.addcmul_(view.reshape(out.shape), kernels[:, :, tap, None])
        return out.view(batch, channels, out_h, out_w).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, kernels = ctx.saved_tensors
        kernel_size, stride = ctx.geometry
        if _use_native(x):
            grad_x, grad_kernels = _native.lsa_backward(
                grad_out, x, kernels, kernel_size, stride, *ctx.needs_input_grad[:2]
            )
            return grad_x, grad_kernels, None, None
        batch, channels, height, width = x.shape
        groups, out_h, out_w = kernels.shape[1], kernels.shape[3], kernels.shape[4]
        pad = (kernel_size - 1) // 2
        grad_out = grad_out.reshape(batch, groups, channels // groups, out_h, out_w)
        grad_x = grad_kernels = None
        if ctx.needs_input_grad[0]:
            grad_x_pad = x.new_zeros(batch, channels, height + 2 * pad, width + 2 * pad,
                                     dtype=_acc_dtype(x))
            for tap, view in _offset_views(grad_x_pad, kernel_size, stride, out_h, out_w):
                view.view(grad_out.shape).addcmul_(grad_out, kernels[:, :, tap, None])
            grad_x = grad_x_pad[:, :, pad : pad + height, pad : pad + width].to(x.dtype)
        if ctx.needs_input_grad[1]:
            x_pad = F.pad(x, (pad, pad, pad, pad))
            grad_kernels = torch.empty_like(kernels)
            acc = _acc_dtype(x)
            for tap, view in _offset_views(x_pad, kernel_size, stride, out_h, out_w):
                prod = view.reshape(grad_out.shape).to(acc) * grad_out
                grad_kernels[:, :, tap] = prod.sum(dim=2)
        return grad_x, grad_kernels, None, None


def lsa_aggregate(x, kernels, kernel_size, stride=1):
    """Aggregate ``x`` with per-pixel kernels (paper Eq. 5).

    Args:
        x: (B, C, H, W) input.
        kernels: (B, G, K*K, H', W') kernels from the LSA kernel generator, H' = ceil(H / stride),
            taps ordered (kh, kw); channel c uses group ``c // (C // G)``.
        kernel_size: K, odd. Zero padding is (K - 1) // 2.
        stride: sampling stride of the output grid.

    Returns:
        (B, C, H', W') tensor in the promoted dtype of ``x`` and ``kernels``.
    """
    check_aggregate_inputs(x, kernels, kernel_size, stride)
    dtype = torch.promote_types(x.dtype, kernels.dtype)
    x, kernels = x.to(dtype), kernels.to(dtype)
    return _LSAAggregate.apply(x, kernels, kernel_size, stride)


def _generate_kernels(hidden, weight, bias, groups):
    """The generator's last 1x1 conv: (B, R, H', W') -> (B, G, K*K, H', W') kernels."""
    batch, reduced, out_h, out_w = hidden.shape
    flat = hidden.reshape(batch, reduced, out_h * out_w)
    w = weight.expand(batch, *weight.shape)
    out = torch.bmm(w, flat) if bias is None else torch.baddbmm(bias.view(1, -1, 1), w, flat)
    return out.view(batch, groups, weight.shape[0] // groups, out_h, out_w)


class _LSAGenerateAggregate(torch.autograd.Function):
    """Eq. 5 with kernels = weight @ hidden + bias generated row by row inside the native kernel.

    Neither pass keeps the kernels or their gradient as a tensor: forward generates each row in
    cache; backward regenerates the kernels only for dL/dx, and computes the generator's
    gradients (dL/dhidden, dL/dweight, dL/dbias) from kernel-gradient rows made in cache.
    """

    @staticmethod
    def forward(ctx, x, hidden, weight, bias, kernel_size, stride):
        ctx.save_for_backward(x, hidden, weight, bias)
        ctx.geometry = (kernel_size, stride)
        return _native.lsa_fused_forward(x, hidden, weight, bias, kernel_size, stride)

    @staticmethod
    def backward(ctx, grad_out):
        x, hidden, weight, bias = ctx.saved_tensors
        kernel_size, stride = ctx.geometry
        need_x, need_hidden, need_weight, need_bias = ctx.needs_input_grad[:4]
        grad_out = grad_out.contiguous()
        grad_x = grad_hidden = grad_weight = grad_bias = None
        if need_x:
            kernels = _generate_kernels(hidden, weight, bias, weight.shape[0] // kernel_size**2)
            grad_x, _ = _native.lsa_backward(grad_out, x, kernels, kernel_size, stride, True, False)
        if need_hidden or need_weight or need_bias:
            grad_hidden, grad_weight, grad_bias = _native.lsa_fused_backward_generator(
                grad_out, x, hidden, weight, kernel_size, stride)
        return (grad_x, grad_hidden if need_hidden else None,
                grad_weight if need_weight else None, grad_bias if need_bias else None, None, None)


def lsa_generate_aggregate(x, hidden, weight, bias, kernel_size, stride=1):
    """``lsa_aggregate(x, kernels)`` with ``kernels`` the output of a 1x1 conv of ``hidden``.

    Args:
        x: (B, C, H, W) input.
        hidden: (B, R, H', W') features of the kernel generator before its last 1x1 conv.
        weight: (G*K*K, R) weight of that conv (a 1x1 conv weight viewed as a matrix), rows
            ordered (group, kh, kw); ``bias``: (G*K*K,) or None.

    Same result as ``lsa_aggregate(x, conv1x1(hidden).view(B, G, K*K, H', W'), K, stride)``.
    CPU float32 tensors with the native kernel run fused (see the module docstring);
    everything else, and JIT tracing (so FLOP counters see the conv), runs exactly that.
    """
    taps = kernel_size * kernel_size if isinstance(kernel_size, int) else 0
    if (hidden.dim() != 4 or weight.dim() != 2 or weight.shape[1] != hidden.shape[1]
            or not taps or weight.shape[0] % taps != 0):
        raise ValueError(
            f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} do not make LSA "
            f"kernels: need hidden (B, R, H', W') and weight (G*K*K, R) with K={kernel_size!r}."
        )
    kernel_shape = (hidden.shape[0], weight.shape[0] // taps, taps, *hidden.shape[2:])
    check_aggregate_inputs(x, hidden.new_empty(()).expand(kernel_shape), kernel_size, stride)
    if (_use_native(x) and x.dtype == hidden.dtype == weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32) and not torch.jit.is_tracing()
            and kernel_shape[-1] >= _NATIVE_MIN_WIDTH and x.shape[0] > 0):
        return _LSAGenerateAggregate.apply(x, hidden, weight, bias, kernel_size, stride)
    if torch.jit.is_tracing():
        kernels = F.conv2d(hidden, weight[:, :, None, None], bias).view(kernel_shape)
    else:
        kernels = _generate_kernels(hidden, weight, bias, kernel_shape[1])
    return lsa_aggregate(x, kernels, kernel_size, stride)


def lsa_aggregate_unfold(x, kernels, kernel_size, stride=1):
    """The aggregation as the official involution code writes it, with ``unfold``.

    Kept as the baseline for benchmarks; it materializes (B, C, K^2, H', W').
    """
    groups, out_h, out_w = check_aggregate_inputs(x, kernels, kernel_size, stride)
    batch, channels = x.shape[:2]
    pad = (kernel_size - 1) // 2
    patches = F.unfold(x, kernel_size, padding=pad, stride=stride).view(
        batch, groups, channels // groups, kernel_size * kernel_size, out_h, out_w
    )
    return (kernels.unsqueeze(2) * patches).sum(dim=3).view(batch, channels, out_h, out_w)
