# Input: RGB images normalized with the ImageNet mean / std (use_dcdc_backbone sets
# model.pixel_mean / pixel_std / input_format and the loaders' image_format); a model from
# instantiate(cfg.model) called directly needs RGB tensors, not detectron2's default BGR.
from .common.faster_rcnn import dataloader, lr_multiplier, model, optimizer, train
from .common.dcdc import use_dcdc_backbone

use_dcdc_backbone(model, dataloader, depth=50, operator="dcdc", neck="dcdc")
train.init_checkpoint = "pretrained/DCDC-R50.pkl"
