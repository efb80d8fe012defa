from .resnet import DEPTHS, DCDCBottleneckBlock, DCDCStem, build_classifier, make_dcdc_stages
from .neck import NECKS, DCDCFPN, NeckOperator
from .init import resolve_scratch_init, scratch_init_, zero_init_last_norm_
from .backbone import (
    build_dcdc_fpn,
    build_dcdc_resnet,
    build_dcdc_resnet_backbone,
    build_dcdc_resnet_fpn_backbone,
    build_fpn,
    group_norm,
    build_retinanet_dcdc_resnet_fpn_backbone,
)
from .htc import FusedSemanticHead, HTCMaskHead, HybridTaskCascade, HybridTaskCascadeROIHeads

__all__ = [k for k in globals().keys() if not k.startswith("_")]
