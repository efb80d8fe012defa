"""Training machinery that detectron2's engine leaves to the user: kill-safe checkpoints, exactly
resumable data order (one process or several), DDP on CPU, pre-flight checks and clear errors for
bad input, for the YAML trainer (:class:`Trainer`) and the LazyConfig loop (:mod:`.lazy`).

Imported on demand: :mod:`.metrics` (detectron2's ``metrics.json`` read back),
:mod:`.quickstart` (the ``make demo`` job) and :mod:`.classifier_training` (ImageNet-style
classifier training with timm, tools/train_classifier.py)."""
from .checkpoint import AtomicPathManager, DCDCCheckpointer, RNGState, periodic_checkpointer
from .checks import (
    check_datasets,
    check_lazy_overrides,
    check_weights,
    lazy_dataset_names,
    load_lazy_config,
)
from .defaults import Trainer, build_evaluator, build_resumable_train_loader, stopped_on_nan_message
from .distributed import create_ddp_model
from .guards import (
    SkipUnreadableImages,
    UnreadableImageError,
    check_norms_for_device,
    check_state_fits,
    drop_degenerate_annotations,
)
from .lazy import (
    OPTIONAL_TRAIN_KEYS,
    build_lazy_test_loader,
    build_lazy_train_loader,
    do_eval_only,
    do_test,
    do_train,
    verify_lazy_results,
)
from .sampler import ResumableTrainingSampler

__all__ = [k for k in globals().keys() if not k.startswith("_")]
