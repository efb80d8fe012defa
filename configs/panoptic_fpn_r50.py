from .common.panoptic_fpn import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
