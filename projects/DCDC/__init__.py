"""DCDC for Detectron2: the Dual Complementary Dynamic Convolution operator and DCDC-ResNets."""
from . import data, layers, modeling  # noqa: F401
from .config import add_dcdc_config  # noqa: F401

__version__ = "0.1.0"
