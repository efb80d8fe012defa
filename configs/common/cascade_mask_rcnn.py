"""Cascade Mask R-CNN R50-FPN, detectron2's nearest to the paper's HTC rows (Table VI), on
HTC's 20-epoch schedule (150k iterations at batch 16, x0.1 at epochs 16 and 19)."""
from detectron2 import model_zoo

from .coco_1x import dataloader, lr_multiplier, optimizer, train

model = model_zoo.get_config("common/models/cascade_rcnn.py").model
model.backbone.bottom_up.freeze_at = 2
model.proposal_generator.post_nms_topk = (2000, 1000)
train.max_iter = 150000
lr_multiplier.scheduler.milestones = [120000, 142500, train.max_iter]
lr_multiplier.warmup_length = 500 / train.max_iter
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
