"""DistributedDataParallel that also works for CPU processes (gloo)."""
from detectron2.engine.defaults import create_ddp_model as _d2_create_ddp_model
from detectron2.utils import comm

__all__ = ["create_ddp_model"]


def create_ddp_model(model, **kwargs):
    """detectron2's ``create_ddp_model``, except that a model on the CPU gets
    ``device_ids=None``: DDP rejects device ids for CPU modules, and detectron2 always passes
    the local rank. With this, ``--num-gpus N`` on a CPU machine runs N gloo processes."""
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _d2_create_ddp_model(model, **kwargs)
