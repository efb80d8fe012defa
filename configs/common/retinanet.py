"""RetinaNet R50-FPN, paper's 1x (lr 0.01)."""
from detectron2 import model_zoo

from .coco_1x import dataloader, lr_multiplier, optimizer, train

model = model_zoo.get_config("common/models/retinanet.py").model
model.backbone.bottom_up.freeze_at = 2
dataloader.train.mapper.use_instance_mask = False
optimizer.lr = 0.01
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
