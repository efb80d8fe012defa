"""Triton kernels of the LSA aggregation (Eq. 5): forward, and backward to ``x`` and ``kernels``.

The ``triton`` backend of ``torch.ops.dcdc.lsa_aggregate`` (see :mod:`.backend`): CUDA tensors,
or CPU tensors under ``TRITON_INTERPRET=1`` (Triton's interpreter, how CI runs these kernels
without a GPU). Any strides (contiguous, channels_last, non-contiguous views) are read as they
are; outputs are contiguous NCHW in the input dtype; products are summed in float32.

* forward: one program per (sample, channel) and block of output pixels, K^2 taps unrolled.
* backward to ``x``: the gather form (each input pixel sums the outputs whose window covers it:
  ``oh = (ih + pad - i) / stride`` when that divides), so no atomics.
* backward to ``kernels``: one program per (sample, group, tap) and block of output pixels,
  summing over the group's channels.

The fused generation + aggregation op runs unfused on this backend (the kernels by one cuBLAS
bmm, then these kernels): the fused CPU kernel exists to keep the B x G*K^2 x H' x W' tensor out
of a small cache, and whether fusing pays on a GPU has not been measured (no GPU was available
when this was written).
"""
import triton
import triton.language as tl

__all__ = ["lsa_forward", "lsa_backward"]

BLOCK = 128


@triton.jit
def _channel_block(channels, group_channels, pixels, BLOCK: tl.constexpr):
    """This program's (sample, channel) pair, its group and its block of ``pixels`` offsets."""
    bc = tl.program_id(0).to(tl.int64)
    b, c = bc // channels, bc % channels
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    return bc, b, c, c // group_channels, offs, offs < pixels


@triton.jit
def _forward_kernel(x_ptr, k_ptr, out_ptr, channels, group_channels, height, width, out_h, out_w,
                    sxb, sxc, sxh, sxw, skb, skg, skt, skh, skw,
                    K: tl.constexpr, STRIDE: tl.constexpr, BLOCK: tl.constexpr):
    bc, b, c, g, offs, valid = _channel_block(channels, group_channels, out_h * out_w, BLOCK)
    oh, ow = offs // out_w, offs % out_w
    pad = (K - 1) // 2
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    x_base = x_ptr + b * sxb + c * sxc
    k_base = k_ptr + b * skb + g * skg + oh * skh + ow * skw
    for i in tl.static_range(K):
        ih = oh * STRIDE + i - pad
        row_ok = valid & (ih >= 0) & (ih < height)
        for j in tl.static_range(K):
            iw = ow * STRIDE + j - pad
            ok = row_ok & (iw >= 0) & (iw < width)
            xv = tl.load(x_base + ih * sxh + iw * sxw, mask=ok, other=0.0).to(tl.float32)
            kv = tl.load(k_base + (i * K + j) * skt, mask=valid, other=0.0).to(tl.float32)
            acc += xv * kv
    tl.store(out_ptr + bc * out_h * out_w + offs, acc.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _grad_x_kernel(go_ptr, k_ptr, gx_ptr, channels, group_channels, height, width, out_h, out_w,
                   sgb, sgc, sgh, sgw, skb, skg, skt, skh, skw,
                   K: tl.constexpr, STRIDE: tl.constexpr, BLOCK: tl.constexpr):
    bc, b, c, g, offs, valid = _channel_block(channels, group_channels, height * width, BLOCK)
    ih, iw = offs // width, offs % width
    pad = (K - 1) // 2
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    go_base = go_ptr + b * sgb + c * sgc
    k_base = k_ptr + b * skb + g * skg
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
            gv = tl.load(go_base + oh * sgh + ow * sgw, mask=ok, other=0.0).to(tl.float32)
            kv = tl.load(k_base + (i * K + j) * skt + oh * skh + ow * skw, mask=ok,
                         other=0.0).to(tl.float32)
            acc += gv * kv
    tl.store(gx_ptr + bc * height * width + offs, acc.to(gx_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _grad_kernels_kernel(go_ptr, x_ptr, gk_ptr, groups, group_channels, height, width, out_h,
                         out_w, sgb, sgc, sgh, sgw, sxb, sxc, sxh, sxw,
                         K: tl.constexpr, STRIDE: tl.constexpr, BLOCK: tl.constexpr):
    bgt = tl.program_id(0).to(tl.int64)  # ((b * G) + g) * K^2 + tap
    tap = bgt % (K * K)
    bg = bgt // (K * K)
    b, g = bg // groups, bg % groups
    i, j = tap // K, tap % K
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < out_h * out_w
    oh, ow = offs // out_w, offs % out_w
    pad = (K - 1) // 2
    ih, iw = oh * STRIDE + i - pad, ow * STRIDE + j - pad
    ok = valid & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for cc in range(group_channels):
        c = g * group_channels + cc
        gv = tl.load(go_ptr + b * sgb + c * sgc + oh * sgh + ow * sgw, mask=valid,
                     other=0.0).to(tl.float32)
        xv = tl.load(x_ptr + b * sxb + c * sxc + ih * sxh + iw * sxw, mask=ok,
                     other=0.0).to(tl.float32)
        acc += gv * xv
    tl.store(gk_ptr + bgt * out_h * out_w + offs, acc.to(gk_ptr.dtype.element_ty), mask=valid)


def _geometry(x, kernels):
    batch, channels, height, width = x.shape
    groups, out_h, out_w = kernels.shape[1], kernels.shape[3], kernels.shape[4]
    return batch, channels, groups, channels // groups, height, width, out_h, out_w


def lsa_forward(x, kernels, kernel_size, stride):
    batch, channels, groups, cg, height, width, out_h, out_w = _geometry(x, kernels)
    out = x.new_empty(batch, channels, out_h, out_w)
    if out.numel() == 0:
        return out
    grid = (batch * channels, triton.cdiv(out_h * out_w, BLOCK))
    _forward_kernel[grid](x, kernels, out, channels, cg, height, width, out_h, out_w,
                          *x.stride(), *kernels.stride(),
                          K=kernel_size, STRIDE=stride, BLOCK=BLOCK)
    return out


def lsa_backward(grad_out, x, kernels, kernel_size, stride, need_x, need_kernels):
    batch, channels, groups, cg, height, width, out_h, out_w = _geometry(x, kernels)
    grad_x = grad_kernels = None
    if need_x:
        grad_x = x.new_empty(x.shape)
        if grad_x.numel():
            grid = (batch * channels, triton.cdiv(height * width, BLOCK))
            _grad_x_kernel[grid](grad_out, kernels, grad_x, channels, cg, height, width, out_h,
                                 out_w, *grad_out.stride(), *kernels.stride(),
                                 K=kernel_size, STRIDE=stride, BLOCK=BLOCK)
    if need_kernels:
        grad_kernels = kernels.new_empty(kernels.shape)
        if grad_kernels.numel():
            grid = (batch * groups * kernel_size**2, triton.cdiv(out_h * out_w, BLOCK))
            _grad_kernels_kernel[grid](grad_out, x, grad_kernels, groups, cg, height, width,
                                       out_h, out_w, *grad_out.stride(), *x.stride(),
                                       K=kernel_size, STRIDE=stride, BLOCK=BLOCK)
    return grad_x, grad_kernels
