"""dcdc.layers.dispatch: the one decision of which code runs a DCDC call.

* every row of the decision table is what ``plan`` decides;
* every CPU row (and every CUDA row where a GPU is present) runs a real ``DCDCConv2d(64)`` call
  under its condition, and ``explain`` reports the row's path at each site;
* the operator equals its float64 twin under every eager condition a user can put it in
  (train / eval, grad / no_grad / inference_mode, autocast on / off, float32 / bfloat16 /
  float64 input, contiguous / channels_last / strided views);
* ``DCDC_LOG_DISPATCH=1`` logs the decisions.
"""
import copy
import itertools
import logging
from contextlib import nullcontext

import pytest
import torch

from dcdc.layers import DCDCConv2d, dispatch
from dcdc.layers.dispatch import TABLE, Facts, Path

SITES = ("operator", "kernels", "convs", "depthwise")
HEIGHT = 12


def _rows(device):
    return [(c, a) for c, a in TABLE if c[1] == device]


def _id(row):
    return "-".join(str(v) for v in row[0])


@pytest.mark.parametrize("row", TABLE, ids=_id)
def test_plan_is_the_table(row):
    condition, answer = row
    assert dispatch.plan(Facts(*condition)) == Path(*answer)


def _module(dtype, device):
    torch.manual_seed(0)
    module = DCDCConv2d(64).eval().to(device)
    with torch.no_grad():  # running statistics that are not the identity
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
    return module.to(dtype)


def _run_row(condition, monkeypatch):
    """``explain`` of one call of DCDCConv2d(64) under ``condition``; the decisions per site."""
    mode, device, dtype, backend, wide = condition
    if backend == "torch":
        monkeypatch.setenv("DCDC_BACKEND", "torch")
    compute = getattr(torch, dtype)
    module = _module(torch.float32 if mode == "autocast" else compute, device)
    x = torch.randn(2, 64, HEIGHT, 20 if wide else 12, device=device,
                    dtype=torch.float32 if mode == "autocast" else compute)
    if mode == "autograd":
        x.requires_grad_()
    context = {"inference": torch.no_grad(), "autograd": nullcontext(),
               "autocast": torch.autocast(device, dtype=compute),
               "count": torch.no_grad(), "graph": dispatch.deployment_tracing()}[mode]
    # check_trace=False: the check would run the module again, eagerly
    call = ((lambda t: torch.jit.trace(module, t, check_trace=False))
            if mode in ("count", "graph") else module)
    with context, (torch.no_grad() if mode == "autocast" else nullcontext()):
        _, decisions = dispatch.explain(call, x)
    seen = {site: set() for site in SITES}
    for site, choice, _ in decisions:
        seen[site].add(choice)
    return seen


def _expected(answer):
    operator, kernels, convs, depthwise = answer
    return {"operator": {operator}, "kernels": {kernels}, "convs": set(convs),
            "depthwise": set(depthwise)}


@pytest.mark.parametrize("row", _rows("cpu"), ids=_id)
def test_cpu_rows_run_as_planned(row, monkeypatch):
    if row[0][3] == "native" and not dispatch.native_available():
        pytest.skip("dcdc._C not built (no compiler at install)")
    assert _run_row(row[0], monkeypatch) == _expected(row[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("row", _rows("cuda"), ids=_id)
def test_cuda_rows_run_as_planned(row, monkeypatch):
    if row[0][3] == "triton" and not dispatch.triton_available():
        pytest.skip("triton not installed")
    assert _run_row(row[0], monkeypatch) == _expected(row[1])


def test_every_row_answers_the_issue_questions():
    """The questions a reader asks of DCDCConv2d(64), answered by rows of the table."""
    assert dispatch.plan(Facts("inference", "cpu", "float32", "native", True)).operator == "fused"
    assert dispatch.plan(Facts("autocast", "cpu", "bfloat16", "native", True)).convs == ("gemm",)
    assert (dispatch.plan(Facts("autograd", "cpu", "float32", "native", True)).kernels
            == "native fused generation")
    assert dispatch.plan(Facts("autocast", "cuda", "bfloat16", "triton", True)).kernels == "triton"
    assert dispatch.plan(Facts("graph", "cpu", "float32", "native", True)).operator == "branches"


# ----------------------------------------------------------------------------- every condition
def _layout(x, kind):
    if kind == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if kind == "strided":  # a view: every other column of a wider map
        wide = torch.zeros(*x.shape[:3], 2 * x.shape[3], dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x


TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 6e-2}
CONDITIONS = list(itertools.product(
    ("eval", "train"), ("grad", "no_grad", "inference_mode"), (False, True),
    (torch.float32, torch.bfloat16, torch.float64), ("contiguous", "channels_last", "strided")))


@pytest.mark.parametrize("train,grad,autocast,dtype,layout", CONDITIONS,
                         ids=["-".join(map(str, c)).replace("torch.", "") for c in CONDITIONS])
def test_every_eager_condition_equals_float64(train, grad, autocast, dtype, layout):
    torch.manual_seed(0)
    base = _module(torch.float32, "cpu").train(train == "train")
    x32 = torch.randn(2, 64, HEIGHT, 20)
    # the reference: the same weights in float64, the same mode (batch statistics in train)
    want = copy.deepcopy(base).double()(x32.double().to(dtype).double())
    # a float32 model under autocast (how users speed up inference); else a model in x's dtype
    # (autocast leaves float64 alone, as PyTorch's own ops do)
    module = copy.deepcopy(base).to(torch.float32 if autocast and dtype != torch.float64
                                    else dtype)
    x = _layout(x32.to(dtype), layout)
    if grad == "grad":
        x.requires_grad_()
    context = {"grad": nullcontext(), "no_grad": torch.no_grad(),
               "inference_mode": torch.inference_mode()}[grad]
    with context, (torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()):
        got = module(x)
    low = torch.bfloat16 if dtype == torch.bfloat16 or (autocast and dtype != torch.float64) \
        else dtype
    scale = want.abs().max().item()
    err = (got.double() - want.detach()).abs().max().item()
    assert err <= TOLERANCE[low] * scale, (err, scale)
    if grad == "grad":
        got.float().square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_debug_log_names_each_decision_once(monkeypatch, caplog):
    monkeypatch.setenv("DCDC_LOG_DISPATCH", "1")
    monkeypatch.setattr(dispatch, "_logged", set())
    module = _module(torch.float32, "cpu")
    with caplog.at_level(logging.INFO, logger="dcdc.layers.dispatch"), torch.no_grad():
        for _ in range(3):
            module(torch.randn(1, 64, HEIGHT, 20))
    lines = [r.getMessage() for r in caplog.records if r.name == "dcdc.layers.dispatch"]
    assert any(line.startswith("operator: ") for line in lines)
    assert len(lines) == len(set(lines))  # each distinct decision once, not once per call
