"""The DCDC backbone helpers of the leaf configs (e.g. ``configs/mask_rcnn_dcdc_r50_dcdc_neck.py``).

They live in the installed package, :mod:`dcdc.model_zoo.backbone`, so that users' own
LazyConfigs can use them too (``from dcdc.model_zoo import use_dcdc_backbone``); this file only
re-exports them for the relative imports of the configs here (``from .common.dcdc import ...``).

Input format: ``use_dcdc_backbone`` makes the model take RGB images normalized with the ImageNet
mean / std (``PIXEL_MEAN`` / ``PIXEL_STD``), not detectron2's default BGR.
"""
from dcdc.model_zoo.backbone import (  # noqa: F401
    INPUT_FORMAT,
    PIXEL_MEAN,
    PIXEL_STD,
    dcdc_resnet,
    use_dcdc_backbone,
    use_dcdc_input_format,
)
