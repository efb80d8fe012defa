"""dcdc's configs and LazyConfig helpers for users' own code, as ``detectron2.model_zoo``::

    from dcdc.model_zoo import get_config, get_config_file, use_dcdc_backbone

* :func:`get_config` / :func:`get_config_file`: this project's configs (``configs/`` of the
  repository, shipped in the package) by name, e.g. ``get_config("mask_rcnn_dcdc_r50.py")``;
* :func:`use_dcdc_backbone`: put a DCDC-ResNet (and optionally the DCDC / involution neck) into
  any detectron2 FPN detector's LazyConfig, e.g. one of ``detectron2.model_zoo.get_config``;
  :func:`dcdc_resnet`: the backbone's LazyCall alone.

**Input format**: DCDC backbones take RGB images normalized with the ImageNet mean / std
(:data:`PIXEL_MEAN`, :data:`PIXEL_STD`, 0-255 scale), not detectron2's default BGR; the configs
and :func:`use_dcdc_backbone` set the data loaders and the model accordingly, but images you feed
``instantiate(cfg.model)`` yourself must be RGB.
"""
from .backbone import (
    INPUT_FORMAT,
    PIXEL_MEAN,
    PIXEL_STD,
    dcdc_resnet,
    use_dcdc_backbone,
    use_dcdc_input_format,
)
from .model_zoo import configs_dir, get_config, get_config_file, list_configs

__all__ = ["INPUT_FORMAT", "PIXEL_MEAN", "PIXEL_STD", "dcdc_resnet", "use_dcdc_backbone",
           "use_dcdc_input_format", "configs_dir", "get_config", "get_config_file",
           "list_configs"]
