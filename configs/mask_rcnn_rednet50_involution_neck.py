from .common.mask_rcnn import dataloader, lr_multiplier, model, optimizer, train
from .common.dcdc import use_dcdc_backbone

use_dcdc_backbone(model, dataloader, depth=50, operator="involution", neck="involution")
train.init_checkpoint = "pretrained/RedNet-50.pkl"
