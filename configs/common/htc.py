"""Hybrid Task Cascade R50-FPN (paper Table VI), the LazyConfig twin of htc_r50.yaml: Cascade
Mask R-CNN's model and 20-epoch schedule with HTC's ROI heads (dcdc/modeling/htc.py) on the
``coco_2017_*_htc`` datasets (COCO + stuff/thing maps from ``python -m dcdc.data.semantic --coco``).
"""
import copy

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler

from dcdc.modeling.htc import ROI_HEADS_DEFAULTS as _ROI_HEADS_DEFAULTS
from dcdc.modeling.htc import SEMANTIC_HEAD_DEFAULTS as _SEMANTIC
from dcdc.modeling.htc import (
    SEMANTIC_POOLER_RESOLUTION,
    FusedSemanticHead,
    HTCMaskHead,
    HybridTaskCascade,
    HybridTaskCascadeROIHeads,
)

from .cascade_mask_rcnn import dataloader, lr_multiplier, model, optimizer, train

model._target_ = HybridTaskCascade
roi_heads = model.roi_heads
roi_heads._target_ = HybridTaskCascadeROIHeads
mask_head = roi_heads.pop("mask_head")
mask_head._target_ = HTCMaskHead
mask_head.num_classes = "${...num_classes}"  # one level deeper: inside the list
# Stage 0 has no earlier mask features; stages 1 and 2 add them through a 1x1 conv.
roi_heads.mask_heads = [mask_head] + [copy.deepcopy(mask_head) for _ in range(2)]
for head in roi_heads.mask_heads[1:]:
    head.with_info_flow = "${...mask_info_flow}"
# HTC's settings: the heads' own defaults (dcdc/modeling/htc.py, also MODEL.HTC's), written into
# the config so that they show and can be overridden. FPN level pN has stride 2**N.
roi_heads.update(
    **_ROI_HEADS_DEFAULTS,
    semantic_head=L(FusedSemanticHead)(
        input_shape={
            f: L(ShapeSpec)(stride=2 ** int(f[1:]), channels="${.....backbone.out_channels}")
            for f in _SEMANTIC["in_features"]
        },
        **_SEMANTIC,
    ),
    semantic_pooler=L(ROIPooler)(
        output_size=SEMANTIC_POOLER_RESOLUTION,
        scales=(1.0 / 2 ** int(_SEMANTIC["fusion_level"][1:]),),
        sampling_ratio=0,
        pooler_type="ROIAlignV2",
    ),
)
dataloader.train.dataset.names = "coco_2017_train_htc"
dataloader.test.dataset.names = "coco_2017_val_htc"
