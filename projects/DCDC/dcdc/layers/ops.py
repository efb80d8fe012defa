"""The DCDC kernels as PyTorch operators (``torch.library``, namespace ``dcdc``).

Registered here, each with a schema, a fake (meta) kernel for ``torch.compile`` /
``torch.export``, and autograd whose backward is itself an operator:

=====================================================  ============================================
``dcdc::lsa_aggregate(x, kernels, K, stride)``         Eq. 5 (see :mod:`.aggregation`)
``dcdc::lsa_aggregate_backward(go, x, kernels, K, stride, need_x, need_kernels)``  its gradients
``dcdc::lsa_generate_aggregate(x, hidden, weight, bias, K, stride)``  Eq. 5 with kernels = the
                                                       generator's last 1x1 conv of ``hidden``
``dcdc::lsa_generate_aggregate_backward(...)``         (grad_x, grad_hidden, grad_weight, grad_bias)
``dcdc::depthwise_conv(x, weight)``                    depth-wise KxK conv, stride 1, padding K // 2
``dcdc::depthwise_conv_backward(go, x, weight, need_x, need_weight)``  its gradients
``dcdc::lsa_gsi_inference(x, hidden, weight, bias, K, stride, gsi_z, gsi_weight)``  inference
                                                       only: ``lsa_generate_aggregate`` plus
                                                       GSI's ``gsi_weight[b] @ gsi_z[b]`` added
                                                       per output tile, one native pass
``dcdc::pointwise_inference(x, weight_t, bias, dw_weight, relu)``  inference only: a 1x1 conv
                                                       (``weight_t``: (C_in, C_out)), after an
                                                       optional depth-wise conv, + bias, ReLU
=====================================================  ============================================

The two inference ops have no autograd and run the native CPU kernels only (float32); the
dispatch (:mod:`.dispatch`) calls them in its ``inference`` rows, where nothing needs a gradient.

A gradient that is not asked for (``need_* = False``, or no bias) is returned as an empty
tensor of shape (0,), since an operator cannot return None there.

Each kernel asks :mod:`.dispatch` at call time which kernels run (``DCDC_BACKEND``, device,
dtype, shape): the native CPU kernels ``dcdc._C`` (called from this module only), the Triton
kernels (the family ``DCDC_TRITON_KERNELS`` names; float64 runs the composite, the kernels sum
in float32), or the exact PyTorch composite below.
Outputs are contiguous (NCHW) whatever the input layout.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

import logging

from . import dispatch

__all__ = ["check_aggregate_inputs", "check_generator_inputs", "generate_kernels",
           "lsa_aggregate_composite", "native_available"]

logger = logging.getLogger(__name__)

# The native CPU kernels: called from this module only, inside the ops' implementations.
try:  # built by setup.py when a C++ compiler is present; optional
    from .. import _C as _native
except ImportError as e:  # not built, or built against another torch
    _native = None
    logger.debug("dcdc._C not available (%s): CPU tensors use the PyTorch composite", e)


def native_available():
    """Whether the native CPU kernels ``dcdc._C`` were built and import."""
    return _native is not None


def _ceil_div(a, b):
    return (a + b - 1) // b


def check_aggregate_inputs(x, kernels, kernel_size, stride):
    """Validate the arguments of ``lsa_aggregate``; return ``(groups, H', W')``."""
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
    out_h, out_w = _ceil_div(height, stride), _ceil_div(width, stride)
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


def check_generator_inputs(x, hidden, weight, bias, kernel_size, stride):
    """Validate the arguments of ``lsa_generate_aggregate``; return the kernels' shape."""
    taps = kernel_size * kernel_size if isinstance(kernel_size, int) else 0
    if (hidden.dim() != 4 or weight.dim() != 2 or weight.shape[1] != hidden.shape[1]
            or not taps or weight.shape[0] % taps != 0):
        raise ValueError(
            f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} do not make LSA "
            f"kernels: need hidden (B, R, H', W') and weight (G*K*K, R) with K={kernel_size!r}."
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},) like weight's rows, got "
                         f"{tuple(bias.shape)}.")
    kernel_shape = (hidden.shape[0], weight.shape[0] // taps, taps, *hidden.shape[2:])
    check_aggregate_inputs(x, hidden.new_empty(()).expand(kernel_shape), kernel_size, stride)
    return kernel_shape


def _no_grad_tensor(like):
    return like.new_empty(0)


# ---------------------------------------------------------------- the exact PyTorch composite

def _acc_dtype(x):
    """float32 for fp16 / bf16 (their sums of K^2 or C/G products lose digits), else x.dtype."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _offset_views(x_pad, kernel_size, stride):
    """Yield ``(i*K + j, strided view of x_pad seen by kernel tap (i, j))``, each (B, C, H', W'),
    for ``x_pad`` an (H, W) map zero-padded by (K - 1) // 2 on each side. Tap row i reads rows
    i, i + s, ... before i + H: ceil(H / s) = H' of them whatever H is. The ends are written
    relative to the padded map's end (i - 2 * pad, or the end itself), so a graph traced or
    exported through these views keeps H and W symbolic."""
    pad = (kernel_size - 1) // 2
    for i in range(kernel_size):
        for j in range(kernel_size):
            rows = slice(i, (i - 2 * pad) or None, stride)
            cols = slice(j, (j - 2 * pad) or None, stride)
            yield i * kernel_size + j, x_pad[:, :, rows, cols]


def lsa_aggregate_composite(x, kernels, kernel_size, stride, *, functional=False):
    """Eq. 5 in PyTorch, exactly, and the only Python transcription of it: the ``torch``
    backend, what both ONNX exporters write (:mod:`dcdc.export.onnx_ops`) and the tests'
    reference. Shift-and-accumulate: K^2 multiply-adds of strided views of the padded input;
    never builds the B x C x K^2 x H' x W' tensor. Traced (``torch.jit.trace``,
    ``torch.export``) it records aten ops whose sizes follow the input's: H and W stay dynamic.

    ``functional``: each multiply-add makes a new tensor instead of adding in place (the same
    values; a decomposition, which ``run_decompositions`` traces, must not mutate)."""
    batch, channels = x.shape[:2]
    groups, out_h, out_w = kernels.shape[1], kernels.shape[3], kernels.shape[4]
    pad = (kernel_size - 1) // 2
    x_pad = F.pad(x, (pad, pad, pad, pad))
    out = x.new_zeros(batch, groups, channels // groups, out_h, out_w, dtype=_acc_dtype(x))
    accumulate = torch.addcmul if functional else torch.Tensor.addcmul_
    for tap, view in _offset_views(x_pad, kernel_size, stride):
        # out[b, g, c', h, w] += x[b, g, c', ...] * H[b, g, tap, h, w]
        out = accumulate(out, view.reshape(out.shape), kernels[:, :, tap, None])
    return out.view(batch, channels, out_h, out_w).to(x.dtype)


def _torch_backward(grad_out, x, kernels, kernel_size, stride, need_x, need_kernels):
    batch, channels, height, width = x.shape
    groups, out_h, out_w = kernels.shape[1], kernels.shape[3], kernels.shape[4]
    pad = (kernel_size - 1) // 2
    acc = _acc_dtype(x)
    grad_out = grad_out.reshape(batch, groups, channels // groups, out_h, out_w)
    grad_x = grad_kernels = None
    if need_x:
        grad_x_pad = x.new_zeros(batch, channels, height + 2 * pad, width + 2 * pad, dtype=acc)
        for tap, view in _offset_views(grad_x_pad, kernel_size, stride):
            view.view(grad_out.shape).addcmul_(grad_out, kernels[:, :, tap, None])
        grad_x = grad_x_pad[:, :, pad : pad + height, pad : pad + width].to(x.dtype).contiguous()
    if need_kernels:
        x_pad = F.pad(x, (pad, pad, pad, pad))
        grad_kernels = kernels.new_empty(kernels.shape)
        for tap, view in _offset_views(x_pad, kernel_size, stride):
            prod = view.reshape(grad_out.shape).to(acc) * grad_out
            grad_kernels[:, :, tap] = prod.sum(dim=2)
    return grad_x, grad_kernels


def generate_kernels(hidden, weight, bias, groups):
    """The generator's last 1x1 conv: (B, R, H', W') -> (B, G, K*K, H', W') kernels, by bmm
    (contiguous result; ``F.conv2d`` reorders NCHW maps on CPU)."""
    batch, reduced, out_h, out_w = hidden.shape
    flat = hidden.reshape(batch, reduced, out_h * out_w)
    w = weight.expand(batch, *weight.shape)
    out = torch.bmm(w, flat) if bias is None else torch.baddbmm(bias.view(1, -1, 1), w, flat)
    return out.view(batch, groups, weight.shape[0] // groups, out_h, out_w)


def _generator_grads(grad_kernels, hidden, weight, need_hidden, need_weight, need_bias):
    """Gradients of ``generate_kernels`` from the kernels' gradient."""
    batch, reduced, out_h, out_w = hidden.shape
    gk = grad_kernels.reshape(batch, weight.shape[0], out_h * out_w)
    grad_hidden = grad_weight = grad_bias = None
    if need_hidden:
        grad_hidden = torch.bmm(weight.t().expand(batch, -1, -1), gk).view(hidden.shape)
    if need_weight:
        flat_hidden = hidden.reshape(batch, reduced, out_h * out_w)
        grad_weight = torch.einsum("bon,brn->or", gk, flat_hidden)
    if need_bias:
        grad_bias = gk.sum(dim=(0, 2))
    return grad_hidden, grad_weight, grad_bias


# ---------------------------------------------------------------- dispatch

def _triton():
    from . import triton_kernels  # imports triton: only when that backend runs

    return triton_kernels


def _aggregate_forward(x, kernels, kernel_size, stride):
    which = dispatch.kernel_backend(x)
    if which == "native":
        return _native.lsa_forward(x, kernels, kernel_size, stride)
    if which == "triton":
        return _triton().lsa_forward(x, kernels, kernel_size, stride, dispatch.triton_family())
    return lsa_aggregate_composite(x, kernels, kernel_size, stride)


def _aggregate_backward(grad_out, x, kernels, kernel_size, stride, need_x, need_kernels):
    which = dispatch.kernel_backend(x)
    if which == "native":
        return _native.lsa_backward(grad_out, x, kernels, kernel_size, stride, need_x,
                                    need_kernels)
    if which == "triton":
        return _triton().lsa_backward(grad_out, x, kernels, kernel_size, stride,
                                      need_x, need_kernels, dispatch.triton_family())
    return _torch_backward(grad_out, x, kernels, kernel_size, stride, need_x, need_kernels)


# ---------------------------------------------------------------- dcdc::lsa_aggregate

@torch.library.custom_op("dcdc::lsa_aggregate", mutates_args=())
def lsa_aggregate_op(x: Tensor, kernels: Tensor, kernel_size: int, stride: int) -> Tensor:
    check_aggregate_inputs(x, kernels, kernel_size, stride)
    _check_same(x, kernels)
    return _aggregate_forward(x, kernels, kernel_size, stride)


def _check_same(*tensors):
    tensors = [t for t in tensors if t is not None]
    if len({t.dtype for t in tensors}) != 1 or len({t.device for t in tensors}) != 1:
        raise ValueError(
            "dcdc operators need all tensors on one device in one dtype, got "
            f"{[(str(t.dtype), str(t.device)) for t in tensors]}; cast them first (the Python "
            "functions in dcdc.layers promote dtypes for you)."
        )


@lsa_aggregate_op.register_fake
def _(x, kernels, kernel_size, stride):
    check_aggregate_inputs(x, kernels, kernel_size, stride)
    _check_same(x, kernels)
    return x.new_empty(x.shape[0], x.shape[1], kernels.shape[3], kernels.shape[4])


@torch.library.custom_op("dcdc::lsa_aggregate_backward", mutates_args=())
def lsa_aggregate_backward_op(grad_out: Tensor, x: Tensor, kernels: Tensor, kernel_size: int,
                              stride: int, need_x: bool, need_kernels: bool
                              ) -> tuple[Tensor, Tensor]:
    grad_x, grad_kernels = _aggregate_backward(grad_out.to(x.dtype), x, kernels, kernel_size,
                                               stride, need_x, need_kernels)
    return (grad_x if need_x else _no_grad_tensor(x),
            grad_kernels if need_kernels else _no_grad_tensor(kernels))


@lsa_aggregate_backward_op.register_fake
def _(grad_out, x, kernels, kernel_size, stride, need_x, need_kernels):
    return (x.new_empty(x.shape) if need_x else _no_grad_tensor(x),
            kernels.new_empty(kernels.shape) if need_kernels else _no_grad_tensor(kernels))


def _aggregate_setup(ctx, inputs, output):
    x, kernels, kernel_size, stride = inputs
    ctx.save_for_backward(x, kernels)
    ctx.geometry = (kernel_size, stride)


def _aggregate_grad(ctx, grad_out):
    x, kernels = ctx.saved_tensors
    need_x, need_kernels = ctx.needs_input_grad[:2]
    grad_x, grad_kernels = torch.ops.dcdc.lsa_aggregate_backward(
        grad_out, x, kernels, *ctx.geometry, need_x, need_kernels)
    return (grad_x if need_x else None, grad_kernels if need_kernels else None, None, None)


lsa_aggregate_op.register_autograd(_aggregate_grad, setup_context=_aggregate_setup)


# ---------------------------------------------------------------- dcdc::lsa_generate_aggregate

@torch.library.custom_op("dcdc::lsa_generate_aggregate", mutates_args=())
def lsa_generate_aggregate_op(x: Tensor, hidden: Tensor, weight: Tensor, bias: Tensor | None,
                              kernel_size: int, stride: int) -> Tensor:
    kernel_shape = check_generator_inputs(x, hidden, weight, bias, kernel_size, stride)
    _check_same(x, hidden, weight, bias)
    if dispatch.fused_generation(x, hidden, weight, bias):
        # kernels generated row by row in cache: the B x G*K^2 x H' x W' tensor is never written
        return _native.lsa_fused_forward(x, hidden, weight, bias, kernel_size, stride)
    kernels = generate_kernels(hidden, weight, bias, kernel_shape[1])
    return _aggregate_forward(x, kernels, kernel_size, stride)


@lsa_generate_aggregate_op.register_fake
def _(x, hidden, weight, bias, kernel_size, stride):
    check_generator_inputs(x, hidden, weight, bias, kernel_size, stride)
    _check_same(x, hidden, weight, bias)
    return x.new_empty(x.shape[0], x.shape[1], hidden.shape[2], hidden.shape[3])


@torch.library.custom_op("dcdc::lsa_generate_aggregate_backward", mutates_args=())
def lsa_generate_aggregate_backward_op(
        grad_out: Tensor, x: Tensor, hidden: Tensor, weight: Tensor, bias: Tensor | None,
        kernel_size: int, stride: int, need_x: bool, need_hidden: bool, need_weight: bool,
        need_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    groups = weight.shape[0] // kernel_size**2
    grad_out = grad_out.to(x.dtype).contiguous()
    need_generator = need_hidden or need_weight or need_bias
    grad_x = grad_hidden = grad_weight = grad_bias = None
    if dispatch.fused_generation(x, hidden, weight, bias):
        # backward regenerates the kernels for dL/dx only; the generator's gradients come from
        # kernel-gradient rows made in cache
        if need_x:
            kernels = generate_kernels(hidden, weight, bias, groups)
            grad_x, _ = _native.lsa_backward(grad_out, x, kernels, kernel_size, stride, True,
                                             False)
        if need_generator:
            grad_hidden, grad_weight, grad_bias = _native.lsa_fused_backward_generator(
                grad_out, x, hidden, weight, kernel_size, stride)
            # the native kernel returns both as views of one buffer; op outputs must not alias
            grad_bias = grad_bias.clone()
    else:
        kernels = generate_kernels(hidden, weight, bias, groups)
        grad_x, grad_kernels = _aggregate_backward(grad_out, x, kernels, kernel_size, stride,
                                                   need_x, need_generator)
        if need_generator:
            grad_hidden, grad_weight, grad_bias = _generator_grads(
                grad_kernels, hidden, weight, need_hidden, need_weight, need_bias)
    return (grad_x if need_x else _no_grad_tensor(x),
            grad_hidden if need_hidden else _no_grad_tensor(hidden),
            grad_weight if need_weight else _no_grad_tensor(weight),
            grad_bias.to(weight.dtype) if need_bias else _no_grad_tensor(weight))


@lsa_generate_aggregate_backward_op.register_fake
def _(grad_out, x, hidden, weight, bias, kernel_size, stride, need_x, need_hidden, need_weight,
      need_bias):
    return (x.new_empty(x.shape) if need_x else _no_grad_tensor(x),
            hidden.new_empty(hidden.shape) if need_hidden else _no_grad_tensor(hidden),
            weight.new_empty(weight.shape) if need_weight else _no_grad_tensor(weight),
            weight.new_empty(weight.shape[0]) if need_bias else _no_grad_tensor(weight))


def _generate_setup(ctx, inputs, output):
    x, hidden, weight, bias, kernel_size, stride = inputs
    ctx.save_for_backward(x, hidden, weight, bias)
    ctx.geometry = (kernel_size, stride)


def _generate_grad(ctx, grad_out):
    x, hidden, weight, bias = ctx.saved_tensors
    need = ctx.needs_input_grad[:4]
    need_bias = bool(need[3]) and bias is not None
    grads = torch.ops.dcdc.lsa_generate_aggregate_backward(
        grad_out, x, hidden, weight, bias, *ctx.geometry, need[0], need[1], need[2], need_bias)
    return (*(g if n else None for g, n in zip(grads, (*need[:3], need_bias))), None, None)


lsa_generate_aggregate_op.register_autograd(_generate_grad, setup_context=_generate_setup)


# ---------------------------------------------------------------- dcdc::depthwise_conv

def _check_depthwise(x, weight):
    k = weight.shape[-1] if weight.dim() == 4 else 0
    if (x.dim() != 4 or weight.dim() != 4 or weight.shape[0] != x.shape[1]
            or weight.shape[1] != 1 or weight.shape[2] != k or k % 2 == 0):
        raise ValueError(
            f"depthwise_conv needs x (B, C, H, W) and weight (C, 1, K, K) with K odd, got x "
            f"{tuple(x.shape)} and weight {tuple(weight.shape)}."
        )
    _check_same(x, weight)


@torch.library.custom_op("dcdc::depthwise_conv", mutates_args=())
def depthwise_conv_op(x: Tensor, weight: Tensor) -> Tensor:
    _check_depthwise(x, weight)
    if dispatch.native_depthwise(x, weight):
        return _native.depthwise_forward(x, weight)
    k = weight.shape[-1]
    return F.conv2d(x, weight, padding=k // 2, groups=x.shape[1]).contiguous()


@depthwise_conv_op.register_fake
def _(x, weight):
    _check_depthwise(x, weight)
    return x.new_empty(x.shape)


@torch.library.custom_op("dcdc::depthwise_conv_backward", mutates_args=())
def depthwise_conv_backward_op(grad_out: Tensor, x: Tensor, weight: Tensor, need_x: bool,
                               need_weight: bool) -> tuple[Tensor, Tensor]:
    grad_out = grad_out.to(x.dtype)
    if dispatch.native_depthwise(x, weight):
        grad_x, grad_weight = _native.depthwise_backward(grad_out, x, weight, need_x,
                                                         need_weight)
    else:
        k = weight.shape[-1]
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_out, x, weight, None, (1, 1), (k // 2, k // 2), (1, 1), False, (0, 0),
            x.shape[1], (need_x, need_weight, False))
    return (grad_x.contiguous() if need_x else _no_grad_tensor(x),
            grad_weight.contiguous() if need_weight else _no_grad_tensor(weight))


@depthwise_conv_backward_op.register_fake
def _(grad_out, x, weight, need_x, need_weight):
    return (x.new_empty(x.shape) if need_x else _no_grad_tensor(x),
            weight.new_empty(weight.shape) if need_weight else _no_grad_tensor(weight))


def _depthwise_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _depthwise_grad(ctx, grad_out):
    x, weight = ctx.saved_tensors
    need_x, need_weight = ctx.needs_input_grad[:2]
    grad_x, grad_weight = torch.ops.dcdc.depthwise_conv_backward(grad_out, x, weight, need_x,
                                                                 need_weight)
    return grad_x if need_x else None, grad_weight if need_weight else None


depthwise_conv_op.register_autograd(_depthwise_grad, setup_context=_depthwise_setup)


# ---------------------------------------------------------------- the inference-only ops

def _require_native(name, *tensors):
    if _native is None:
        raise RuntimeError(f"dcdc::{name} runs the native CPU kernels, and dcdc._C was not built "
                           "(reinstall with a C++ compiler); the dispatch does not choose it "
                           "then.")
    if any(t is not None and (t.device.type != "cpu" or t.dtype != torch.float32)
           for t in tensors):
        raise ValueError(f"dcdc::{name} takes CPU float32 tensors, got "
                         f"{[(str(t.dtype), str(t.device)) for t in tensors if t is not None]}.")


def _check_lsa_gsi(x, hidden, weight, bias, kernel_size, stride, gsi_z, gsi_weight):
    check_generator_inputs(x, hidden, weight, bias, kernel_size, stride)
    _check_same(x, hidden, weight, bias, gsi_z, gsi_weight)
    out_hw = tuple(hidden.shape[2:])
    if (gsi_z.dim() != 4 or gsi_weight.dim() != 3 or tuple(gsi_z.shape[2:]) != out_hw
            or gsi_weight.shape != (x.shape[0], x.shape[1], gsi_z.shape[1])
            or gsi_z.shape[0] != x.shape[0]):
        raise ValueError(f"gsi_z {tuple(gsi_z.shape)} and gsi_weight {tuple(gsi_weight.shape)} "
                         f"do not fit x {tuple(x.shape)}: need (B, m, H', W') and (B, C, m).")
    if out_hw[1] < dispatch.NATIVE_MIN_WIDTH:
        raise ValueError(f"lsa_gsi_inference needs output maps at least "
                         f"{dispatch.NATIVE_MIN_WIDTH} wide (the native kernel's tile), got "
                         f"{out_hw[1]}; dcdc::lsa_generate_aggregate takes any width.")


@torch.library.custom_op("dcdc::lsa_gsi_inference", mutates_args=())
def lsa_gsi_inference_op(x: Tensor, hidden: Tensor, weight: Tensor, bias: Tensor | None,
                         kernel_size: int, stride: int, gsi_z: Tensor, gsi_weight: Tensor
                         ) -> Tensor:
    _check_lsa_gsi(x, hidden, weight, bias, kernel_size, stride, gsi_z, gsi_weight)
    _require_native("lsa_gsi_inference", x, hidden, weight, bias, gsi_z, gsi_weight)
    return _native.lsa_fused_forward(x.contiguous(), hidden.contiguous(), weight.contiguous(),
                                     bias, kernel_size, stride, gsi_z=gsi_z.contiguous(),
                                     gsi_weight=gsi_weight.contiguous())


@lsa_gsi_inference_op.register_fake
def _(x, hidden, weight, bias, kernel_size, stride, gsi_z, gsi_weight):
    _check_lsa_gsi(x, hidden, weight, bias, kernel_size, stride, gsi_z, gsi_weight)
    return x.new_empty(x.shape[0], x.shape[1], hidden.shape[2], hidden.shape[3])


def _check_pointwise(x, weight_t, bias, dw_weight):
    _check_same(x, weight_t, bias, dw_weight)
    if (x.dim() != 4 or weight_t.dim() != 2 or weight_t.shape[0] != x.shape[1]
            or (bias is not None and tuple(bias.shape) != (weight_t.shape[1],))
            or (dw_weight is not None and (dw_weight.dim() != 4
                                           or tuple(dw_weight.shape[:2]) != (x.shape[1], 1)))):
        raise ValueError(
            f"pointwise_inference needs x (B, C, H, W), weight_t (C, M), bias (M,) or None and "
            f"dw_weight (C, 1, K, K) or None; got {tuple(x.shape)}, {tuple(weight_t.shape)}, "
            f"{None if bias is None else tuple(bias.shape)}, "
            f"{None if dw_weight is None else tuple(dw_weight.shape)}.")


@torch.library.custom_op("dcdc::pointwise_inference", mutates_args=())
def pointwise_inference_op(x: Tensor, weight_t: Tensor, bias: Tensor | None,
                           dw_weight: Tensor | None, relu: bool) -> Tensor:
    _check_pointwise(x, weight_t, bias, dw_weight)
    _require_native("pointwise_inference", x, weight_t, bias, dw_weight)
    return _native.pointwise_forward(x.contiguous(), weight_t.contiguous(),
                                     None if bias is None else bias.contiguous(),
                                     None if dw_weight is None else dw_weight.contiguous(), relu)


@pointwise_inference_op.register_fake
def _(x, weight_t, bias, dw_weight, relu):
    _check_pointwise(x, weight_t, bias, dw_weight)
    return x.new_empty(x.shape[0], weight_t.shape[1], x.shape[2], x.shape[3])
