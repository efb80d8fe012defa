from .common.mask_rcnn import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
