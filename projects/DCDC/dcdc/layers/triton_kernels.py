"""Triton kernels of the LSA aggregation (Eq. 5): forward, and backward to ``x`` and ``kernels``.

The ``triton`` backend of ``torch.ops.dcdc.lsa_aggregate`` (see :mod:`.dispatch`): CUDA tensors,
or CPU tensors under ``TRITON_INTERPRET=1`` (Triton's interpreter, how CI runs these kernels
without a GPU). Any strides (contiguous, channels_last, non-contiguous views) are read as they
are; outputs are contiguous NCHW in the input dtype; products are summed in float32, so the
dispatch in :mod:`.ops` sends float64 to the exact PyTorch composite instead.

Two families of the same three kernels, chosen per call by ``DCDC_TRITON_KERNELS`` (read in
:func:`.dispatch.triton_family`, passed here as ``family``):

* ``simple`` (the default, and the reference): one program per (sample, channel) and block of
  ``BLOCK`` output pixels for the forward, K^2 taps unrolled; the backward to ``x`` in the gather
  form (each input pixel sums the outputs whose window covers it, ``oh = (ih + pad - i) /
  stride`` where that divides, tested per element), so no atomics; the backward to ``kernels``
  one program per (sample, group, tap) and block of output pixels, looping over the group's
  channels. Each of a group's C/G channels re-reads the per-pixel kernels, and the kernel
  gradient re-reads ``grad_out`` and ``x`` once per tap.
* ``tiled``: one program per (sample, group) and tile of pixels, the group's channels (C/G
  padded to a power of two, masked) in registers as a [channels, pixels] tile: the forward loads
  each kernel value once per tile for all channels; the kernel gradient loads the ``grad_out``
  tile once and per tap reduces its product with the shifted ``x`` tile over the channels (no
  atomics, deterministic); the input gradient (gather form, channels in registers) runs once
  per stride phase (the s*s classes of input pixels by ``(ih % s, iw % s)``), so the taps that
  reach a phase are known at compile time and no element tests a parity. Tile size and
  num_warps are chosen by ``triton.autotune`` on CUDA (under the interpreter: the first config).

Which family is faster on a GPU has not been measured yet (no GPU was available when this was
written); ``benchmarks/bench_aggregation.py --device cuda`` times both.

Rules every kernel keeps:

* Grids are 1-D: CUDA allows 2^31 - 1 blocks on grid axis 0 but 65535 on axes 1 and 2, so the
  (row, pixel block) pairs are flattened onto axis 0, pixel blocks of one row consecutive (so
  neighbouring programs read neighbouring memory). A launch over the limit raises.
* Addresses are computed in int64: a sample may span more than 2^31 elements (big strides,
  channels_last views of wide tensors), where int32 offsets wrap. Pixel indices inside one map
  stay int32 (a map over 2^31 - 1 pixels raises), and are widened before they meet a stride.
* Launches run under the tensors' CUDA device (``torch.cuda.device``), so tensors on cuda:1
  work while cuda:0 is current.

:data:`SPECIALIZATIONS` lists the kernel specializations the models and benchmarks use, and
:func:`specialization_launches` gives each one's launches on meta tensors, for a test that
compiles them (``tests/test_triton_compile.py``) and for benchmarks.

The fused generation + aggregation op runs unfused on this backend (the kernels by one cuBLAS
bmm, then these kernels): the fused CPU kernel exists to keep the B x G*K^2 x H' x W' tensor out
of a small cache, and whether fusing pays on a GPU has not been measured.
"""
import collections
import contextlib
import itertools

import torch
import triton
import triton.language as tl

from .dispatch import TRITON_KERNELS as FAMILIES

__all__ = ["lsa_forward", "lsa_backward", "FAMILIES", "PASSES", "SPECIALIZATIONS",
           "TILED_CONFIGS", "specialization_launches"]

PASSES = ("forward", "grad_x", "grad_kernels")
# What the models and benchmarks run: (family, pass, dtype, kernel size, stride).
SPECIALIZATIONS = tuple(itertools.product(FAMILIES, PASSES, ("float32", "float16", "bfloat16"),
                                          (3, 7), (1, 2)))
# The benchmark's stage-2 operator (B, C, H, W), 16 channels per group: the shape the compile
# check specializes for (sizes only change Triton's divisibility hints, not the code's shape).
SPEC_SHAPE, SPEC_GROUP_CHANNELS = (2, 64, 200, 336), 16

BLOCK = 128  # output pixels per program of the simple family (num_warps: Triton's default, 4)
MAX_PROGRAMS = 2**31 - 1  # CUDA's limit on grid axis 0
MAX_PIXELS = 2**31 - 1  # pixel indices inside one map are int32

# The tiled family's autotune configs; the first is the one the interpreter runs. Each compiles
# for every specialization without spilling (tests/test_triton_compile.py) with Triton 3.8 and
# 3.6 (the offline GPU machine's): 32 tile elements per thread (BLOCK 256 with 4 warps, or 512
# with 8 for 16 channels) spilled in the stride-2 grad_x phases, so a config is skipped for a
# group whose [channels, BLOCK] tile (channels padded to a power of two) would hold more than
# TILE_PER_THREAD elements per thread: a program holds two such tiles and their addresses.
TILED_CONFIGS = (
    triton.Config({"BLOCK": 128}, num_warps=4),
    triton.Config({"BLOCK": 64}, num_warps=2),
    triton.Config({"BLOCK": 256}, num_warps=8),
)
TILE_PER_THREAD = 16
_INTERPRETED = triton.knobs.runtime.interpret  # what triton.jit below decides on, at import


# ---------------------------------------------------------------- helpers shared by all kernels

@triton.jit
def _split_program(pixels, BLOCK: tl.constexpr):
    """This program's row (an int64 index: (sample, channel), (sample, group), ...), its block of
    int32 pixel offsets inside the row's map of ``pixels``, and their mask. 1-D grid of
    rows * cdiv(pixels, BLOCK) programs, a row's blocks consecutive."""
    pid = tl.program_id(0)
    blocks = tl.cdiv(pixels, BLOCK)
    offs = (pid % blocks) * BLOCK + tl.arange(0, BLOCK)
    return (pid // blocks).to(tl.int64), offs, offs < pixels


@triton.jit
def _offset(row, col, s_row, s_col):
    """int64 element offset of (row, col) for strides (s_row, s_col): int32 indices are widened
    first, since a sample may span more than 2^31 elements."""
    return row.to(tl.int64) * s_row + col.to(tl.int64) * s_col


@triton.jit
def _tap_offset(tap, s_tap):
    """int64 offset of kernel tap ``tap`` (a constant where the taps are unrolled, else the
    loop index) for the tap stride ``s_tap`` (which may be the constant 1)."""
    return tl.cast(s_tap, tl.int64) * tap


@triton.jit
def _inside(row, col, rows, cols):
    """Whether (row, col) lies in a rows x cols map (out of it: zero padding, or no output)."""
    return (row >= 0) & (row < rows) & (col >= 0) & (col < cols)


@triton.jit
def _group_channels(b, g, group_channels, s_batch, s_channel, CB: tl.constexpr):
    """The group's channel indices as a [CB, 1] int64 column, its mask (CB is group_channels
    padded to a power of two), and the offsets of those channels' maps of sample ``b``."""
    cc = tl.arange(0, CB)[:, None]
    c = g * group_channels + cc
    return c, cc < group_channels, b * s_batch + c * s_channel


@triton.jit
def _aggregate_tap(acc, x_rows, rows_ok, k_pix, valid, oh, ow, i, j, height, width, sxh, sxw, skt,
                   K: tl.constexpr, STRIDE: tl.constexpr):
    """``acc + x[ih, iw] * H[i*K + j, oh, ow]``, one tap (i, j) of Eq. 5 for output pixels
    (oh, ow): ``x_rows`` points at the maps of one channel (simple) or a [CB, 1] column of
    channels (tiled), ``k_pix`` at the pixels' kernels of tap 0; each kernel value is loaded
    once for all of ``x_rows``'s channels."""
    ih = oh * STRIDE + i - (K - 1) // 2
    iw = ow * STRIDE + j - (K - 1) // 2
    ok = valid & _inside(ih, iw, height, width)
    kv = tl.load(k_pix + _tap_offset(i * K + j, skt), mask=valid, other=0.0).to(tl.float32)
    xv = tl.load(x_rows + _offset(ih, iw, sxh, sxw), mask=rows_ok & ok, other=0.0)
    return acc + xv.to(tl.float32) * kv


@triton.jit
def _gather_tap(acc, go_rows, rows_ok, k_tap, ok, oh, ow, sgh, sgw, skh, skw):
    """``acc + grad_out[oh, ow] * H[tap, oh, ow]`` for the outputs (oh, ow) that read the
    input pixels through one tap (masked by ``ok``): one term of the gather-form input gradient.
    ``k_tap`` points at the tap's kernel map, ``go_rows`` as ``x_rows`` in _aggregate_tap."""
    kv = tl.load(k_tap + _offset(oh, ow, skh, skw), mask=ok, other=0.0).to(tl.float32)
    gv = tl.load(go_rows + _offset(oh, ow, sgh, sgw), mask=rows_ok & ok, other=0.0)
    return acc + gv.to(tl.float32) * kv


# ---------------------------------------------------------------- the simple family

@triton.jit
def _forward_kernel(x_ptr, k_ptr, out_ptr, channels, group_channels, height, width, out_h, out_w,
                    sxb, sxc, sxh, sxw, skb, skg, skt, skh, skw,
                    K: tl.constexpr, STRIDE: tl.constexpr, BLOCK: tl.constexpr):
    """Eq. 5 for one (sample, channel) and BLOCK output pixels; grid B*C*cdiv(H'*W', BLOCK)."""
    bc, offs, valid = _split_program(out_h * out_w, BLOCK)
    b, c = bc // channels, bc % channels
    oh, ow = offs // out_w, offs % out_w
    k_pix = k_ptr + b * skb + (c // group_channels) * skg + _offset(oh, ow, skh, skw)
    x_rows = x_ptr + b * sxb + c * sxc
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in tl.static_range(K):  # unrolled: a few scalars per tap in flight
        for j in tl.static_range(K):
            acc = _aggregate_tap(acc, x_rows, True, k_pix, valid, oh, ow, i, j, height, width,
                                 sxh, sxw, skt, K, STRIDE)
    tl.store(out_ptr + bc * (out_h * out_w) + offs, acc.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _grad_x_kernel(go_ptr, k_ptr, gx_ptr, channels, group_channels, height, width, out_h, out_w,
                   sgb, sgc, sgh, sgw, skb, skg, skt, skh, skw,
                   K: tl.constexpr, STRIDE: tl.constexpr, BLOCK: tl.constexpr):
    """dL/dx for one (sample, channel) and BLOCK input pixels, gather form: tap (i, j) of the
    output (oh, ow) reads input (oh*s + i - pad, ow*s + j - pad), so input (ih, iw) gathers the
    outputs ``oh = (ih + pad - i) / s`` where that divides (tested per element); grid
    B*C*cdiv(H*W, BLOCK)."""
    bc, offs, valid = _split_program(height * width, BLOCK)
    b, c = bc // channels, bc % channels
    ih, iw = offs // width, offs % width
    pad = (K - 1) // 2
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    go_rows = go_ptr + b * sgb + c * sgc
    k_base = k_ptr + b * skb + (c // group_channels) * skg
    for i in tl.static_range(K):
        th = ih + pad - i  # = oh * STRIDE for the output whose tap i reads row ih
        th_safe = tl.where(th >= 0, th, 0)
        oh = th_safe // STRIDE
        row_ok = valid & (th >= 0) & (th_safe % STRIDE == 0) & (oh < out_h)
        for j in tl.static_range(K):
            tw = iw + pad - j
            tw_safe = tl.where(tw >= 0, tw, 0)
            ow = tw_safe // STRIDE
            ok = row_ok & (tw >= 0) & (tw_safe % STRIDE == 0) & (ow < out_w)
            acc = _gather_tap(acc, go_rows, True, k_base + _tap_offset(i * K + j, skt), ok, oh,
                              ow, sgh, sgw, skh, skw)
    tl.store(gx_ptr + bc * (height * width) + offs, acc.to(gx_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _grad_kernels_kernel(go_ptr, x_ptr, gk_ptr, groups, group_channels, height, width, out_h,
                         out_w, sgb, sgc, sgh, sgw, sxb, sxc, sxh, sxw,
                         K: tl.constexpr, STRIDE: tl.constexpr, BLOCK: tl.constexpr):
    """dL/dH for one (sample, group, tap) and BLOCK output pixels: the sum over the group's
    channels of grad_out times the tap's shifted input; grid B*G*K^2*cdiv(H'*W', BLOCK)."""
    bgt, offs, valid = _split_program(out_h * out_w, BLOCK)  # bgt = (b * G + g) * K^2 + tap
    tap = bgt % (K * K)
    bg = bgt // (K * K)
    b, g = bg // groups, bg % groups
    oh, ow = offs // out_w, offs % out_w
    pad = (K - 1) // 2
    ih, iw = oh * STRIDE + tap // K - pad, ow * STRIDE + tap % K - pad
    ok = valid & _inside(ih, iw, height, width)
    go_pix = go_ptr + b * sgb + _offset(oh, ow, sgh, sgw)
    x_pix = x_ptr + b * sxb + _offset(ih, iw, sxh, sxw)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for cc in range(group_channels):
        c = g * group_channels + cc
        gv = tl.load(go_pix + c * sgc, mask=valid, other=0.0).to(tl.float32)
        xv = tl.load(x_pix + c * sxc, mask=ok, other=0.0).to(tl.float32)
        acc += gv * xv
    tl.store(gk_ptr + bgt * (out_h * out_w) + offs, acc.to(gk_ptr.dtype.element_ty), mask=valid)


# ---------------------------------------------------------------- the tiled family
#
# The tiled kernels loop over the taps at run time (tl.range, not unrolled), where the simple
# ones unroll them: unrolled, the compiler issues every tap's [CB, BLOCK] loads, each element
# with its 64-bit address, ahead of their use, and for K = 7 ran out of registers (255 per
# thread, and spills, in the sm_90 compile check); one tap at a time a program holds its
# accumulator (or grad_out tile) and one loaded tile.

def _prune_configs(configs, named_args, **kwargs):
    """The configs whose [CB, BLOCK] tile has at most TILE_PER_THREAD elements per thread; for a
    group too wide for all of them (CB > 64), 8 warps and the BLOCK that fits (at least 16)."""
    cb = kwargs["CB"]
    fitting = [c for c in configs if cb * c.kwargs["BLOCK"] <= TILE_PER_THREAD * 32 * c.num_warps]
    block = max(16, TILE_PER_THREAD * 32 * 8 // cb)  # a power of two, as CB is
    return fitting or [triton.Config({"BLOCK": block}, num_warps=8)]


def _autotuned(kernel):
    """``kernel`` under triton.autotune over TILED_CONFIGS (the first config alone under the
    interpreter). The key is the group width, K, the stride, the stride phase (grad_x), the
    dtypes and ``work``, the launch's pixel count rounded up to a power of two: detection sees a
    new image size at almost every step, and each exact size would re-benchmark every config."""
    configs = list(TILED_CONFIGS[:1] if _INTERPRETED else TILED_CONFIGS)
    return triton.autotune(configs=configs,
                           key=["group_channels", "work", "K", "STRIDE", "RH", "RW"],
                           prune_configs_by={"early_config_prune": _prune_configs})(kernel)


@triton.jit
def _tiled_forward_kernel(x_ptr, k_ptr, out_ptr, groups, group_channels, height, width, out_h,
                          out_w, sxb, sxc, sxh, sxw, skb, skg, skt, skh, skw, work,
                          K: tl.constexpr, STRIDE: tl.constexpr, CB: tl.constexpr,
                          BLOCK: tl.constexpr):
    """Eq. 5 for one (sample, group) and BLOCK output pixels, the group's channels as a
    [CB, BLOCK] float32 accumulator: each kernel value is loaded once for all of them; grid
    B*G*cdiv(H'*W', BLOCK). ``work`` only keys the autotuner."""
    bg, offs, valid = _split_program(out_h * out_w, BLOCK)
    b, g = bg // groups, bg % groups
    c, rows_ok, x_rows = _group_channels(b, g, group_channels, sxb, sxc, CB)
    oh, ow = offs // out_w, offs % out_w
    k_pix = k_ptr + b * skb + g * skg + _offset(oh, ow, skh, skw)
    acc = tl.zeros((CB, BLOCK), dtype=tl.float32)
    for tap in tl.range(K * K, loop_unroll_factor=1):  # taps at run time: see the family's note
        acc = _aggregate_tap(acc, x_ptr + x_rows, rows_ok, k_pix, valid, oh, ow, tap // K,
                             tap % K, height, width, sxh, sxw, skt, K, STRIDE)
    out_rows = out_ptr + (b * (groups * group_channels) + c) * (out_h * out_w)
    tl.store(out_rows + offs, acc.to(out_ptr.dtype.element_ty), mask=rows_ok & valid)


@triton.jit
def _tiled_grad_x_kernel(go_ptr, k_ptr, gx_ptr, groups, group_channels, height, width, out_h,
                         out_w, phase_h, phase_w, sgb, sgc, sgh, sgw, skb, skg, skt, skh, skw,
                         work, K: tl.constexpr, STRIDE: tl.constexpr, RH: tl.constexpr,
                         RW: tl.constexpr, CB: tl.constexpr, BLOCK: tl.constexpr):
    """dL/dx (gather form) for one (sample, group) and BLOCK input pixels of the stride phase
    (RH, RW): the pixels (ih, iw) = (qh*STRIDE + RH, qw*STRIDE + RW), a phase_h x phase_w grid
    of (qh, qw). Tap i reads row ih from output row ``oh = (ih + pad - i) / STRIDE``, which
    divides only for the taps with ``(RH + pad - i) % STRIDE == 0``, for which ``oh = qh +
    (RH + pad - i) // STRIDE``: which taps reach the phase, and their output offsets, are
    compile-time constants. Channels in registers as in the forward, each kernel value loaded
    once per tile; grid B*G*cdiv(phase_h*phase_w, BLOCK), one launch per phase (STRIDE^2)."""
    bg, offs, valid = _split_program(phase_h * phase_w, BLOCK)
    b, g = bg // groups, bg % groups
    c, rows_ok, go_rows = _group_channels(b, g, group_channels, sgb, sgc, CB)
    qh, qw = offs // phase_w, offs % phase_w
    k_base = k_ptr + b * skb + g * skg
    # the phase's taps: i = TH + m*STRIDE, m < NH, the first TH = (RH + pad) % STRIDE; for them
    # oh = qh + DH - m with DH = (RH + pad - TH) / STRIDE (exact); the same for columns
    pad: tl.constexpr = (K - 1) // 2
    TH: tl.constexpr = (RH + pad) % STRIDE
    TW: tl.constexpr = (RW + pad) % STRIDE
    NH: tl.constexpr = (K - TH + STRIDE - 1) // STRIDE
    NW: tl.constexpr = (K - TW + STRIDE - 1) // STRIDE
    acc = tl.zeros((CB, BLOCK), dtype=tl.float32)
    for t in tl.range(NH * NW, loop_unroll_factor=1):  # taps at run time: see the family's note
        mh, mw = t // NW, t % NW
        oh = qh + (RH + pad - TH) // STRIDE - mh
        ow = qw + (RW + pad - TW) // STRIDE - mw
        ok = valid & _inside(oh, ow, out_h, out_w)
        tap = (TH + mh * STRIDE) * K + TW + mw * STRIDE
        acc = _gather_tap(acc, go_ptr + go_rows, rows_ok, k_base + _tap_offset(tap, skt), ok, oh,
                          ow, sgh, sgw, skh, skw)
    gx_rows = gx_ptr + (b * (groups * group_channels) + c) * (height * width)
    gx_pix = _offset(qh * STRIDE + RH, qw * STRIDE + RW, width, 1)
    tl.store(gx_rows + gx_pix, acc.to(gx_ptr.dtype.element_ty), mask=rows_ok & valid)


@triton.jit
def _tiled_grad_kernels_kernel(go_ptr, x_ptr, gk_ptr, groups, group_channels, height, width,
                               out_h, out_w, sgb, sgc, sgh, sgw, sxb, sxc, sxh, sxw, work,
                               K: tl.constexpr, STRIDE: tl.constexpr, CB: tl.constexpr,
                               BLOCK: tl.constexpr):
    """dL/dH for one (sample, group) and BLOCK output pixels, all K^2 taps: the [CB, BLOCK]
    grad_out tile is loaded once, and each tap's value is its product with the tap's shifted
    input tile summed over the channels (a reduction inside the program: no atomics,
    deterministic); grid B*G*cdiv(H'*W', BLOCK)."""
    bg, offs, valid = _split_program(out_h * out_w, BLOCK)
    b, g = bg // groups, bg % groups
    _, rows_ok, go_rows = _group_channels(b, g, group_channels, sgb, sgc, CB)
    _, _, x_rows = _group_channels(b, g, group_channels, sxb, sxc, CB)
    oh, ow = offs // out_w, offs % out_w
    go = tl.load(go_ptr + go_rows + _offset(oh, ow, sgh, sgw), mask=rows_ok & valid,
                 other=0.0).to(tl.float32)
    gk_taps = gk_ptr + bg * (K * K) * (out_h * out_w) + offs  # contiguous (B, G, K^2, H', W')
    for tap in tl.range(K * K, loop_unroll_factor=1):  # taps at run time: see the family's note
        ih = oh * STRIDE + tap // K - (K - 1) // 2
        iw = ow * STRIDE + tap % K - (K - 1) // 2
        ok = valid & _inside(ih, iw, height, width)
        xv = tl.load(x_ptr + x_rows + _offset(ih, iw, sxh, sxw), mask=rows_ok & ok,
                     other=0.0).to(tl.float32)
        tl.store(gk_taps + _tap_offset(tap, out_h * out_w),
                 tl.sum(go * xv, axis=0).to(gk_ptr.dtype.element_ty), mask=valid)


_tiled_forward = _autotuned(_tiled_forward_kernel)
_tiled_grad_x = _autotuned(_tiled_grad_x_kernel)
_tiled_grad_kernels = _autotuned(_tiled_grad_kernels_kernel)


# ---------------------------------------------------------------- host side

# One kernel launch: ``kernel[grid](*args, **meta)``; ``grid`` a tuple, or for the autotuned
# kernels a function of the chosen config's meta-parameters.
Launch = collections.namedtuple("Launch", "kernel grid args meta")


def _check_family(family):
    if family not in FAMILIES:
        raise ValueError(f"unknown Triton kernel family {family!r}; choose one of "
                         f"{', '.join(FAMILIES)}.")


def _check_pixels(pixels):
    if pixels > MAX_PIXELS:
        raise ValueError(f"the Triton LSA kernels index a map's pixels in int32; a map of "
                         f"{pixels} pixels is over {MAX_PIXELS}: split the input spatially.")


def _programs(rows, pixels, block):
    """The 1-D grid of ``rows`` x cdiv(pixels, block) programs, checked against CUDA's limit."""
    _check_pixels(pixels)
    programs = rows * triton.cdiv(pixels, block)
    if programs > MAX_PROGRAMS:
        raise ValueError(f"this LSA launch needs {programs} programs, over CUDA's grid limit of "
                         f"{MAX_PROGRAMS}: split the batch.")
    return programs


def _tiled_grid(rows, pixels):
    """The grid of an autotuned launch, a function of the config's BLOCK (checked when the
    autotuner calls it, before each launch)."""
    _check_pixels(pixels)
    return lambda meta: (_programs(rows, pixels, meta["BLOCK"]),)


def _tiled_meta(kernel_size, stride, group_channels):
    return dict(K=kernel_size, STRIDE=stride, CB=triton.next_power_of_2(group_channels))


def _geometry(x, kernels):
    batch, channels, height, width = x.shape
    groups, out_h, out_w = kernels.shape[1], kernels.shape[3], kernels.shape[4]
    return batch, channels, groups, channels // groups, height, width, out_h, out_w


def _forward_launches(x, kernels, out, kernel_size, stride, family):
    batch, channels, groups, cg, height, width, out_h, out_w = _geometry(x, kernels)
    strides = (*x.stride(), *kernels.stride())
    if family == "simple":
        grid = (_programs(batch * channels, out_h * out_w, BLOCK),)
        return [Launch(_forward_kernel, grid,
                       (x, kernels, out, channels, cg, height, width, out_h, out_w, *strides),
                       dict(K=kernel_size, STRIDE=stride, BLOCK=BLOCK))]
    grid = _tiled_grid(batch * groups, out_h * out_w)
    work = triton.next_power_of_2(batch * groups * out_h * out_w)
    return [Launch(_tiled_forward, grid, (x, kernels, out, groups, cg, height, width, out_h,
                                          out_w, *strides, work),
                   _tiled_meta(kernel_size, stride, cg))]


def _grad_x_launches(grad_out, kernels, grad_x, kernel_size, stride, family):
    batch, channels, groups, cg, height, width, out_h, out_w = _geometry(grad_x, kernels)
    strides = (*grad_out.stride(), *kernels.stride())
    if family == "simple":
        grid = (_programs(batch * channels, height * width, BLOCK),)
        return [Launch(_grad_x_kernel, grid, (grad_out, kernels, grad_x, channels, cg, height,
                                              width, out_h, out_w, *strides),
                       dict(K=kernel_size, STRIDE=stride, BLOCK=BLOCK))]
    launches = []
    for rh, rw in itertools.product(range(min(stride, height)), range(min(stride, width))):
        # the phase's input rows ih = qh * stride + rh < height: cdiv(height - rh, stride) of them
        phase_h, phase_w = triton.cdiv(height - rh, stride), triton.cdiv(width - rw, stride)
        work = triton.next_power_of_2(batch * groups * phase_h * phase_w)
        launches.append(Launch(
            _tiled_grad_x, _tiled_grid(batch * groups, phase_h * phase_w),
            (grad_out, kernels, grad_x, groups, cg, height, width, out_h, out_w, phase_h, phase_w,
             *strides, work),
            dict(_tiled_meta(kernel_size, stride, cg), RH=rh, RW=rw)))
    return launches


def _grad_kernels_launches(grad_out, x, grad_kernels, kernel_size, stride, family):
    batch, channels, groups, cg, height, width, out_h, out_w = _geometry(x, grad_kernels)
    args = (grad_out, x, grad_kernels, groups, cg, height, width, out_h, out_w,
            *grad_out.stride(), *x.stride())
    if family == "simple":
        grid = (_programs(batch * groups * kernel_size**2, out_h * out_w, BLOCK),)
        return [Launch(_grad_kernels_kernel, grid, args,
                       dict(K=kernel_size, STRIDE=stride, BLOCK=BLOCK))]
    work = triton.next_power_of_2(batch * groups * out_h * out_w)
    return [Launch(_tiled_grad_kernels, _tiled_grid(batch * groups, out_h * out_w),
                   (*args, work), _tiled_meta(kernel_size, stride, cg))]


def _run(launches, like):
    """Launch under ``like``'s CUDA device (tensors on cuda:1 while cuda:0 is current); CPU
    tensors (the interpreter) need no device."""
    with torch.cuda.device(like.device) if like.is_cuda else contextlib.nullcontext():
        for launch in launches:
            launch.kernel[launch.grid](*launch.args, **launch.meta)


def lsa_forward(x, kernels, kernel_size, stride, family="simple"):
    """Eq. 5 by the ``family`` kernels; a contiguous (B, C, H', W') tensor in x's dtype."""
    _check_family(family)
    batch, channels, _, _, _, _, out_h, out_w = _geometry(x, kernels)
    out = x.new_empty(batch, channels, out_h, out_w)
    if out.numel():
        _run(_forward_launches(x, kernels, out, kernel_size, stride, family), x)
    return out


def lsa_backward(grad_out, x, kernels, kernel_size, stride, need_x, need_kernels,
                 family="simple"):
    """``(dL/dx or None, dL/dkernels or None)``, contiguous, in the inputs' dtype."""
    _check_family(family)
    grad_x = grad_kernels = None
    launches = []
    if need_x:
        grad_x = x.new_empty(x.shape)
        if grad_x.numel():
            launches += _grad_x_launches(grad_out, kernels, grad_x, kernel_size, stride, family)
    if need_kernels:
        grad_kernels = kernels.new_empty(kernels.shape)
        if grad_kernels.numel():
            launches += _grad_kernels_launches(grad_out, x, grad_kernels, kernel_size, stride,
                                               family)
    _run(launches, x)
    return grad_x, grad_kernels


def specialization_launches(family, pass_, dtype, kernel_size, stride, shape=SPEC_SHAPE,
                            group_channels=SPEC_GROUP_CHANNELS):
    """The launches of one entry of :data:`SPECIALIZATIONS` on contiguous meta tensors of
    ``shape`` (nothing is allocated or run): for compiling them ahead of time."""
    _check_family(family)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    batch, channels, height, width = shape
    if channels % group_channels:
        raise ValueError(f"group_channels={group_channels} does not divide the {channels} "
                         f"channels of shape {shape}.")
    out_h, out_w = triton.cdiv(height, stride), triton.cdiv(width, stride)
    meta = dict(device="meta", dtype=dtype)
    x = torch.empty(shape, **meta)
    kernels = torch.empty(batch, channels // group_channels, kernel_size**2, out_h, out_w, **meta)
    grad_out = torch.empty(batch, channels, out_h, out_w, **meta)
    if pass_ == "forward":
        return _forward_launches(x, kernels, grad_out, kernel_size, stride, family)
    if pass_ == "grad_x":
        return _grad_x_launches(grad_out, kernels, torch.empty_like(x), kernel_size, stride,
                                family)
    if pass_ == "grad_kernels":
        return _grad_kernels_launches(grad_out, x, torch.empty_like(kernels), kernel_size, stride,
                                      family)
    raise ValueError(f"unknown pass {pass_!r}; choose one of {', '.join(PASSES)}.")
