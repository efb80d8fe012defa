from .common.faster_rcnn import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
