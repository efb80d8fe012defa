"""The ``torch.ops.dcdc`` operators in ONNX, with standard ONNX operators only.

``import dcdc`` runs :func:`register_onnx_exporters`, after which a plain
``torch.onnx.export(module, (x,), ...)`` exports modules that run the operators with either
exporter of ``torch.onnx`` (onnxruntime and TensorRT's ONNX parser read the files: no custom
domain). Eq. 5 is written once, :func:`dcdc.layers.ops.lsa_aggregate_composite`; both exporters
write its aten ops (its strided slices end relative to the padded map's end, so H and W stay
dynamic):

* ``dynamo=True``, torch's default (``torch.export``, then aten ops translated to ONNX): the
  forward operators have decompositions (:func:`decompositions`: the composite, the generator's
  1x1 conv as a bmm, the depth-wise conv as a grouped ``conv2d``), registered where that
  exporter looks for them before translating (:func:`_register_decompositions`).
* ``dynamo=False``, the TorchScript-based exporter (the route of detectron2's
  ``TracingAdapter``): it traces the module and converts op by op. Inside its trace
  :func:`dcdc.layers.lsa_aggregate` / :func:`~dcdc.layers.lsa_generate_aggregate` run the
  composite instead of the operators (:mod:`dcdc.layers.aggregation`), so the trace holds aten
  ops; ``dcdc::depthwise_conv`` (which :func:`~dcdc.layers.dispatch.deployment_tracing` traces
  record) has a symbolic, a grouped ``Conv``. The aggregation operators' symbolics raise: they
  are reached only from a TorchScript module that already holds them (``torch.jit.trace``,
  ``torch.jit.load``), which cannot be re-traced; export the eager module instead.

:func:`export_onnx` exports a module (``torch.export`` with ``dynamic_shapes``, the operators
decomposed and checked gone, then ``torch.onnx.export``; or the TorchScript-based exporter
inside ``deployment_tracing``). The backward operators have no ONNX form: an exported graph is an
inference graph.
"""
import torch
import torch.nn.functional as F

from ..layers import ops
from ..layers import dispatch
from ..layers.dispatch import deployment_tracing

__all__ = ["ONNX_MIN_OPSET", "register_onnx_exporters", "register_onnx_symbolics",
           "decompositions", "decompose", "export_onnx"]

# Slice with steps (the strided taps of a stride-2 operator) exists from ONNX opset 10.
ONNX_MIN_OPSET = 10


def _check_opset(opset_version):
    if opset_version is not None and opset_version < ONNX_MIN_OPSET:
        raise RuntimeError(
            f"dcdc operators need ONNX opset >= {ONNX_MIN_OPSET} (strided Slice), got opset "
            f"{opset_version}; export with opset_version={ONNX_MIN_OPSET} or higher."
        )


# ---------------------------------------------------------------- dynamo=True: decompositions

def _lsa_aggregate(x, kernels, kernel_size, stride):
    _, out_h, out_w = ops.check_aggregate_inputs(x, kernels, kernel_size, stride)
    if dispatch.propagating_shapes(x):
        return x.new_empty(x.shape[0], x.shape[1], out_h, out_w)
    return ops.lsa_aggregate_composite(x, kernels, kernel_size, stride, functional=True)


def _lsa_generate_aggregate(x, hidden, weight, bias, kernel_size, stride):
    kernel_shape = ops.check_generator_inputs(x, hidden, weight, bias, kernel_size, stride)
    if dispatch.propagating_shapes(x):
        return x.new_empty(x.shape[0], x.shape[1], *kernel_shape[3:])
    kernels = ops.generate_kernels(hidden, weight, bias, kernel_shape[1])
    return ops.lsa_aggregate_composite(x, kernels, kernel_size, stride, functional=True)


def _depthwise_conv(x, weight):
    # contiguous as the operator's output is (the same strides where FakeTensor propagates it)
    return F.conv2d(x, weight, padding=weight.shape[-1] // 2, groups=x.shape[1]).contiguous()


def decompositions():
    """``{OpOverload: composite}`` for ``ExportedProgram.run_decompositions``: the forward
    ``dcdc`` operators in aten ops, Eq. 5 by :func:`dcdc.layers.ops.lsa_aggregate_composite`."""
    return {
        torch.ops.dcdc.lsa_aggregate.default: _lsa_aggregate,
        torch.ops.dcdc.lsa_generate_aggregate.default: _lsa_generate_aggregate,
        torch.ops.dcdc.depthwise_conv.default: _depthwise_conv,
    }


def _register_decompositions():
    """Put :func:`decompositions` into ``torch._decomp.decomposition_table``.

    Why there, a private module's table: ``torch.onnx.export(..., dynamo=True)`` decomposes the
    exported program, before translating it, with ``torch.export.default_decompositions()``
    plus every entry of ``torch._decomp.decomposition_table`` that has no ONNX translation
    (``create_onnx_friendly_decomposition_table`` in torch/onnx/_internal/exporter/_decomp.py,
    torch 2.14), and the public hooks are per call (``custom_translation_table``, which wants
    ONNX Script functions: Eq. 5 written again). ``torch._decomp.register_decomposition`` is how
    torch registers its own entries there. ``tests/test_export_registration.py`` fails if the
    exporter stops reading this table.

    FakeTensor prefers an entry of this table to an operator's fake kernel when sizes are
    symbolic (``torch.export`` with dynamic shapes, ``torch.compile(dynamic=True)``): there the
    decompositions check their inputs with the operators' own checks and return what the fake
    kernels return (:func:`dcdc.layers.dispatch.propagating_shapes`; tracing the composite's K^2 taps there doubled
    ``torch.export``'s time), and the recorded graph still holds the operators.
    ``torch.export``'s default ``run_decompositions`` does not use this table.
    """
    import torch._decomp

    table = torch._decomp.decomposition_table
    for op, fn in decompositions().items():
        if table.get(op) is not fn:  # idempotent; a reloaded module replaces its entries
            table.pop(op, None)
            torch._decomp.register_decomposition(op)(fn)


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


# ---------------------------------------------------------------- dynamo=False: symbolics

def _depthwise_conv_symbolic(g, x, weight):
    from torch.onnx import symbolic_helper

    sizes = [symbolic_helper._get_tensor_dim_size(weight, d) for d in (0, 3)]
    if None in sizes:
        raise RuntimeError(
            "ONNX export of dcdc::depthwise_conv needs the shape of its weight as constants, and "
            "the traced graph does not know it; export the module with torch.onnx.export."
        )
    channels, k = sizes
    return g.op("Conv", x, weight, group_i=channels, kernel_shape_i=[k, k],
                pads_i=[k // 2] * 4, strides_i=[1, 1], dilations_i=[1, 1])


def _traced_only_symbolic(name):
    def symbolic(g, *args):
        raise RuntimeError(
            f"dcdc::{name} has no ONNX symbolic: torch.onnx.export(..., dynamo=False) of the eager "
            "module traces the operator's PyTorch composite instead (dcdc.layers.aggregation), "
            "which a TorchScript module (torch.jit.trace / torch.jit.load) cannot do; export "
            "the eager nn.Module, or use dynamo=True."
        )

    return symbolic


_SYMBOLICS = {
    "dcdc::depthwise_conv": _depthwise_conv_symbolic,
    "dcdc::lsa_aggregate": _traced_only_symbolic("lsa_aggregate"),
    "dcdc::lsa_generate_aggregate": _traced_only_symbolic("lsa_generate_aggregate"),
}


def register_onnx_exporters():
    """Register the ``dcdc`` operators' ONNX forms with both ``torch.onnx`` exporters (run by
    ``import dcdc``; calling it again changes nothing): the decompositions for ``dynamo=True``
    and the symbolics for ``dynamo=False``, for every opset."""
    _register_decompositions()
    for name, fn in _SYMBOLICS.items():
        # opset 7 is the oldest the TorchScript exporter supports: it covers all newer ones
        torch.onnx.register_custom_op_symbolic(name, fn, 7)


# the name of the TorchScript exporter's registration in earlier versions
register_onnx_symbolics = register_onnx_exporters


# ---------------------------------------------------------------- export_onnx

def export_onnx(model, args, f=None, *, dynamo=True, dynamic_shapes=None, input_names=None,
                output_names=None, dynamic_axes=None, opset_version=None, **kwargs):
    """``torch.onnx.export`` of a module that runs ``dcdc`` operators, with standard ONNX ops.

    ``dynamo=True``: ``torch.export.export(model, args, dynamic_shapes=...)``, the ``dcdc``
    operators decomposed (:func:`decompose`, which raises if one is left), then
    ``torch.onnx.export`` of that program; returns its ``ONNXProgram`` (saved to ``f`` when
    given). ``dynamo=False``: the TorchScript-based exporter inside
    :func:`~dcdc.layers.dispatch.deployment_tracing`, with ``dynamic_axes``; needs ``f``. Other
    keyword arguments go to ``torch.onnx.export``. (A plain ``torch.onnx.export`` works as well,
    with either exporter: see the module's docstring.)
    """
    args = args if isinstance(args, tuple) else (args,)
    _check_opset(opset_version)
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
