"""Which implementation runs the ``torch.ops.dcdc`` operators: the ``DCDC_BACKEND`` variable.

``DCDC_BACKEND`` is read at every call (so a test or a benchmark may change it between calls):

* ``auto`` (default): CPU tensors use the native kernels ``dcdc._C`` when they were built,
  CUDA tensors the Triton kernels when Triton is importable; everything else the PyTorch
  composite.
* ``native``: the C++ kernels ``dcdc._C`` (CPU tensors only; built at install time).
* ``triton``: the Triton kernels (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``,
  Triton's interpreter, which is how CI checks the GPU kernels without a GPU).
* ``torch``: the pure-PyTorch composite, on any device (exact, slower; the reference path).

The Triton kernels sum in float32, so float64 tensors that the ``triton`` backend would run
(CUDA tensors under ``auto``) run the composite instead, exactly (see :mod:`.ops`).

``DCDC_TRITON_KERNELS`` picks which family of Triton kernels the ``triton`` backend runs (read
at every call, by :func:`triton_family` only; see :mod:`.triton_kernels`):

* ``simple`` (default): one program per (sample, channel) and block of pixels, each output
  element computed alone (the reference kernels);
* ``tiled``: one program per (sample, group, pixel tile) with the group's channels in registers,
  tile size and num_warps autotuned on CUDA.

Both compute the same values (up to float32 rounding); the default stays ``simple`` until a GPU
run has timed both (``benchmarks/bench_aggregation.py --device cuda``).

Under a JIT trace (``torch.jit.trace``, the TorchScript-based ONNX exporter, fvcore's FLOP
counter), the layers record plain convs by default, the generator's last 1x1 conv before
``dcdc::lsa_aggregate`` and the depth-wise and narrow 1x1 convs as ``aten::_convolution``, which
FLOP counters count; inside :func:`deployment_tracing` they record what eager runs (the fused
and native ``dcdc`` ops, the GEMM form of the 1x1 convs), so that a traced model runs as fast
as the eager one. Both graphs compute the same values.

Eager CPU inference with the native backend (float32, nothing that needs a gradient) also runs
the generators' narrow 1x1 convs, with the depth-wise conv in front of the first one and their
folded norms and ReLUs, as one native pass each (``dcdc._C.pointwise_forward``, called from
:mod:`.dcdc_conv`); traced and compiled graphs hold the ``dcdc`` depth-wise op and the GEMMs it
stands for, with the same values.

A backend covers the cases it has kernels for (the native fused generation and depth-wise conv
need float32, for instance); the rest of an operator runs the PyTorch composite. An unknown
value, or a backend that cannot run the given tensors, raises ``RuntimeError`` naming the
choices.
"""
import contextlib
import functools
import importlib.util
import logging
import os

import torch

__all__ = ["BACKENDS", "TRITON_KERNELS", "native_available", "triton_available",
           "resolve_backend", "triton_family", "native", "deployment_tracing", "tracing_convs"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "native", "triton", "torch")  # the first of each tuple is the default
ENV_VAR = "DCDC_BACKEND"
TRITON_KERNELS = ("simple", "tiled")  # the Triton kernel families (.triton_kernels.FAMILIES)
FAMILY_VAR = "DCDC_TRITON_KERNELS"

try:  # built by setup.py when a C++ compiler is present; optional
    from .. import _C as native
except ImportError as e:  # not built, or built against another torch
    native = None
    logger.debug("dcdc._C not available (%s): CPU tensors use the PyTorch composite", e)


def native_available():
    """Whether the native CPU kernels ``dcdc._C`` were built and import."""
    return native is not None


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


def requested_backend():
    """The value of ``DCDC_BACKEND`` (``auto`` when unset), checked against :data:`BACKENDS`."""
    return _env_choice(ENV_VAR, BACKENDS, "a DCDC backend")


def resolve_backend(device):
    """The backend that runs tensors on ``device`` (a ``torch.device``): native, triton or torch."""
    value = requested_backend()
    if value == "auto":
        if device.type == "cpu" and native_available():
            return "native"
        if device.type == "cuda" and triton_available():
            return "triton"
        return "torch"
    if value == "native" and not (device.type == "cpu" and native_available()):
        why = ("dcdc._C was not built (reinstall with a C++ compiler, DCDC_BUILD_NATIVE=1)"
               if not native_available() else f"it runs CPU tensors only, got {device.type}")
        raise RuntimeError(f"{ENV_VAR}=native cannot run: {why}; choose one of "
                           f"{', '.join(BACKENDS)}.")
    if value == "triton":
        if not triton_available():
            raise RuntimeError(f"{ENV_VAR}=triton cannot run: triton is not installed; choose "
                               f"one of {', '.join(BACKENDS)}.")
        if device.type == "cpu" and not _interpreting():
            raise RuntimeError(
                f"{ENV_VAR}=triton got CPU tensors: Triton runs them only in its interpreter, "
                "set TRITON_INTERPRET=1 before Triton is imported (or use DCDC_BACKEND=auto / "
                "native / torch for CPU tensors)."
            )
        if device.type not in ("cpu", "cuda"):
            raise RuntimeError(f"{ENV_VAR}=triton runs CUDA tensors, got {device.type}; choose "
                               f"one of {', '.join(BACKENDS)}.")
    return value


def triton_family():
    """The Triton kernel family ``DCDC_TRITON_KERNELS`` names (``simple`` when unset)."""
    return _env_choice(FAMILY_VAR, TRITON_KERNELS, "a family of DCDC Triton kernels")


_deployment_traces = 0


@contextlib.contextmanager
def deployment_tracing():
    """JIT traces inside record the ``dcdc`` ops eager runs, not plain convs (see above)."""
    global _deployment_traces
    _deployment_traces += 1
    try:
        yield
    finally:
        _deployment_traces -= 1


def tracing_convs():
    """Whether this call is being traced to be counted: record plain convs, not fused ops."""
    return torch.jit.is_tracing() and not _deployment_traces
