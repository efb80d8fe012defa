"""The torch.library operators ``torch.ops.dcdc.*``: opcheck (schema, fake kernel, autograd
registration, AOT dispatch), the ``DCDC_BACKEND`` variable, traced node names and autocast."""
import pytest
import torch

from dcdc.layers import aggregation, lsa_aggregate, lsa_generate_aggregate
from dcdc.layers.ops import lsa_aggregate_composite
from dcdc.layers.dispatch import BACKENDS, resolve_backend, triton_available

CPU_BACKENDS = ["native", "torch"] if aggregation.native_available() else ["torch"]


def _aggregate_args(dtype, grad, batch=2, width=17):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 8, 5, width, generator=gen).to(dtype)
    kernels = torch.randn(batch, 2, 9, 3, -(-width // 2), generator=gen).to(dtype)
    return [x.requires_grad_(grad), kernels.requires_grad_(grad), 3, 2]


def _generate_args(dtype, grad, bias=True):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 6, 17, generator=gen).to(dtype)
    hidden = torch.randn(2, 4, 6, 17, generator=gen).to(dtype)
    weight = torch.randn(2 * 9, 4, generator=gen).to(dtype)
    b = torch.randn(2 * 9, generator=gen).to(dtype) if bias else None
    tensors = [t.requires_grad_(grad) if t is not None else None for t in (x, hidden, weight, b)]
    return [*tensors, 3, 1]


def _depthwise_args(dtype, grad):
    gen = torch.Generator().manual_seed(2)
    return [torch.randn(2, 4, 6, 17, generator=gen).to(dtype).requires_grad_(grad),
            torch.randn(4, 1, 3, 3, generator=gen).to(dtype).requires_grad_(grad)]


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck_forward_ops(backend, dtype, grad, monkeypatch):
    monkeypatch.setenv("DCDC_BACKEND", backend)
    torch.library.opcheck(torch.ops.dcdc.lsa_aggregate, _aggregate_args(dtype, grad))
    torch.library.opcheck(torch.ops.dcdc.lsa_generate_aggregate, _generate_args(dtype, grad))
    torch.library.opcheck(torch.ops.dcdc.lsa_generate_aggregate,
                          _generate_args(dtype, grad, bias=False))
    torch.library.opcheck(torch.ops.dcdc.depthwise_conv, _depthwise_args(dtype, grad))


@pytest.mark.parametrize("need", [(True, True), (True, False), (False, True)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck_backward_ops(backend, dtype, need, monkeypatch):
    monkeypatch.setenv("DCDC_BACKEND", backend)
    x, kernels, k, s = _aggregate_args(dtype, False)
    grad_out = torch.randn(2, 8, 3, 9).to(dtype)
    torch.library.opcheck(torch.ops.dcdc.lsa_aggregate_backward,
                          [grad_out, x, kernels, k, s, *need])
    x, hidden, weight, bias, k, s = _generate_args(dtype, False)
    torch.library.opcheck(torch.ops.dcdc.lsa_generate_aggregate_backward,
                          [torch.randn(2, 8, 6, 17).to(dtype), x, hidden, weight, bias, k, s,
                           need[0], need[1], need[1], need[0]])
    x, weight = _depthwise_args(dtype, False)
    torch.library.opcheck(torch.ops.dcdc.depthwise_conv_backward,
                          [torch.randn(x.shape).to(dtype), x, weight, *need])


def test_backward_ops_give_the_reference_gradients():
    """The backward ops are what autograd calls: compare them with autograd through the float64 composite."""
    x, kernels, k, s = _aggregate_args(torch.float64, True)
    grad_out = torch.randn(2, 8, 3, 9, dtype=torch.float64)
    lsa_aggregate_composite(x, kernels, k, s).backward(grad_out)
    grad_x, grad_kernels = torch.ops.dcdc.lsa_aggregate_backward(
        grad_out, x.detach(), kernels.detach(), k, s, True, False)
    torch.testing.assert_close(grad_x, x.grad)
    assert grad_kernels.shape == (0,)  # not asked for


def test_backend_variable_errors(monkeypatch):
    monkeypatch.setenv("DCDC_BACKEND", "cuda")
    x, kernels, k, s = _aggregate_args(torch.float32, False)
    with pytest.raises(RuntimeError, match="auto, native, triton, torch"):
        lsa_aggregate(x, kernels, k, s)
    if triton_available():
        monkeypatch.setenv("DCDC_BACKEND", "triton")
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            lsa_aggregate(x, kernels, k, s)
    monkeypatch.setenv("DCDC_BACKEND", "native")
    with pytest.raises(RuntimeError, match="native"):
        resolve_backend(torch.device("meta"))
    for value in BACKENDS:  # read at call time, case-insensitive
        monkeypatch.setenv("DCDC_BACKEND", value.upper())
        if value == "triton" or (value == "native" and not aggregation.native_available()):
            continue
        assert resolve_backend(torch.device("cpu")) in ("native", "torch")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backends_agree_with_reference(backend, monkeypatch):
    monkeypatch.setenv("DCDC_BACKEND", backend)
    x, hidden, weight, bias, k, s = _generate_args(torch.float32, False)
    kernels = torch.nn.functional.conv2d(hidden, weight[:, :, None, None], bias)
    expected = lsa_aggregate_composite(x.double(), kernels.double().view(2, 2, 9, 6, 17), k, s)
    torch.testing.assert_close(lsa_generate_aggregate(x, hidden, weight, bias, k, s).double(),
                               expected, rtol=1e-5, atol=1e-5)


def test_jit_trace_node_names():
    """FLOP counters (tools/analyze_model.py) key on these node names."""
    from dcdc.layers import DCDCConv2d

    traced = torch.jit.trace(DCDCConv2d(16, kernel_size=3).eval(), torch.randn(1, 16, 6, 20))
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "dcdc::lsa_aggregate" in kinds and "dcdc::lsa_generate_aggregate" not in kinds
    assert not any(kind.startswith("prim::PythonOp") for kind in kinds)


def test_autocast_runs_in_the_autocast_dtype():
    x, kernels, k, s = _aggregate_args(torch.float32, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lsa_aggregate(x, kernels, k, s)
        fused = lsa_generate_aggregate(*_generate_args(torch.float32, True))
    assert out.dtype == fused.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32  # autograd casts the gradient back to the leaf's dtype
    expected = lsa_aggregate_composite(x.detach().bfloat16().double(),
                                       kernels.detach().bfloat16().double(), k, s)
    assert (out.double() - expected).abs().max() <= 2e-2 * expected.abs().max()


def test_direct_op_call_checks_inputs():
    x, kernels, k, s = _aggregate_args(torch.float32, False)
    with pytest.raises(ValueError, match="one dtype"):
        torch.ops.dcdc.lsa_aggregate(x, kernels.double(), k, s)
    with pytest.raises(ValueError, match="H' = ceil"):
        torch.ops.dcdc.lsa_aggregate(x, kernels, k, 1)
