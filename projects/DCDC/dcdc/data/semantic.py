"""Stuff+thing semantic maps for Hybrid Task Cascade's semantic branch, and the ``*_htc`` datasets.

HTC's semantic branch trains on one label per pixel over all classes, things and stuff. The maps
are made from COCO-format panoptic annotations (what a detectron2 user has for Panoptic FPN):
pixel = index of its segment's category in the panoptic JSON's ``categories`` list (133 classes
for COCO), 255 where no segment is. Command::

    python -m dcdc.data.semantic --coco                  # both COCO splits under $DETECTRON2_DATASETS
    python -m dcdc.data.semantic --panoptic-json J --panoptic-root D --output OUT

The ``*_htc`` datasets are COCO instance datasets whose records also carry
``sem_seg_file_name``, which detectron2's ``DatasetMapper`` reads into ``"sem_seg"``:
``coco_2017_{train,val}_htc`` (maps in ``coco/stuffthingmaps_panoptic_{train,val}2017/``) and
``shapes_*_htc`` for the built-in data (maps made on first use).
"""
import argparse
import json
import logging
import os
import time

import cv2
import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from .shapes import SHAPES_SPLITS, _paths, datasets_root, ensure_shapes, get_shapes_metadata

__all__ = ["IGNORE_VALUE", "make_semantic_maps", "register_htc_instances",
           "register_all_htc", "COCO_HTC_SPLITS"]

logger = logging.getLogger(__name__)

IGNORE_VALUE = 255

# name -> (image root, instances json, panoptic json, panoptic root, semantic maps), relative to
# $DETECTRON2_DATASETS, in detectron2's builtin COCO layout.
COCO_HTC_SPLITS = {
    f"coco_2017_{s}_htc": (f"coco/{s}2017", f"coco/annotations/instances_{s}2017.json",
                           f"coco/annotations/panoptic_{s}2017.json", f"coco/panoptic_{s}2017",
                           f"coco/stuffthingmaps_panoptic_{s}2017")
    for s in ("train", "val")
}
PREPARE_COCO = "python -m dcdc.data.semantic --coco"


def _rgb2id(rgb):
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _write_atomic(path, label):
    tmp = f"{path}.tmp-{os.getpid()}.png"
    if not cv2.imwrite(tmp, label):
        raise OSError(f"could not write {tmp}")
    os.replace(tmp, path)


def make_semantic_maps(panoptic_json, panoptic_root, output_dir, log_period=500):
    """Write one ``<image name>.png`` per image of ``panoptic_json`` into ``output_dir``: the
    index of each pixel's category in the JSON's ``categories`` list, :data:`IGNORE_VALUE` where
    no segment is. Maps already on disk are kept, so an interrupted run continues where it
    stopped; each file appears only once complete. Returns the class names, in label order."""
    with open(panoptic_json) as f:
        data = json.load(f)
    categories = data["categories"]
    if len(categories) >= IGNORE_VALUE:
        raise ValueError(f"{len(categories)} categories do not fit 8-bit labels below "
                         f"{IGNORE_VALUE}.")
    label_of = {c["id"]: i for i, c in enumerate(categories)}
    os.makedirs(output_dir, exist_ok=True)
    annotations = data["annotations"]
    start, written = time.perf_counter(), 0
    for n, ann in enumerate(annotations, 1):
        out = os.path.join(output_dir, os.path.splitext(ann["file_name"])[0] + ".png")
        if not os.path.exists(out):
            src = os.path.join(panoptic_root, ann["file_name"])
            png = cv2.imread(src, cv2.IMREAD_COLOR)
            if png is None:
                raise FileNotFoundError(f"Cannot read panoptic PNG '{src}' of {panoptic_json}.")
            ids = _rgb2id(png[..., ::-1])
            label = np.full(ids.shape, IGNORE_VALUE, np.uint8)
            for seg in ann["segments_info"]:
                label[ids == seg["id"]] = label_of[seg["category_id"]]
            _write_atomic(out, label)
            written += 1
        if n % log_period == 0 or n == len(annotations):
            rate = n / max(time.perf_counter() - start, 1e-9)
            logger.info(f"semantic maps: {n}/{len(annotations)} images ({written} written, "
                        f"{rate:.0f} img/s, ETA {(len(annotations) - n) / rate:.0f} s) -> "
                        f"{output_dir}")
    return [c["name"] for c in categories]


class _HTCLoader:
    """COCO instances + ``sem_seg_file_name``; ``prepare()`` makes missing files first."""

    def __init__(self, name, json_file, image_root, sem_seg_root, prepare=None, command=None):
        self.name, self.json_file, self.image_root = name, json_file, image_root
        self.sem_seg_root, self.prepare, self.command = sem_seg_root, prepare, command

    def __call__(self):
        if self.prepare is not None:
            self.prepare()
        records = load_coco_json(self.json_file, self.image_root, self.name)
        for r in records:
            stem = os.path.splitext(os.path.basename(r["file_name"]))[0]
            r["sem_seg_file_name"] = os.path.join(self.sem_seg_root, stem + ".png")
        missing = [r["sem_seg_file_name"] for r in records
                   if not os.path.isfile(r["sem_seg_file_name"])]
        if missing:
            raise FileNotFoundError(
                f"Dataset '{self.name}': {len(missing)} of {len(records)} semantic maps are "
                f"missing, e.g. '{missing[0]}'. Make them with\n  {self.command}")
        return records


def register_htc_instances(name, metadata, json_file, image_root, sem_seg_root, *, prepare=None,
                           command=""):
    """Register a COCO instance dataset whose records carry ``sem_seg_file_name`` (evaluated by
    COCOEvaluator). ``prepare``, if given, is called before loading (to make missing files);
    ``command`` is what the errors tell the user to run for missing maps."""
    DatasetCatalog.register(name, _HTCLoader(name, json_file, image_root, sem_seg_root, prepare,
                                             command))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root,
                                  sem_seg_root=sem_seg_root, evaluator_type="coco",
                                  ignore_label=IGNORE_VALUE, prepare_command=command, **metadata)


class _ShapesMaps:
    def __init__(self, root, spec):
        self.root, self.spec = root, spec

    def __call__(self):
        ensure_shapes(self.root, [self.spec])
        p = _paths(self.root, self.spec.split)
        make_semantic_maps(p["panoptic_json"], p["panoptic_root"],
                           os.path.join(self.root, f"stuffthingmaps_{self.spec.split}"))


def register_all_htc(root=None):
    """Register ``coco_2017_{train,val}_htc`` and ``shapes_*_htc`` (idempotent)."""
    root = root or datasets_root()
    coco_meta = _get_builtin_metadata("coco")
    # the panoptic JSON's categories, in its order: 80 things then 53 stuff
    coco_classes = _get_builtin_metadata("coco_panoptic_standard")["stuff_classes"]
    for name, (images, instances, _, _, maps) in COCO_HTC_SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        register_htc_instances(
            name, {**coco_meta, "stuff_classes": coco_classes},
            os.path.join(root, instances), os.path.join(root, images), os.path.join(root, maps),
            command=PREPARE_COCO)
    shapes_root = os.path.join(root, "shapes")
    meta = get_shapes_metadata()
    classes = meta["thing_classes"] + meta["stuff_classes"][1:]
    instance_meta = {k: meta[k] for k in ("thing_classes", "thing_colors",
                                          "thing_dataset_id_to_contiguous_id")}
    for name, spec in SHAPES_SPLITS.items():
        if name + "_htc" in DatasetCatalog.list():
            continue
        p = _paths(shapes_root, spec.split)
        register_htc_instances(
            name + "_htc", {**instance_meta, "stuff_classes": classes, "shapes_split":
                            spec.params()},
            p["instances_json"], p["image_root"],
            os.path.join(shapes_root, f"stuffthingmaps_{spec.split}"),
            prepare=_ShapesMaps(shapes_root, spec),
            command="made automatically on first load of the dataset")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coco", action="store_true",
                        help="both COCO 2017 splits under $DETECTRON2_DATASETS/coco (detectron2's "
                             "layout; needs annotations/panoptic_{train,val}2017.json and the "
                             "panoptic_{train,val}2017/ PNGs)")
    parser.add_argument("--panoptic-json")
    parser.add_argument("--panoptic-root")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.coco:
        root = datasets_root()
        jobs = [tuple(os.path.join(root, p) for p in v[2:]) for v in COCO_HTC_SPLITS.values()]
    elif args.panoptic_json and args.panoptic_root and args.output:
        jobs = [(args.panoptic_json, args.panoptic_root, args.output)]
    else:
        parser.error("give --coco, or all of --panoptic-json, --panoptic-root and --output.")
    for panoptic_json, panoptic_root, output in jobs:
        for path in (panoptic_json, panoptic_root):
            if not os.path.exists(path):
                parser.error(f"'{path}' does not exist. COCO's panoptic annotations come from "
                             "panoptic_annotations_trainval2017.zip (unzip the PNG archives "
                             "inside it into coco/).")
        classes = make_semantic_maps(panoptic_json, panoptic_root, output)
        print(f"{output}: {len(classes)} classes (MODEL.HTC.SEMANTIC_NUM_CLASSES {len(classes)})")


if __name__ == "__main__":
    main()
