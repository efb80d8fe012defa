"""Panoptic FPN R50 on the COCO panoptic-separated datasets, paper's 1x.

Evaluated with COCOEvaluator + SemSegEvaluator + COCOPanopticEvaluator.
"""
from detectron2 import model_zoo

from .coco_1x import dataloader as _instances_dataloader
from .coco_1x import lr_multiplier, optimizer, train

dataloader = model_zoo.get_config("common/data/coco_panoptic_separated.py").dataloader
dataloader.train.mapper.augmentations = _instances_dataloader.train.mapper.augmentations

model = model_zoo.get_config("common/models/panoptic_fpn.py").model
model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
