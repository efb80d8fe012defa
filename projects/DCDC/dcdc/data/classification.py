"""The built-in classification data: the objects of the shapes splits cut into an ImageFolder.

``ensure_shapes_imagefolder()`` gives ``$DETECTRON2_DATASETS/shapes_cls/{train,val}/<class>/*.png``,
the data ``tools/train_classifier.py --recipe shapes`` pretrains a classifier on.
"""
import json
import logging
import os
import shutil

import cv2

from .shapes import SHAPES_SPLITS, datasets_root, ensure_shapes, stored_params

__all__ = ["cut_coco_objects", "ensure_shapes_imagefolder", "SHAPES_CLS_SIZE"]

logger = logging.getLogger(__name__)

SHAPES_CLS_VERSION = 1  # bump when the cutting changes, so stale crops are rewritten
SHAPES_CLS_SIZE = 64  # stored crop size; training resizes to --img-size


def cut_coco_objects(instances_json, image_root, out_dir, size=64, context=1.25, min_side=8,
                     min_area=64):
    """Write every object of a COCO instances file as a square crop into ``out_dir/<category>/``.

    The crop is centred on the object's box, ``context`` times its longer side (so the outline
    and some background are visible), padded by edge replication at the image border, and
    resized to ``size`` px. Crowd boxes and objects whose visible box is smaller than
    ``min_side`` px or whose visible area is below ``min_area`` px (mostly hidden behind other
    objects) are skipped. Returns ``{category name: number of crops}``.
    """
    with open(instances_json) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    counts = {name: 0 for name in names.values()}
    for name in names.values():
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    by_image = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        if ann.get("iscrowd", 0) or min(w, h) < min_side or ann["area"] < min_area:
            continue
        by_image.setdefault(ann["image_id"], []).append(ann)
    for image_id, anns in sorted(by_image.items()):
        path = os.path.join(image_root, files[image_id])
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read image {path} listed in {instances_json}")
        for ann in anns:
            x, y, w, h = ann["bbox"]
            side = max(w, h) * context
            x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
            x1, y1 = x0 + int(round(side)), y0 + int(round(side))
            pad = max(0, -x0, -y0, x1 - image.shape[1], y1 - image.shape[0])
            padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            crop = padded[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
            name = names[ann["category_id"]]
            cv2.imwrite(os.path.join(out_dir, name, f"{image_id:06d}_{ann['id']:07d}.png"), crop)
            counts[name] += 1
    return counts


def ensure_shapes_imagefolder(out_root=None, size=SHAPES_CLS_SIZE):
    """The built-in classification data: ``out_root/{train,val}/<class>/*.png``, made on first use.

    Cut with :func:`cut_coco_objects` from the COCO files of the built-in ``shapes_train`` and
    ``shapes_val`` splits (generated first if missing). A stamp file records the parameters, so
    the crops are rewritten only when they change. Returns ``out_root``.
    """
    out_root = out_root or os.path.join(datasets_root(), "shapes_cls")
    # The shapes splits as they are on disk (a resized one from python -m dcdc.data.shapes is
    # kept, as for detection), and the crops are recut when those change.
    shapes_root = ensure_shapes(keep_resized=True)
    stamp_path = os.path.join(out_root, ".complete.json")
    params = {"version": SHAPES_CLS_VERSION, "size": size,
              "shapes_root": os.path.abspath(shapes_root),
              "splits": {k: stored_params(shapes_root, v) for k, v in SHAPES_SPLITS.items()}}
    if os.path.isfile(stamp_path):
        with open(stamp_path) as f:
            if json.load(f).get("params") == params:
                return out_root
    counts = {}
    for split in ("train", "val"):
        out_dir = os.path.join(out_root, split)
        if os.path.isdir(out_dir):  # stale crops of another version must not mix in
            shutil.rmtree(out_dir)
        counts[split] = cut_coco_objects(
            os.path.join(shapes_root, "annotations", f"instances_{split}.json"),
            os.path.join(shapes_root, split), out_dir, size=size)
    with open(stamp_path, "w") as f:
        json.dump({"params": params, "counts": counts}, f, indent=1, sort_keys=True)
    logger.info(f"Cut the shapes objects into {out_root}: {counts}")
    return out_root
