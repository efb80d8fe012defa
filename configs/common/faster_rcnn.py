"""Faster R-CNN R50-FPN (detectron2's Mask R-CNN without the mask branch), paper's 1x."""
from detectron2 import model_zoo

from .coco_1x import dataloader, lr_multiplier, optimizer, train

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
model.backbone.bottom_up.freeze_at = 2
dataloader.train.mapper.use_instance_mask = False
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
