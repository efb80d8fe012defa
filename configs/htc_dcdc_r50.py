from .common.dcdc import use_dcdc_backbone
from .common.htc import dataloader, lr_multiplier, model, optimizer, train

use_dcdc_backbone(model, dataloader, depth=50, operator="dcdc", neck="conv")
train.init_checkpoint = "pretrained/DCDC-R50.pkl"
