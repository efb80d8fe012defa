"""DCDC for Detectron2: the Dual Complementary Dynamic Convolution operator and DCDC-ResNets."""
import importlib.util as _importlib_util

from . import data, export, layers, modeling  # noqa: F401
from . import model_zoo  # noqa: F401,E402  configs and LazyConfig helpers (after modeling)
from .config import add_dcdc_config, get_dcdc_cfg  # noqa: F401

# the dcdc operators in standard ONNX operators for torch.onnx.export, dynamo=True and False
export.register_onnx_exporters()

if _importlib_util.find_spec("timm") is not None:
    # registers dcdc_resnet*, lsa_resnet*, rednet* with timm's model registry
    from .modeling import timm_models  # noqa: F401

__version__ = "0.1.0"
