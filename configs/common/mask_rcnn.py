"""Mask R-CNN R50-FPN, paper's 1x."""
from detectron2 import model_zoo

from .coco_1x import dataloader, lr_multiplier, optimizer, train

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
