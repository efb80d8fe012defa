"""Training machinery that detectron2's engine leaves to the user: kill-safe checkpoints and
exactly resumable data order."""
from .checkpoint import AtomicPathManager, RNGState, make_resilient
from .sampler import ResumableTrainingSampler

__all__ = [k for k in globals().keys() if not k.startswith("_")]
