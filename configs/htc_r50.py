from .common.htc import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
