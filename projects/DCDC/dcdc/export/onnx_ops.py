"""The ``torch.ops.dcdc`` operators in ONNX, with standard ONNX operators only.

Both exporters of ``torch.onnx`` are covered, so the ONNX files need no custom domain
(onnxruntime and TensorRT's ONNX parser read them):

* the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, the route of
  detectron2's ``TracingAdapter``): :func:`register_onnx_symbolics` (run by ``import dcdc``) gives
  each forward operator an ONNX symbolic. ``dcdc::lsa_aggregate`` becomes K^2 strided ``Slice``
  s of the zero-padded input, each multiplied by its kernel tap and summed (the shift-and-
  accumulate of the PyTorch composite); the slices end at offsets relative to the padded map's
  end, so the graph keeps H and W dynamic. ``dcdc::lsa_generate_aggregate`` adds the generator's
  1x1 ``Conv`` in front, ``dcdc::depthwise_conv`` is a grouped ``Conv``.
* the ``torch.export``-based exporter (``dynamo=True``): :func:`decompositions` maps each
  operator to its PyTorch composite (aten operators), for
  ``ExportedProgram.run_decompositions``; :func:`export_onnx` does the whole export.

The backward operators have neither: an exported graph is an inference graph.
"""
import torch
import torch.nn.functional as F

from ..layers import ops
from ..layers.dispatch import deployment_tracing

__all__ = ["ONNX_MIN_OPSET", "register_onnx_symbolics", "decompositions", "decompose",
           "export_onnx"]

# Slice with steps (the strided taps of a stride-2 operator) exists from ONNX opset 10.
ONNX_MIN_OPSET = 10
_INT64_MAX = 2**63 - 1


def _const(g, values):
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


def _static_dim(value, dim, what):
    from torch.onnx import symbolic_helper

    size = symbolic_helper._get_tensor_dim_size(value, dim)
    if size is None:
        raise RuntimeError(
            f"ONNX export of a dcdc operator needs the {what} (dim {dim}) as a constant, and the "
            "traced graph does not know it; export the module with torch.onnx.export on example "
            "inputs of the shapes it runs on (only H and W may vary)."
        )
    return size


def _check_opset(g, name):
    if g.opset < ONNX_MIN_OPSET:
        raise RuntimeError(
            f"dcdc::{name} needs ONNX opset >= {ONNX_MIN_OPSET} (strided Slice), got opset "
            f"{g.opset}; export with opset_version={ONNX_MIN_OPSET} or higher."
        )


def _aggregate(g, x, flat_kernels, channels, groups, kernel_size, stride):
    """Eq. 5 in ONNX: x (B, C, H, W), flat_kernels (B, G, K*K, H'*W') -> (B, C, H', W')."""
    pad = (kernel_size - 1) // 2
    x_pad = x
    if pad:
        x_pad = g.op("Pad", x, _const(g, [0, 0, pad, pad, 0, 0, pad, pad]), mode_s="constant")
    axes_hw, steps = _const(g, [2, 3]), _const(g, [stride, stride])
    to_groups = _const(g, [0, groups, channels // groups, -1])
    tap_axis = _const(g, [2])
    out = view = None
    for i in range(kernel_size):
        for j in range(kernel_size):
            # x_pad[:, :, i : i + H : s, j : j + W : s] has ceil(H / s) = H' rows whatever H is
            ends = [i - 2 * pad if i < 2 * pad else _INT64_MAX,
                    j - 2 * pad if j < 2 * pad else _INT64_MAX]
            view = g.op("Slice", x_pad, _const(g, [i, j]), _const(g, ends), axes_hw, steps)
            tap = i * kernel_size + j
            weights = g.op("Slice", flat_kernels, _const(g, [tap]), _const(g, [tap + 1]),
                           tap_axis)                                    # (B, G, 1, H'W')
            term = g.op("Mul", g.op("Reshape", view, to_groups), weights)  # (B, G, C/G, H'W')
            out = term if out is None else g.op("Add", out, term)
    return g.op("Reshape", out, g.op("Shape", view))


def _lsa_aggregate_symbolic(g, x, kernels, kernel_size, stride):
    from torch.onnx import symbolic_helper

    _check_opset(g, "lsa_aggregate")
    kernel_size = symbolic_helper._get_const(kernel_size, "i", "kernel_size")
    stride = symbolic_helper._get_const(stride, "i", "stride")
    channels = _static_dim(x, 1, "channel count of x")
    groups = _static_dim(kernels, 1, "group count of the kernels")
    flat = g.op("Reshape", kernels, _const(g, [0, 0, 0, -1]))
    return _aggregate(g, x, flat, channels, groups, kernel_size, stride)


def _lsa_generate_aggregate_symbolic(g, x, hidden, weight, bias, kernel_size, stride):
    from torch.onnx import symbolic_helper

    _check_opset(g, "lsa_generate_aggregate")
    kernel_size = symbolic_helper._get_const(kernel_size, "i", "kernel_size")
    stride = symbolic_helper._get_const(stride, "i", "stride")
    channels = _static_dim(x, 1, "channel count of x")
    groups = _static_dim(weight, 0, "row count of the generator weight") // kernel_size**2
    conv_inputs = [hidden, g.op("Unsqueeze", weight, _const(g, [2, 3]))
                   if g.opset >= 13 else g.op("Unsqueeze", weight, axes_i=[2, 3])]
    if not symbolic_helper._is_none(bias):
        conv_inputs.append(bias)
    kernels = g.op("Conv", *conv_inputs, kernel_shape_i=[1, 1])      # (B, G*K*K, H', W')
    flat = g.op("Reshape", kernels, _const(g, [0, groups, kernel_size**2, -1]))
    return _aggregate(g, x, flat, channels, groups, kernel_size, stride)


def _depthwise_conv_symbolic(g, x, weight):
    channels = _static_dim(weight, 0, "channel count of the depth-wise weight")
    k = _static_dim(weight, 3, "kernel size of the depth-wise weight")
    return g.op("Conv", x, weight, group_i=channels, kernel_shape_i=[k, k],
                pads_i=[k // 2] * 4, strides_i=[1, 1], dilations_i=[1, 1])


_SYMBOLICS = {
    "dcdc::lsa_aggregate": _lsa_aggregate_symbolic,
    "dcdc::lsa_generate_aggregate": _lsa_generate_aggregate_symbolic,
    "dcdc::depthwise_conv": _depthwise_conv_symbolic,
}


def register_onnx_symbolics():
    """Register the ONNX symbolics of the forward ``dcdc`` operators with the TorchScript-based
    exporter, for every opset (an opset below :data:`ONNX_MIN_OPSET` raises at export)."""
    for name, fn in _SYMBOLICS.items():
        # opset 7 is the oldest the exporter supports: registering there covers all newer ones,
        # so an old opset reaches _check_opset's message instead of "unsupported operator"
        torch.onnx.register_custom_op_symbolic(name, fn, 7)


# ---------------------------------------------------------------- torch.export / dynamo=True

def _lsa_aggregate_composite(x, kernels, kernel_size, stride):
    """The shift-and-accumulate of ``ops._torch_forward`` (the same taps, ``ops._offset_views``)
    written out of place: decompositions must be functional."""
    batch, channels = x.shape[:2]
    groups, out_h, out_w = kernels.shape[1], kernels.shape[3], kernels.shape[4]
    pad = (kernel_size - 1) // 2
    x_pad = F.pad(x, (pad, pad, pad, pad))
    grouped = (batch, groups, channels // groups, out_h, out_w)
    out = None
    for tap, view in ops._offset_views(x_pad, kernel_size, stride, out_h, out_w):
        term = view.reshape(grouped) * kernels[:, :, tap, None]
        out = term if out is None else out + term
    return out.reshape(batch, channels, out_h, out_w)


def _lsa_generate_aggregate_composite(x, hidden, weight, bias, kernel_size, stride):
    kernels = ops.generate_kernels(hidden, weight, bias, weight.shape[0] // kernel_size**2)
    return _lsa_aggregate_composite(x, kernels, kernel_size, stride)


def _depthwise_conv_composite(x, weight):
    return F.conv2d(x, weight, padding=weight.shape[-1] // 2, groups=x.shape[1])


def decompositions():
    """``{OpOverload: composite}`` for ``ExportedProgram.run_decompositions``: the forward
    ``dcdc`` operators as the exact PyTorch composite of :mod:`dcdc.layers.ops`."""
    return {
        torch.ops.dcdc.lsa_aggregate.default: _lsa_aggregate_composite,
        torch.ops.dcdc.lsa_generate_aggregate.default: _lsa_generate_aggregate_composite,
        torch.ops.dcdc.depthwise_conv.default: _depthwise_conv_composite,
    }


def decompose(exported_program):
    """``exported_program`` with every forward ``dcdc`` operator replaced by aten operators
    (and torch.export's default decompositions applied)."""
    table = torch.export.default_decompositions()
    table.update(decompositions())
    program = exported_program.run_decompositions(table)
    left = sorted({str(n.target) for n in program.graph.nodes
                   if n.op == "call_function" and str(n.target).startswith("dcdc.")})
    if left:
        raise RuntimeError(f"operators {left} have no decomposition in dcdc.export.decompositions(); "
                           "an inference graph must not contain them (backward operators?).")
    return program


def export_onnx(model, args, f=None, *, dynamo=True, dynamic_shapes=None, input_names=None,
                output_names=None, dynamic_axes=None, opset_version=None, **kwargs):
    """``torch.onnx.export`` of a module that runs ``dcdc`` operators, with standard ONNX ops.

    ``dynamo=True``: ``torch.export.export(model, args, dynamic_shapes=...)``, the ``dcdc``
    operators decomposed (:func:`decompose`), then ``torch.onnx.export`` of that program; returns
    its ``ONNXProgram`` (saved to ``f`` when given). ``dynamo=False``: the TorchScript-based
    exporter with the symbolics of :func:`register_onnx_symbolics` and ``dynamic_axes``; needs
    ``f``. Other keyword arguments go to ``torch.onnx.export``.
    """
    args = args if isinstance(args, tuple) else (args,)
    if dynamo:
        if dynamic_axes is not None:
            raise ValueError("dynamic_axes is the dynamo=False exporter's argument; with "
                             "dynamo=True give dynamic_shapes (torch.export.Dim), or dynamo=False.")
        program = torch.export.export(model, args, dynamic_shapes=dynamic_shapes, strict=False)
        onnx_program = torch.onnx.export(decompose(program), args, dynamo=True,
                                         input_names=input_names, output_names=output_names,
                                         opset_version=opset_version, **kwargs)
        if f is not None:
            onnx_program.save(f)
        return onnx_program
    if f is None:
        raise ValueError("dynamo=False writes the model to f: give a path or a file object.")
    if dynamic_shapes is not None:
        raise ValueError("dynamic_shapes is the dynamo=True exporter's argument; with "
                         "dynamo=False give dynamic_axes.")
    with deployment_tracing():
        torch.onnx.export(model, args, f, dynamo=False, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes,
                          opset_version=opset_version, **kwargs)
    return None
