from .common.retinanet import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
