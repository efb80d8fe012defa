"""Which code runs a DCDC call: the one module that decides.

Every other file of :mod:`dcdc.layers` asks here; nothing else reads ``DCDC_BACKEND``,
``DCDC_TRITON_KERNELS``, ``TRITON_INTERPRET``, autocast, the grad mode or whether a graph is
being recorded. A decision has two parts.

**The mode** of a call (:func:`mode`), from how it is recorded and what it must support:

* ``count``: a ``torch.jit.trace`` outside :func:`deployment_tracing` (fvcore's FLOP counter,
  ``torch.onnx.export(..., dynamo=False)``). The layers record plain convs (the generators' 1x1
  convs, GSI's) and ``dcdc::lsa_aggregate``: what FLOP counters count; under the ONNX exporter
  (:func:`onnx_tracing`) Eq. 5 as the composite's aten ops, which it converts.
* ``graph``: :func:`deployment_tracing`, ``torch.compile``, ``torch.export`` (the default
  ``torch.onnx.export``). Functional GEMM forms, ``dcdc::lsa_generate_aggregate`` and
  ``dcdc::depthwise_conv`` (recorded through their fake kernels).
* ``autograd``: eager, grad enabled and a tensor that requires grad. Functional GEMM forms and
  the ``dcdc`` ops' autograd.
* ``autocast``: eager inference under ``torch.autocast`` for x's device. Functional, in the
  autocast dtype: no float32-only kernel, no in-place sum.
* ``inference``: eager, nothing needs a gradient, no autocast. Norms folded into the convs,
  in-place sums, and on CPU float32 with the native kernels the fused inference ops.

**The kernels** of a ``dcdc`` op call (:func:`kernel_backend`), from the device, the dtype,
``DCDC_BACKEND`` and what is installed:

* ``auto`` (default): CPU tensors run the native kernels ``dcdc._C`` when they were built, CUDA
  tensors the Triton kernels when Triton is importable; everything else the PyTorch composite.
* ``native``: the C++ kernels (CPU tensors only; built at install time).
* ``triton``: the Triton kernels (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``,
  Triton's interpreter, which is how CI checks the GPU kernels without a GPU). They sum in
  float32, so float64 runs the composite instead, exactly. ``DCDC_TRITON_KERNELS`` picks the
  family (:func:`triton_family`: ``simple``, one output element per thread, the default until a
  GPU run has timed both; ``tiled``, a group's channels per program).
* ``torch``: the exact PyTorch composite (:func:`.ops.lsa_aggregate_composite`), on any device.

An unknown value, or a backend that cannot run the given tensors, raises ``RuntimeError``
naming the choices.

**The table.** Together they give the path of a call, :func:`plan` of its :class:`Facts`; every
site of the layers asks ``plan`` through the functions below. :data:`TABLE` spells the whole
decision out for ``DCDCConv2d`` with its GSI branch (the paper's operator; LSA-only and
involution take the same rows minus the GSI); ``tests/test_dispatch.py`` checks ``plan``
against every row and runs every CPU row (every CUDA row where a GPU is present) through
:func:`explain`. Shape limits: the native fused ops need maps at least :data:`NATIVE_MIN_WIDTH`
wide (``wide``), the native depth-wise conv K in :data:`NATIVE_DEPTHWISE_SIZES`, stride 1;
non-contiguous maps run the module convs. So, for ``DCDCConv2d(64)``: CPU float32 in eval
without autograd runs ``dcdc::lsa_gsi_inference`` with ``dcdc::pointwise_inference``; under
CPU bf16 autocast, GEMMs and the native aggregation in bf16; with a gradient, GEMMs and the
native fused generation with its autograd; on CUDA in bf16, cuDNN convs and the Triton
kernels; inside ``torch.export``, GEMM forms and ``dcdc::lsa_generate_aggregate`` /
``dcdc::depthwise_conv`` (their fake kernels at export, the same kernels at run time).

Inference fusion is decided here, not by an explicit model-rewriting step: the ``inference``
rows fold norms and fuse kernels at call time from the module's own parameters, so a model is
the same object for training, evaluation, export and ``torch.compile`` (no second set of weights
to keep in sync), and leaving the ``inference`` mode (a trace, autocast, a gradient) gives the
unfused math with no step to undo.

**Seeing the choice**: :func:`explain` runs a call and returns every decision it made;
``DCDC_LOG_DISPATCH=1`` logs each distinct decision once (logger ``dcdc.layers.dispatch``).
"""
import contextlib
import functools
import importlib.util
import logging
import os
from dataclasses import dataclass

import torch

__all__ = ["MODES", "BACKENDS", "TRITON_KERNELS", "TABLE", "Facts", "Path", "plan", "facts",
           "mode", "explain", "deployment_tracing", "counting", "onnx_tracing", "propagating_shapes",
           "resolve_backend",
           "triton_family", "native_available", "triton_available", "kernel_backend",
           "fused_generation", "native_depthwise", "compute_dtype", "fused_operator", "depthwise_form",
           "native_pointwise", "conv1x1_form", "fast_inference", "NATIVE_MIN_WIDTH",
           "NATIVE_DEPTHWISE_SIZES"]

logger = logging.getLogger(__name__)

MODES = ("count", "graph", "autograd", "autocast", "inference")
BACKENDS = ("auto", "native", "triton", "torch")  # the first of each tuple is the default
BACKEND_VAR = "DCDC_BACKEND"
TRITON_KERNELS = ("simple", "tiled")  # the Triton kernel families (.triton_kernels)
FAMILY_VAR = "DCDC_TRITON_KERNELS"
LOG_VAR = "DCDC_LOG_DISPATCH"
# The native float32 kernels work in tiles of 16 output columns (TW in csrc/simd.h); the fused
# entry points need maps at least that wide.
NATIVE_MIN_WIDTH = 16
# Kernel sizes the native depth-wise conv is compiled for (csrc/depthwise_conv.cpp).
NATIVE_DEPTHWISE_SIZES = (3, 5, 7)


# ----------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Facts:
    """What a decision depends on. ``dtype``: the dtype the call computes in (the autocast dtype
    under autocast); ``backend``: :func:`resolve_backend`'s answer for the device; ``wide``: the
    output maps are at least NATIVE_MIN_WIDTH wide."""
    mode: str
    device: str
    dtype: str
    backend: str
    wide: bool


@dataclass(frozen=True)
class Path:
    """What ``DCDCConv2d`` runs (see the table): ``operator`` fused / branches / counted;
    ``kernels`` of the dcdc aggregation ops; ``convs``: the forms of the 1x1 convs (pointwise /
    gemm / module); ``depthwise``: of the generators' depth-wise convs (dcdc / pointwise /
    module)."""
    operator: str
    kernels: str
    convs: tuple
    depthwise: tuple


def generation_kernels(device, dtype, wide, backend):
    """The kernels of ``dcdc::lsa_generate_aggregate`` / ``dcdc::lsa_aggregate``."""
    if backend == "native" and dtype == "float32" and wide:
        return "native fused generation"   # kernels made row by row in cache, never stored
    if backend == "triton" and dtype not in _TRITON_DTYPE_NAMES:
        return "torch"                     # float64: Triton's float32 sums would round
    return backend


def plan(f):
    """The path for :class:`Facts` ``f`` (a ``DCDCConv2d`` with the dynamic 1x1 GSI)."""
    cpu, f32, native = f.device == "cpu", f.dtype == "float32", f.backend == "native"
    fused = f.mode == "inference" and cpu and f32 and native and f.wide
    if fused:
        operator, kernels = "fused", "native"
    else:
        operator = "counted" if f.mode == "count" else "branches"
        # counted: the generator's last 1x1 conv is a conv, then dcdc::lsa_aggregate
        kernels = generation_kernels(f.device, f.dtype, f.wide and f.mode != "count", f.backend)
    if not cpu or f.mode == "count":
        convs = ("module",)
    elif f.mode == "inference" and f32 and native:
        # unfused, GSI's expansion (one C x m matrix per sample) is a GEMM summed into LSA's
        convs = ("pointwise",) if fused else ("gemm", "pointwise")
    else:
        convs = ("gemm",)
    if not cpu or not f32 or f.mode in ("count", "autocast"):
        depthwise = ("module",)
    elif "pointwise" in convs:   # the first inside the pointwise pass, the second alone
        depthwise = ("dcdc", "pointwise")
    else:
        depthwise = ("dcdc",)
    return Path(operator, kernels, convs, depthwise)


_TRITON_DTYPE_NAMES = ("float32", "float16", "bfloat16")
# DCDCConv2d(C) with the dynamic 1x1 GSI, DCDC_BACKEND=auto, the native kernels built, Triton
# installed. Read a row as: under <mode>, on <device> in <dtype>, with <backend> (what auto
# resolves to), maps wide or not -> operator / kernels / 1x1 convs / depth-wise convs.
# fused: dcdc::lsa_gsi_inference (LSA + GSI in one native pass, GSI's term added per tile);
# branches: LSA by dcdc::lsa_generate_aggregate, GSI by one GEMM per sample summed into it;
# counted: conv -> dcdc::lsa_aggregate, GSI's dynamic conv and expansion as convs;
# pointwise: dcdc::pointwise_inference (depth-wise, 1x1 conv, folded norm, ReLU in one pass);
# gemm: one GEMM on the (B, C, H*W) view, norm folded when it uses running statistics;
# module: the detectron2 Conv2d itself; dcdc: dcdc::depthwise_conv (native NCHW kernel).
TABLE = (
    # (mode, device, dtype, backend, wide) -> (operator, kernels, 1x1 convs, depth-wise convs)
    (("inference", "cpu", "float32", "native", True),
     ("fused", "native", ("pointwise",), ("dcdc", "pointwise"))),
    (("inference", "cpu", "float32", "native", False),
     ("branches", "native", ("gemm", "pointwise"), ("dcdc", "pointwise"))),
    (("inference", "cpu", "float32", "torch", True),
     ("branches", "torch", ("gemm",), ("dcdc",))),
    (("inference", "cpu", "bfloat16", "native", True),
     ("branches", "native", ("gemm",), ("module",))),
    (("inference", "cpu", "float64", "native", True),
     ("branches", "native", ("gemm",), ("module",))),
    (("autocast", "cpu", "bfloat16", "native", True),
     ("branches", "native", ("gemm",), ("module",))),
    (("autograd", "cpu", "float32", "native", True),
     ("branches", "native fused generation", ("gemm",), ("dcdc",))),
    (("autograd", "cpu", "float32", "native", False),
     ("branches", "native", ("gemm",), ("dcdc",))),
    (("autograd", "cpu", "float64", "native", True),
     ("branches", "native", ("gemm",), ("module",))),
    (("autograd", "cpu", "bfloat16", "native", True),
     ("branches", "native", ("gemm",), ("module",))),
    (("count", "cpu", "float32", "native", True),
     ("counted", "native", ("module",), ("module",))),
    (("graph", "cpu", "float32", "native", True),
     ("branches", "native fused generation", ("gemm",), ("dcdc",))),
    (("inference", "cuda", "float32", "triton", True),
     ("branches", "triton", ("module",), ("module",))),
    (("inference", "cuda", "float64", "triton", True),
     ("branches", "torch", ("module",), ("module",))),
    (("autocast", "cuda", "bfloat16", "triton", True),
     ("branches", "triton", ("module",), ("module",))),
    (("autograd", "cuda", "float32", "triton", True),
     ("branches", "triton", ("module",), ("module",))),
    (("autograd", "cuda", "bfloat16", "triton", True),
     ("branches", "triton", ("module",), ("module",))),
    (("graph", "cuda", "bfloat16", "triton", True),
     ("branches", "triton", ("module",), ("module",))),
    (("inference", "cuda", "float32", "torch", True),
     ("branches", "torch", ("module",), ("module",))),
)


# ----------------------------------------------------------------------------- recording
_records = []       # stacks of lists, one per explain() in progress
_logged = set()


def _note(site, choice, why=""):
    """Record one decision for :func:`explain`, and log it once if ``DCDC_LOG_DISPATCH`` is set."""
    if _records:
        _records[-1].append((site, choice, why))
    if os.environ.get(LOG_VAR, "0") not in ("", "0") and (site, choice, why) not in _logged:
        _logged.add((site, choice, why))
        logger.info(f"{site}: {choice}" + (f" ({why})" if why else ""))
    return choice


def explain(module, *inputs):
    """Run ``module(*inputs)`` and return ``(output, decisions)``: each decision a
    ``(site, choice, why)`` of this module, in call order (a module with several operators
    reports each). Call it under the conditions to explain (``torch.no_grad()``, an autocast
    context, ...), as the real call would run."""
    _records.append([])
    try:
        out = module(*inputs)
    finally:
        decisions = _records.pop()
    return out, decisions


# ----------------------------------------------------------------------------- mode
_deployment_traces = 0


@contextlib.contextmanager
def deployment_tracing():
    """JIT traces inside record the ``graph`` rows (what a deployed model runs), not the
    ``count`` rows."""
    global _deployment_traces
    _deployment_traces += 1
    try:
        yield
    finally:
        _deployment_traces -= 1


def counting():
    """Whether this call is being JIT-traced to be counted (the ``count`` mode)."""
    return torch.jit.is_tracing() and not _deployment_traces


def onnx_tracing():
    """Whether the TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``) is
    tracing this call: it converts each traced op by its symbolic, so the aggregation records
    :func:`.ops.lsa_aggregate_composite`'s aten ops there instead of the opaque ``dcdc`` ops."""
    return torch.jit.is_tracing() and torch.onnx.is_in_onnx_export()


def propagating_shapes(x):
    """Whether ``x`` is a FakeTensor only propagating shapes, no graph being recorded (FakeTensor
    runs a decomposition of the ``dcdc`` ops there when sizes are symbolic): the exporters'
    decompositions then return the fake kernels' result instead of tracing Eq. 5's K^2 taps."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return isinstance(x, torch._subclasses.FakeTensor) and get_proxy_mode() is None


def _needs_grad(tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _tensors(items):
    for item in items:
        if isinstance(item, torch.nn.Module):
            yield from item.parameters()
        elif item is not None:
            yield item


def mode(x, *others):
    """The mode of a call on ``x``; ``others``: tensors and modules (their parameters) whose
    gradients it would carry."""
    if torch.jit.is_tracing():
        return "graph" if _deployment_traces else "count"
    if torch.compiler.is_compiling():
        return "graph"
    if _needs_grad((x, *_tensors(others))):
        return "autograd"
    if torch.is_autocast_enabled(x.device.type):
        return "autocast"
    return "inference"


# ----------------------------------------------------------------------------- kernels
def native_available():
    """Whether the native CPU kernels ``dcdc._C`` were built and import."""
    from . import ops

    return ops.native_available()


@functools.lru_cache(maxsize=None)
def triton_available():
    """Whether Triton is installed (it ships with the CUDA builds of torch)."""
    return importlib.util.find_spec("triton") is not None


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _env_choice(var, choices, what):
    """The value of the environment variable ``var`` (``choices[0]`` when unset or empty),
    checked against ``choices``; ``what`` names a valid value in the error."""
    value = os.environ.get(var, "").strip().lower() or choices[0]
    if value not in choices:
        raise RuntimeError(
            f"{var}={os.environ[var]!r} is not {what}; choose one of {', '.join(choices)} (or "
            f"unset it for {choices[0]})."
        )
    return value


def triton_family():
    """The Triton kernel family ``DCDC_TRITON_KERNELS`` names (``simple`` when unset)."""
    return _env_choice(FAMILY_VAR, TRITON_KERNELS, "a family of DCDC Triton kernels")


def resolve_backend(device):
    """The backend ``DCDC_BACKEND`` gives tensors on ``device``: native, triton or torch."""
    value = _env_choice(BACKEND_VAR, BACKENDS, "a DCDC backend")
    if value == "auto":
        if device.type == "cpu" and native_available():
            return "native"
        if device.type == "cuda" and triton_available():
            return "triton"
        return "torch"
    if value == "native" and not (device.type == "cpu" and native_available()):
        why = ("dcdc._C was not built (reinstall with a C++ compiler, DCDC_BUILD_NATIVE=1)"
               if not native_available() else f"it runs CPU tensors only, got {device.type}")
        raise RuntimeError(f"{BACKEND_VAR}=native cannot run: {why}; choose one of "
                           f"{', '.join(BACKENDS)}.")
    if value == "triton":
        if not triton_available():
            raise RuntimeError(f"{BACKEND_VAR}=triton cannot run: triton is not installed; "
                               f"choose one of {', '.join(BACKENDS)}.")
        if device.type == "cpu" and not _interpreting():
            raise RuntimeError(
                f"{BACKEND_VAR}=triton got CPU tensors: Triton runs them only in its "
                "interpreter, set TRITON_INTERPRET=1 before Triton is imported (or use "
                "DCDC_BACKEND=auto / native / torch for CPU tensors)."
            )
        if device.type not in ("cpu", "cuda"):
            raise RuntimeError(f"{BACKEND_VAR}=triton runs CUDA tensors, got {device.type}; "
                               f"choose one of {', '.join(BACKENDS)}.")
    return value


def kernel_backend(x):
    """The kernels of ``dcdc::lsa_aggregate`` for ``x`` (:func:`generation_kernels`, whose
    native fused generation does not apply to given kernels)."""
    which = generation_kernels(x.device.type, _name(x.dtype), False, resolve_backend(x.device))
    return _note("kernels", which, f"{x.device.type} {_name(x.dtype)}")


def fused_generation(x, hidden, weight, bias):
    """Whether ``dcdc::lsa_generate_aggregate`` runs the native fused kernel; else it generates
    the kernels by one bmm and aggregates them on :func:`kernel_backend`'s kernels."""
    dtypes = {t.dtype for t in (x, hidden, weight, bias) if t is not None}
    which = generation_kernels(x.device.type, _name(x.dtype) if len(dtypes) == 1 else "mixed",
                               hidden.shape[-1] >= NATIVE_MIN_WIDTH and x.shape[0] > 0,
                               resolve_backend(x.device))
    _note("kernels", which, f"{x.device.type} {_name(x.dtype)}")
    return which == "native fused generation"


def native_depthwise(x, weight):
    """Whether ``dcdc::depthwise_conv`` runs its native kernel (else ``F.conv2d``)."""
    return (resolve_backend(x.device) == "native" and x.dtype == torch.float32
            and x.numel() > 0 and weight.shape[-1] in NATIVE_DEPTHWISE_SIZES)


# ----------------------------------------------------------------------------- module paths
def _name(dtype):
    return str(dtype).replace("torch.", "")


def compute_dtype(x, *tensors):
    """The dtype a ``dcdc`` op on ``x`` and ``tensors`` computes in: under autocast for x's
    device, the autocast dtype (no silent upcast to float32) unless an input is float64, which
    autocast leaves alone as PyTorch's own ops do; else the promoted dtype of the inputs."""
    dtype = x.dtype
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    if torch.is_autocast_enabled(x.device.type) and dtype != torch.float64:
        return torch.get_autocast_dtype(x.device.type)
    return dtype


def facts(x, *others, wide=True):
    """The :class:`Facts` of a call on ``x`` (``others``: tensors and modules whose gradients it
    would carry)."""
    return Facts(mode(x, *others), x.device.type, _name(compute_dtype(x)),
                 resolve_backend(x.device), wide)


def fused_operator(module, x):
    """Whether ``DCDCConv2d`` runs ``dcdc::lsa_gsi_inference`` (the ``fused`` rows), for an
    operator with the dynamic 1x1 GSI and parameters in x's dtype."""
    gsi = module.gsi
    f = facts(x, module, wide=x.shape[0] > 0
              and -(-x.shape[-1] // module.stride) >= NATIVE_MIN_WIDTH)
    operator = plan(f).operator
    if operator == "fused" and (gsi is None or not gsi.dynamic or gsi.kernel_size != 1
                                or any(p.dtype != x.dtype for p in module.parameters())):
        operator = "branches"
    _note("operator", operator, f"{f.mode} {f.device} {f.dtype}")
    if operator == "fused":
        _note("kernels", "native", f"{f.device} {f.dtype}")
    return operator == "fused"


def _depthwise_op_fits(conv, x):
    k = conv.weight.shape[-1]
    return ("dcdc" in plan(facts(x, conv)).depthwise and x.dim() == 4 and x.numel() > 0
            and conv.weight.dtype == x.dtype and conv.bias is None
            and getattr(conv, "norm", None) is None and getattr(conv, "activation", None) is None
            and conv.groups == conv.in_channels == conv.out_channels == x.shape[1]
            and tuple(conv.weight.shape[-2:]) == (k, k) and k in NATIVE_DEPTHWISE_SIZES
            and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (k // 2, k // 2)
            and tuple(conv.dilation) == (1, 1) and conv.padding_mode == "zeros")


def depthwise_form(conv, x):
    """``"dcdc"`` (``dcdc::depthwise_conv``, a native NCHW kernel: oneDNN reorders NCHW maps
    into a blocked layout and back around each depth-wise conv) or ``"module"`` (``conv(x)``)
    for a generator's depth-wise conv; the op also needs its geometry (K in
    NATIVE_DEPTHWISE_SIZES, stride 1, zero padding K // 2, no bias / norm / activation)."""
    return _note("depthwise", "dcdc" if _depthwise_op_fits(conv, x) else "module")


def native_pointwise(conv, x, depthwise=None, folds=True):
    """Whether ``conv(depthwise(x))`` runs ``dcdc::pointwise_inference`` (the depth-wise conv,
    the 1x1 conv, its folded norm and ReLU in one native pass; the ``pointwise`` rows).
    ``folds``: the conv's norm, if any, folds (running statistics) and its activation, if any,
    is a ReLU."""
    ok = (x.is_contiguous() and x.numel() > 0 and folds and conv.weight.dtype == x.dtype
          and "pointwise" in plan(facts(x, conv, depthwise)).convs
          and (depthwise is None or _depthwise_op_fits(depthwise, x)))
    if ok:
        _note("convs", "pointwise")
        if depthwise is not None:
            _note("depthwise", "pointwise")
    return ok


def conv1x1_form(conv, x):
    """``"gemm"`` (one GEMM on the (B, C, H*W) view of contiguous CPU maps: none of oneDNN's
    NCHW <-> blocked reorders around the generators' narrow 1x1 convs) or ``"module"``
    (``conv(x)``) for a 1x1 conv that :func:`native_pointwise` does not take."""
    form = "module"
    if x.is_contiguous() and x.numel() > 0 and plan(facts(x, conv)).convs != ("module",):
        form = "gemm"
    return _note("convs", form)


def fast_inference(x, *others):
    """Whether eager CPU code may fold norms into convs and overwrite fresh intermediates (the
    ``inference`` mode): not with autograd (a custom op's output may not be modified), in graphs
    (functional) nor under autocast (in-place ops do not cast their inputs)."""
    return x.device.type == "cpu" and mode(x, *others) == "inference"
