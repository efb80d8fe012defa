"""Training machinery that detectron2's engine leaves to the user: kill-safe checkpoints, exactly
resumable data order, DDP on CPU, and clear errors for bad input."""
from .checkpoint import AtomicPathManager, DCDCCheckpointer, RNGState
from .distributed import create_ddp_model
from .guards import (
    SkipUnreadableImages,
    UnreadableImageError,
    check_norms_for_device,
    check_state_fits,
    drop_degenerate_annotations,
)
from .sampler import ResumableTrainingSampler

__all__ = [k for k in globals().keys() if not k.startswith("_")]
