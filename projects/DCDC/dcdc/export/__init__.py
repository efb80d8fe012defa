"""Deployment: TorchScript and ONNX export of the DCDC operators, backbones and detectors.

* :mod:`.onnx_ops`: the ``dcdc`` operators in standard ONNX operators, for both ``torch.onnx``
  exporters, registered by ``import dcdc`` (a plain ``torch.onnx.export`` works), and
  :func:`export_onnx` for modules (``DCDCConv2d``, classifiers, backbones).
* :mod:`.detector`: detectron2 detectors by tracing (``TracingAdapter``), to TorchScript or ONNX,
  the exported model behind the eager interface for evaluation.
* :mod:`.cli`: ``tools/export_model.py``.
"""
from .detector import (  # noqa: F401
    ExportedDetector, OnnxRuntimeModel, OutputComparison, compare_outputs, export_onnx_detector,
    export_torchscript, match_detections, named_outputs, traceable_model,
)
from .onnx_ops import (  # noqa: F401
    ONNX_MIN_OPSET, decompose, decompositions, export_onnx, register_onnx_exporters,
    register_onnx_symbolics,
)
