"""The Dual Complementary Dynamic Convolution operator (paper Sec. III-B, Eq. 4-11).

``DCDCConv2d(X) = LSA(X) + GSI(X)`` keeps the channel count C:

* :class:`LSA`, local spatial-adaptive branch (Eq. 5-7): an involution whose kernel generator
  phi alternates depth-wise and point-wise convs, so each K x K kernel is predicted from a
  neighbourhood instead of a single pixel.
* :class:`GSI`, global shift-invariant branch (Eq. 8-10): one dynamic m x m x k x k kernel per
  sample, predicted from the globally pooled features, applied like an ordinary convolution.

The Table III ablations are selected with ``DCDCConv2d(global_branch=...)`` and
``dw_kernel_size=0`` (RedNet's involution); :func:`build_operator` names them.
"""
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, FrozenBatchNorm2d, get_norm

from . import dispatch
from .aggregation import lsa_generate_aggregate
from .depthwise import depthwise_conv
from .variants import GLOBAL_BRANCHES, OPERATORS, variant

__all__ = ["LSA", "GSI", "DCDCConv2d", "build_operator", "folded_conv", "norm_relu_",
           "OPERATOR_DEFAULTS", "gsi_channels", "group_norm"]



class _CeilAvgPool2(nn.Module):
    """``AvgPool2d(2, 2, ceil_mode=True)`` computed as a copy of an odd last row / column appended
    by ``cat``, followed by a floor-mode pool: the same values (the extended window averages
    copies of the edge). torch 2.14's Inductor differentiates this correctly, but neither the
    ceil-mode pool's backward on odd sizes nor a replicate pad's.

    In eager inference (the dispatch's ``inference`` and ``autocast`` modes) the pool is the sum
    of the four strided quarter-maps: on CPU, 4x faster than ``avg_pool2d`` on NCHW maps (which
    reads them one window at a time). With autograd it is ``avg_pool2d``, whose backward is one
    pass (the slices' backward would be four), and so in traced and compiled graphs (a trace
    would fix the slices' sizes)."""

    def forward(self, x):
        if x.shape[-2] % 2:
            x = torch.cat([x, x[..., -1:, :]], dim=-2)
        if x.shape[-1] % 2:
            x = torch.cat([x, x[..., -1:]], dim=-1)
        if dispatch.mode(x) in ("count", "graph", "autograd"):
            return F.avg_pool2d(x, 2, 2)
        rows = x[..., 0::2, :] + x[..., 1::2, :]
        return (rows[..., 0::2] + rows[..., 1::2]).mul_(0.25)


def _downsample(stride):
    """AvgPool matching the aggregation's output grid (ceil(H / stride)) on odd sizes too."""
    if stride == 1:
        return nn.Identity()
    if stride == 2:
        return _CeilAvgPool2()
    return nn.AvgPool2d(stride, stride, ceil_mode=True)


def _folds(norm):
    """Whether ``norm`` is None or a BatchNorm that uses its running statistics (eval mode, or
    detectron2's FrozenBatchNorm2d): a per-channel affine map a conv can absorb."""
    return norm is None or isinstance(norm, FrozenBatchNorm2d) or (
        isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_var is not None
        and norm.affine)


def _frozen_affine(norm):
    """``(scale, shift)`` with ``norm(y) == scale * y + shift`` per channel, for a norm that
    :func:`_folds`; else None."""
    if norm is None or not _folds(norm):
        return None
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    return scale, norm.bias - norm.running_mean * scale


def _fold_norm(conv):
    """``(weight, bias, norm)`` of a detectron2 ``Conv2d``: a BatchNorm on running statistics
    folded into weight and bias (``norm`` is then None), any other norm returned to apply."""
    weight, bias, norm = conv.weight, conv.bias, conv.norm
    affine = _frozen_affine(norm) if norm is not None else None
    if affine is not None:
        scale, shift = affine
        weight = weight * scale.view(-1, *[1] * (weight.dim() - 1))
        bias = shift if bias is None else bias * scale + shift
        norm = None
    return weight, bias, norm


def _plain_1x1(conv):
    """Whether ``conv`` is a 1x1, stride-1, unpadded, ungrouped conv (what :func:`_conv1x1`
    computes)."""
    return (conv.weight.shape[-2:] == (1, 1) and conv.groups == 1
            and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (0, 0))


def _conv1x1(conv, x, addend=None, depthwise=None):
    """``conv(x)`` for a 1x1, stride-1, ungrouped detectron2 ``Conv2d`` (with its norm /
    activation), or ``addend + conv(x)`` when ``addend`` is given (a conv without bias, norm or
    activation; ``addend`` is then overwritten with the sum in the ``inference`` mode). With
    ``depthwise`` (a depth-wise ``Conv2d``), ``conv(depthwise(x))``.

    The dispatch picks the form (:func:`.dispatch.native_pointwise`,
    :func:`.dispatch.conv1x1_form`): ``dcdc::pointwise_inference`` (depth-wise conv, 1x1 conv,
    folded norm and ReLU in one native pass), one GEMM on the (B, C, H*W) view of an NCHW tensor
    (:func:`_gemm1x1`, with the bias or the addend as the GEMM's additive input and a BatchNorm
    on running statistics folded in: the same sum without the NCHW <-> blocked-layout reorders
    oneDNN makes around each ``F.conv2d`` of the generators' narrow 1x1 convs, and without a
    separate pass for the sum or the norm), or the module itself.
    """
    if (not _plain_1x1(conv)
            or (addend is not None
                and (conv.bias is not None or conv.norm is not None or conv.activation is not None))):
        raise ValueError(f"_conv1x1 got a conv it does not compute: {conv}")
    if addend is None and dispatch.native_pointwise(
            conv, x, depthwise,
            folds=_folds(conv.norm) and isinstance(conv.activation, (type(None), nn.ReLU))):
        weight, bias, _ = _fold_norm(conv)
        return torch.ops.dcdc.pointwise_inference(
            x, weight.flatten(1).t().contiguous(), bias,
            None if depthwise is None else depthwise.weight, conv.activation is not None)
    if depthwise is not None:
        x = depthwise_conv(depthwise, x)
    if dispatch.conv1x1_form(conv, x) == "module":
        y = conv(x)
        return y if addend is None else addend + y
    weight, bias, norm = _fold_norm(conv)
    y = _gemm1x1(weight.flatten(1), x, bias, addend)
    if norm is not None:
        y = norm(y)
    if conv.activation is not None:
        y = conv.activation(y)
    return y


def folded_conv(conv, x):
    """``conv(x)`` for a detectron2 ``Conv2d`` with its norm and activation (the convs of the
    DCDC-ResNet blocks), computed with fewer passes in eager CPU inference.

    There (the dispatch's ``inference`` mode: nothing needs a gradient, no trace, no compile,
    no autocast) a 1x1, stride-1,
    ungrouped conv of at most 512 input and output channels runs :func:`_conv1x1`: norm folded
    in, one output tensor, none of oneDNN's NCHW <-> blocked reorders. oneDNN's own conv is as
    fast on the wider 1x1 convs of res4 / res5 (``benchmarks/bench_layers.py``). Any other conv
    whose norm uses running statistics runs as one ``F.conv2d`` with the norm folded into its
    weight and bias: no separate norm pass and one fresh tensor fewer. Elsewhere this is
    ``conv(x)``.
    """
    if conv.padding_mode != "zeros" or not dispatch.fast_inference(x, conv):
        return conv(x)
    if _plain_1x1(conv) and max(conv.weight.shape[:2]) <= 512:
        return _conv1x1(conv, x)
    weight, bias, norm = _fold_norm(conv)
    if norm is not None or conv.norm is None:
        return conv(x)
    y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return y if conv.activation is None else conv.activation(y)


def norm_relu_(norm, y):
    """``relu(norm(y))`` for the fresh output ``y`` of a block's spatial operator. In eager CPU
    inference with a BatchNorm on running statistics it is computed in place in ``y`` (as
    ``y * scale + shift``, equal up to rounding), without another tensor of ``y``'s size."""
    if not dispatch.fast_inference(y, norm):
        return F.relu_(norm(y))
    affine = _frozen_affine(norm)
    if affine is None:
        return F.relu_(norm(y))
    scale, shift = (t.to(y.dtype).view(-1, 1, 1) for t in affine)
    return torch.addcmul(shift, y, scale, out=y).relu_()


def _gemm1x1(weight, x, bias=None, addend=None):
    """``weight`` (M, C), or one per sample (B, M, C), applied as a 1x1 conv to the contiguous
    NCHW ``x``, plus ``bias`` or ``addend``: one (batched) GEMM on the (B, C, H*W) view."""
    batch, channels, height, width = x.shape
    weight = weight.to(x.dtype)
    if weight.dim() == 2:
        weight = weight.expand(batch, -1, -1)
    flat = x.view(batch, channels, height * width)
    if addend is not None:
        add = addend.reshape(batch, -1, height * width)
    elif bias is not None:
        add = bias.to(x.dtype).view(1, -1, 1)
    else:
        add = None
    # bmm, not matmul: matmul may return a transposed, non-contiguous result. In eager inference
    # the addend is summed into in place (it is the LSA output, not used afterwards): one pass
    # over a C-channel map and one allocation fewer. With autograd (the LSA output may be a
    # custom op's view, which autograd forbids modifying), in traces and compiled graphs the
    # sum is functional.
    if add is None:
        y = torch.bmm(weight, flat)
    elif addend is not None and dispatch.fast_inference(x, add, weight, flat):
        y = add.baddbmm_(weight, flat)  # (not under autocast: baddbmm_ would not cast its inputs)
    else:
        y = torch.baddbmm(add, weight, flat)
    return y.view(batch, -1, height, width)


def group_norm(channels):
    """detectron2's "GN" (``GroupNorm(32, C)``) for any C: gcd(32, C) groups where 32 does not
    divide C. The kernel generators are narrow (C/4 = 8 channels in the stem), where
    ``GroupNorm(32, C)`` cannot be built."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _generator_norm(norm, channels):
    """detectron2's ``get_norm``, with :func:`group_norm` for "GN"."""
    return group_norm(channels) if norm == "GN" else get_norm(norm, channels)


def _check_input(module, x):
    if x.dim() != 4 or x.shape[1] != module.channels:
        raise ValueError(
            f"{type(module).__name__} expects x of shape (B, {module.channels}, H, W), got "
            f"{tuple(x.shape)}; check the channels the operator was built with."
        )


def gsi_channels(channels, gsi_scale):
    """m = round(lambda * sqrt(C)), the GSI branch width (Sec. III-B2)."""
    return max(1, int(round(gsi_scale * math.sqrt(channels))))


class LSA(nn.Module):
    """Local spatial-adaptive dynamic convolution (Eq. 5-7, Fig. 3b).

    Kernel generator phi (Eq. 7), on ``AvgPool(stride)(X)`` when stride > 1:
    ``DW(k_dw) -> PW C->C/r + norm + ReLU -> DW(k_dw) -> PW C/r->K*K*G (bias)``.
    With ``dw_kernel_size=0`` the DW convs are dropped, giving RedNet's involution (Eq. 6).
    """

    def __init__(self, channels, kernel_size=7, stride=1, group_channels=16, reduction=4,
                 dw_kernel_size=3, norm="BN"):
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}; use e.g. 3 or 7.")
        if dw_kernel_size and dw_kernel_size % 2 == 0:
            raise ValueError(f"dw_kernel_size must be odd or 0, got {dw_kernel_size}.")
        if group_channels < 1 or channels % group_channels != 0:
            raise ValueError(
                f"channels={channels} is not divisible by group_channels={group_channels}; "
                "choose group_channels dividing the channel count (the paper uses 16)."
            )
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"reduction={reduction} leaves no channels out of {channels}.")
        self.channels, self.kernel_size, self.stride = channels, kernel_size, stride
        self.groups = channels // group_channels
        self.dw_kernel_size = dw_kernel_size
        hidden = channels // reduction

        def depthwise(ch):  # sigma_dw of Eq. 7: spatial context for the kernel prediction
            return Conv2d(ch, ch, dw_kernel_size, padding=dw_kernel_size // 2, groups=ch,
                          bias=False) if dw_kernel_size else None

        self.pool = _downsample(stride)
        self.dw_in = depthwise(channels)                                  # Eq. 7, sigma_dw
        self.reduce = Conv2d(channels, hidden, 1, bias=False,             # Eq. 7, sigma_pw
                             norm=_generator_norm(norm, hidden), activation=nn.ReLU(inplace=True))
        self.dw_hidden = depthwise(hidden)                                # Eq. 7, sigma_dw
        self.span = Conv2d(hidden, kernel_size * kernel_size * self.groups, 1)  # Eq. 7, sigma_pw

    def hidden(self, x):
        """phi of Eq. 7 up to its last 1x1 conv: (B, C/r, H', W')."""
        h = _conv1x1(self.reduce, self.pool(x), depthwise=self.dw_in)
        if self.dw_hidden is not None:
            h = depthwise_conv(self.dw_hidden, h)
        return h

    def kernels(self, x):
        """H of Eq. 6/7: (B, G, K*K, H', W') per-pixel kernels."""
        h = _conv1x1(self.span, self.hidden(x))
        return h.view(h.shape[0], self.groups, self.kernel_size ** 2, h.shape[2], h.shape[3])

    def span_matrix(self):
        """The last 1x1 conv's weight as a (G*K*K, C/r) matrix (what the fused kernels take)."""
        return self.span.weight.view(self.span.weight.shape[0], -1)

    def forward(self, x):
        _check_input(self, x)
        # Eq. 5 with H = span(hidden): fused on CPU, so H never exists as a whole tensor
        return lsa_generate_aggregate(x, self.hidden(x), self.span_matrix(), self.span.bias,
                                      self.kernel_size, self.stride)

    def extra_repr(self):
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, dw_kernel_size={self.dw_kernel_size}")


class GSI(nn.Module):
    """Global shift-invariant dynamic convolution (Eq. 8-10).

    ``Z = ReLU(norm(PW C->m (X)))`` with m = round(lambda * sqrt(C));
    ``P_b = PW m->m*m*k*k (GAP(Z_b))`` (Eq. 9-10), one kernel per sample;
    ``Y = PW m->C (conv(AvgPool(stride)(Z), P_b))`` (Eq. 8).
    ``dynamic=False`` is the Table III "Conv_small" ablation: a static 3x3 conv m->m in place of
    GAP -> PW -> dynamic conv.
    """

    def __init__(self, channels, stride=1, gsi_kernel_size=1, gsi_scale=1.0, norm="BN",
                 dynamic=True):
        super().__init__()
        if gsi_kernel_size % 2 == 0 or gsi_kernel_size < 1:
            raise ValueError(f"gsi_kernel_size must be odd, got {gsi_kernel_size}.")
        if gsi_scale <= 0:
            raise ValueError(f"gsi_scale (lambda) must be positive, got {gsi_scale}.")
        self.channels, self.stride, self.dynamic = channels, stride, dynamic
        self.kernel_size = gsi_kernel_size
        self.width = m = gsi_channels(channels, gsi_scale)
        self.reduce = Conv2d(channels, m, 1, bias=False,                      # Eq. 10, inner sigma_pw
                             norm=_generator_norm(norm, m), activation=nn.ReLU(inplace=True))
        if dynamic:
            self.pool = _downsample(stride)
            self.kernel_gen = nn.Conv2d(m, m * m * gsi_kernel_size ** 2, 1)  # Eq. 10, outer sigma_pw
        else:
            self.static_conv = Conv2d(m, m, 3, stride=stride, padding=1, bias=False)
        self.expand = Conv2d(m, channels, 1, bias=False)                      # back to C channels

    def dynamic_kernels(self, z):
        """P_b of Eq. 9-10: (B, m, m, k, k), one kernel per sample from GAP(Z)."""
        k = self.kernel_size
        p = self.kernel_gen(F.adaptive_avg_pool2d(z, 1))
        return p.view(z.shape[0], self.width, self.width, k, k)

    def expanded_kernels(self, z):
        """E P_b: (B, C, m), the expansion times each sample's dynamic kernel, for k = 1, where
        E (P_b z) = (E P_b) z applies both as one C x m matrix per sample."""
        weight = self.expand.weight.view(self.channels, self.width).to(z.dtype)
        kernels = self.dynamic_kernels(z).view(z.shape[0], self.width, self.width)
        return torch.matmul(weight, kernels.to(z.dtype))

    def forward(self, x):
        return self._forward_plus(x)

    def _forward_plus(self, x, addend=None):
        """GSI(x), or ``addend + GSI(x)`` summed inside the last 1x1 conv's GEMM (how
        :class:`DCDCConv2d` adds the LSA branch without another pass over the output)."""
        _check_input(self, x)
        z = _conv1x1(self.reduce, x)
        if (self.dynamic and self.kernel_size == 1
                and dispatch.conv1x1_form(self.expand, z) == "gemm"):
            # Eq. 8 with k = 1 then the expansion: one GEMM per sample with a C x m weight,
            # without the m-channel map P_b z. (Traces for counting keep the two steps, whose
            # convs FLOP counters count.)
            return _gemm1x1(self.expanded_kernels(z), self.pool(z).contiguous(), addend=addend)
        if self.dynamic:
            z = per_sample_conv(self.pool(z), self.dynamic_kernels(z))   # Eq. 8
        else:
            z = self.static_conv(z)
        return _conv1x1(self.expand, z, addend)

    def extra_repr(self):
        kind = "dynamic" if self.dynamic else "static 3x3 (Conv_small)"
        return (f"channels={self.channels}, width={self.width}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, {kind}")


def per_sample_conv(z, kernels):
    """Convolve sample b of ``z`` (B, m, H, W) with its own ``kernels[b]`` (m_out, m, k, k).

    k = 1 is a batched matrix product; larger k is one grouped conv over a (1, B*m, H, W) view.
    """
    batch, m, height, width = z.shape
    m_out, k = kernels.shape[1], kernels.shape[-1]
    kernels = kernels.to(z.dtype)
    if k == 1:
        out = torch.bmm(kernels.view(batch, m_out, m), z.reshape(batch, m, height * width))
        return out.view(batch, m_out, height, width)
    if batch == 0:
        return z.new_zeros(0, m_out, height, width) + kernels.sum() * 0
    out = F.conv2d(z.reshape(1, batch * m, height, width), kernels.reshape(batch * m_out, m, k, k),
                   padding=k // 2, groups=batch)
    return out.view(batch, m_out, height, width)


class DCDCConv2d(nn.Module):
    """Y = LSA(X) + GSI(X) (Eq. 4, 11); input and output have ``channels`` channels.

    Args:
        channels: C, divisible by ``group_channels``.
        kernel_size: LSA kernel size K (odd; 7 in the bottlenecks, 3 in the stem).
        stride: 1 or 2; both branches output ceil(H / stride) x ceil(W / stride).
        group_channels: channels sharing one LSA kernel (G = C / group_channels).
        reduction: 1 / alpha, width reduction inside the LSA kernel generator.
        dw_kernel_size: k_dw of the generator's depth-wise convs; 0 removes them (RedNet).
        gsi_kernel_size: k_gsi of the dynamic GSI kernel.
        gsi_scale: lambda; the GSI width is m = round(lambda * sqrt(C)).
        norm: detectron2 norm name for the norms inside both generators (see ``get_norm``).
        global_branch: "gsi" (DCDC), "conv_small" / "conv_large" (Table III ablations), or
            "none" (LSA only).

    The global branch lives in one of two attributes, the other being None: ``gsi``, a
    :class:`GSI` (dynamic for "gsi", with a static 3x3 conv m->m for "conv_small"), or
    ``global_conv``, the plain 3x3 conv C->C of "conv_large".
    """

    def __init__(self, channels, kernel_size=7, stride=1, group_channels=16, reduction=4,
                 dw_kernel_size=3, gsi_kernel_size=1, gsi_scale=1.0, norm="BN",
                 global_branch="gsi"):
        super().__init__()
        if global_branch not in GLOBAL_BRANCHES:
            raise ValueError(f"global_branch must be one of {GLOBAL_BRANCHES}, got {global_branch!r}.")
        self.channels, self.stride, self.global_branch = channels, stride, global_branch
        self.lsa = LSA(channels, kernel_size, stride, group_channels, reduction, dw_kernel_size, norm)
        self.gsi = self.global_conv = None
        if global_branch in ("gsi", "conv_small"):
            self.gsi = GSI(channels, stride, gsi_kernel_size, gsi_scale, norm,
                           dynamic=global_branch == "gsi")
        elif global_branch == "conv_large":
            self.global_conv = Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)

    def forward(self, x):
        _check_input(self, x)
        if dispatch.fused_operator(self, x):
            return self._fused_inference(x)
        y = self.lsa(x)
        if self.gsi is not None:
            return self.gsi._forward_plus(x, y)
        if self.global_conv is not None:
            return y + self.global_conv(x)
        return y

    def _fused_inference(self, x):
        """LSA(x) + GSI(x) by ``dcdc::lsa_gsi_inference``: the fused native LSA kernel adds
        GSI's (E P_b) Z to each output tile while it is in cache, instead of a pass over the
        whole output afterwards (the dispatch's ``fused`` rows)."""
        gsi, lsa = self.gsi, self.lsa
        z = _conv1x1(gsi.reduce, x)
        return torch.ops.dcdc.lsa_gsi_inference(x, lsa.hidden(x), lsa.span_matrix(),
                                                lsa.span.bias, lsa.kernel_size, self.stride,
                                                gsi.pool(z), gsi.expanded_kernels(z))

    def extra_repr(self):
        return f"channels={self.channels}, stride={self.stride}, global_branch={self.global_branch}"


# The operator hyperparameters' defaults (the paper's settings), read from DCDCConv2d's signature
# so that MODEL.DCDC (dcdc/config.py) and the LazyConfigs (configs/common/dcdc.py) cannot drift.
OPERATOR_DEFAULTS = {
    name: param.default for name, param in inspect.signature(DCDCConv2d).parameters.items()
    if name in ("group_channels", "reduction", "dw_kernel_size", "gsi_kernel_size", "gsi_scale")
}


def build_operator(operator, channels, kernel_size=7, stride=1, norm="BN", **operator_kwargs):
    """The spatial operator of a DCDC-ResNet bottleneck or neck, by name (the operators of
    :data:`~dcdc.layers.variants.VARIANTS`).

    "dcdc": LSA + GSI; "lsa": LSA only; "involution": RedNet's involution (no DW convs, no GSI);
    "conv": a plain 3x3 conv (the ResNet baseline in the same layout; ``operator_kwargs`` unused).
    """
    v = variant(operator)
    if v.name not in OPERATORS:
        raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r} (a "
                         f"DCDCConv2d(global_branch={v.global_branch!r}) variant).")
    if v.kwargs is None:
        return Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
    return DCDCConv2d(channels, kernel_size, stride, norm=norm, **{**operator_kwargs, **v.kwargs})
