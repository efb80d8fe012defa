"""Clear, early errors for the bad inputs a long training run meets, each naming what and how
to fix, and none losing work: unreadable images, degenerate annotations, checkpoints of another
architecture, and norms the device cannot run."""
import logging
import re

import torch
from torch import nn

from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import BoxMode

from ..utils.errors import UserValueError

__all__ = ["SkipUnreadableImages", "UnreadableImageError", "check_state_fits",
           "drop_degenerate_annotations",
           "check_norms_for_device", "PREDICTOR_KEYS"]

logger = logging.getLogger(__name__)

# Parameters whose shape depends on the number of classes: fine-tuning on a new dataset
# legitimately skips them (detectron2 then initializes them fresh), so they only warn.
PREDICTOR_KEYS = re.compile(
    r"(^|\.)(box_predictor|predictor|cls_score|bbox_pred|cls_logits)\b"
)


class UnreadableImageError(RuntimeError):
    pass


class SkipUnreadableImages:
    """Wrap a detectron2 dataset mapper so that an image which cannot be read is named.

    With ``skip=True`` (training) the image is logged and skipped: the mapper returns ``None``,
    which detectron2's ``MapDataset`` answers by drawing another image. With ``skip=False``
    (evaluation, where skipping would bias the metrics, or ``DATALOADER.SKIP_UNREADABLE_IMAGES
    False``) it raises :class:`UnreadableImageError` naming the file.
    """

    def __init__(self, mapper, skip=True):
        self.mapper, self.skip = mapper, skip
        self.skipped = []

    def __call__(self, dataset_dict):
        try:
            return self.mapper(dataset_dict)
        except (OSError, SizeMismatchError) as e:  # PIL's decode errors are OSErrors
            name = dataset_dict.get("file_name", "<unknown file>")
            if not self.skip:
                raise UnreadableImageError(
                    f"Cannot read image '{name}': {e}. Replace or delete the file (and its "
                    "annotations), or let training skip such images."
                ) from e
            self.skipped.append(name)
            logger.warning(f"Skipping unreadable image '{name}': {e}")
            return None


def _polygon_area(poly):
    xs, ys = poly[0::2], poly[1::2]
    return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


def _degenerate(annotation):
    """Why ``annotation`` cannot be trained on, or None: a box without positive width and
    height (detectron2 would silently flip a negative one), or polygons without area."""
    x0, y0, x1, y1 = BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"],
                                     BoxMode.XYXY_ABS)
    if not (x1 > x0 and y1 > y0):
        return f"box {list(annotation['bbox'])} has no positive width and height"
    segm = annotation.get("segmentation")
    if isinstance(segm, list) and segm and not any(
        len(p) >= 6 and len(p) % 2 == 0 and _polygon_area(p) > 0 for p in segm
    ):
        return f"polygons {segm} enclose no area"
    return None


def drop_degenerate_annotations(dataset_dicts):
    """Drop instance annotations that :func:`_degenerate` rejects, warning with the image file
    of each, so that a bad annotation file is visible instead of silently mis-trained."""
    dropped = []
    for record in dataset_dicts:
        kept = []
        for annotation in record.get("annotations", []):
            reason = _degenerate(annotation)
            if reason is None:
                kept.append(annotation)
            else:
                dropped.append(f"{record['file_name']}: {reason}")
        if "annotations" in record:
            record["annotations"] = kept
    if dropped:
        logger.warning(
            f"Dropped {len(dropped)} degenerate annotations; fix them in the annotation file:\n  "
            + "\n  ".join(dropped[:20]) + ("\n  ..." if len(dropped) > 20 else "")
        )
    return dataset_dicts


def check_state_fits(model, state, source="checkpoint"):
    """Raise if the state dict ``state`` has tensors of other shapes than ``model`` outside the
    class-count-dependent predictors, listing every such key.

    detectron2 only logs such tensors and skips them, which after a wrong ``MODEL.WEIGHTS``
    leaves e.g. a whole backbone randomly initialized.
    """
    model_state = model.state_dict()
    mismatched = [
        (k, tuple(v.shape), tuple(model_state[k].shape))
        for k, v in state.items()
        if k in model_state and hasattr(v, "shape") and tuple(v.shape) != tuple(model_state[k].shape)
    ]
    heads = [m for m in mismatched if PREDICTOR_KEYS.search(m[0])]
    others = [m for m in mismatched if not PREDICTOR_KEYS.search(m[0])]
    if heads:
        logger.warning(
            f"{source}: {len(heads)} class-dependent predictor tensors have other shapes and "
            "are left freshly initialized: " + ", ".join(k for k, _, _ in heads)
        )
    if others:
        lines = "\n".join(f"  {k}: {c} in {source}, {m} in the model" for k, c, m in others)
        raise UserValueError(
            f"{source} does not fit this model; {len(others)} tensors have other shapes:\n"
            f"{lines}\nIt was made for a different architecture: check that MODEL.RESNETS.DEPTH, "
            "MODEL.DCDC.* (operator, neck, kernel sizes) and the norms match the run that "
            "wrote it, or train from scratch with MODEL.WEIGHTS \"\" (train.init_checkpoint for "
            "LazyConfigs)."
        )


def check_norms_for_device(model, device):
    """SyncBatchNorm needs CUDA and NCCL; on CPU say so before the first iteration."""
    if torch.device(device).type == "cuda":
        return
    sync = [n for n, m in model.named_modules() if isinstance(m, nn.SyncBatchNorm)]
    if sync:
        raise UserValueError(
            f"SyncBN is used by {len(sync)} layers (e.g. '{sync[0]}') but the model runs on "
            f"'{device}': SyncBatchNorm needs CUDA GPUs. On CPU use \"BN\" or \"GN\" "
            "(MODEL.RESNETS.NORM, MODEL.FPN.NORM, and the ROI/semantic head norms)."
        )
