"""After ``import dcdc`` and nothing else, a plain ``torch.onnx.export`` exports the dcdc
operators with either exporter (``dynamo=True``, torch's default, and ``dynamo=False``), with
dynamic H and W. The one private hook this needs, torch's decomposition table that the dynamo
exporter reads, is checked here, so a torch upgrade that moves it fails loudly. The DCDC-ResNet-50
+ DCDC FPN backbone round trips are in test_export.py."""
import pytest
import torch

from dcdc.export import decompose, decompositions, register_onnx_exporters
from dcdc.layers import DCDCConv2d, ops
from dcdc.layers.dispatch import deployment_tracing

from helpers import assert_onnx_equals_eager


def test_dynamo_exporter_reads_the_dcdc_decompositions():
    """torch.onnx.export(dynamo=True) decomposes with this table before translating (torch
    2.14); if it moved, the import or the lookup fails here, not in a user's export."""
    from torch.onnx._internal.exporter import _decomp

    table = _decomp.create_onnx_friendly_decomposition_table(set())
    for op, fn in decompositions().items():
        assert table.get(op) is fn, op
    register_onnx_exporters()  # again, as a second import would: the same entries
    assert all(torch._decomp.decomposition_table[op] is fn for op, fn in decompositions().items())


def test_shape_propagation_does_not_trace_the_composite(monkeypatch):
    """torch.export with dynamic sizes propagates the ops by their fake kernels' results (the
    graph keeps the ops); run_decompositions traces the composite."""
    calls = []
    composite = ops.lsa_aggregate_composite
    monkeypatch.setattr(ops, "lsa_aggregate_composite",
                        lambda *a, **k: calls.append(1) or composite(*a, **k))
    dim = torch.export.Dim.DYNAMIC
    program = torch.export.export(DCDCConv2d(16).eval(), (torch.randn(1, 16, 24, 40),),
                                  dynamic_shapes=({2: dim, 3: dim},))
    assert not calls
    targets = {str(n.target) for n in program.graph.nodes}
    assert "dcdc.lsa_generate_aggregate.default" in targets
    decompose(program)
    assert calls


@pytest.mark.parametrize("exporter", ["dynamo_shapes", "dynamo_axes", "torchscript"])
def test_dcdc_conv_plain_onnx_export_equals_eager(tmp_path, exporter):
    """The issue's call, ``torch.onnx.export(DCDCConv2d(64).eval(), (x,), f)``, with the
    dynamic sizes a user passes; onnxruntime equals eager on another (odd) size."""
    torch.manual_seed(0)
    m = DCDCConv2d(64).eval()
    x = torch.randn(1, 64, 32, 48)
    path = tmp_path / "m.onnx"
    if exporter == "dynamo_shapes":
        dim = torch.export.Dim.DYNAMIC
        torch.onnx.export(m, (x,), path, dynamic_shapes=({2: dim, 3: dim},))
    else:
        torch.onnx.export(m, (x,), path, dynamo=exporter != "torchscript", input_names=["x"],
                          dynamic_axes={"x": {2: "h", 3: "w"}})
    assert_onnx_equals_eager(path, m, (x, torch.randn(1, 64, 41, 27)))


def test_torchscript_module_holding_the_ops_raises(tmp_path):
    """The aggregation ops have no ONNX symbolic (the eager module's trace records the composite
    instead); a TorchScript module that holds them is refused with what to do."""
    x = torch.randn(1, 16, 20, 20)
    with torch.no_grad(), deployment_tracing():
        traced = torch.jit.trace(DCDCConv2d(16).eval(), (x,))
    with pytest.raises(Exception, match="export the eager nn.Module"):
        torch.onnx.export(traced, (x,), tmp_path / "m.onnx", dynamo=False)
