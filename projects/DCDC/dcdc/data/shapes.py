""""shapes": a seeded, deterministic built-in dataset written as real COCO files on first use.

A user without COCO still trains and evaluates through exactly the COCO code path: the generator
writes, under ``$DETECTRON2_DATASETS/shapes`` (default ``./datasets/shapes``), the same files a
COCO download plus detectron2's ``datasets/prepare_panoptic_fpn.py`` would give::

    shapes/
      train/ val/                              RGB images (JPEG, quality 95)
      annotations/instances_{split}.json       COCO instances, polygon masks, thing classes only
      annotations/panoptic_{split}.json        COCO panoptic segments_info, things + stuff
      panoptic_{split}/                        COCO panoptic PNGs (segment id = R + 256 G + 256^2 B)
      panoptic_stuff_{split}/                  semantic PNGs for Panoptic FPN: things -> 0,
                                               stuff -> 1..N (contiguous), unlabeled -> 255

Each image has two or three textured "stuff" regions (sky, grass, sand, brick), separated by
wavy boundaries, and 2-6 solid "thing" objects (circle, triangle, square, star) of varied size,
colour and rotation, drawn back to front so that later objects partly occlude earlier ones. The
annotation of an occluded object is its *visible* part (as in COCO), traced into polygons.

Everything is derived from ``numpy.random.default_rng(seed + image_index)``; PNGs and JSON are
written without timestamps, so the same parameters give byte-identical files.

The splits are registered with detectron2's own helpers (``register_coco_instances`` and
``register_coco_panoptic_separated``), so ``DatasetCatalog.get("shapes_val")`` and the evaluators
(``COCOEvaluator``, ``COCOPanopticEvaluator``) run the same code as for COCO. Files are generated
the first time a registered split is loaded (or by :func:`ensure_shapes` / ``python -m
dcdc.data.shapes``).
"""
import argparse
import hashlib
import json
import logging
import os

import cv2
import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_coco_panoptic_separated

__all__ = [
    "THING_CLASSES",
    "STUFF_CLASSES",
    "CATEGORIES",
    "SHAPES_SPLITS",
    "ShapesSplit",
    "get_shapes_metadata",
    "generate_shapes_split",
    "ensure_shapes",
    "prepare_data",
    "shapes_split_of",
    "register_shapes",
    "register_all_shapes",
    "stored_params",
    "datasets_root",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the drawing changes, so stale files on disk are regenerated

# Dataset ids follow COCO: things first, stuff after, ids are not contiguous model ids.
THING_CLASSES = ["circle", "triangle", "square", "star"]
STUFF_CLASSES = ["sky", "grass", "sand", "brick"]
CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60], "supercategory": "shape"},
    {"id": 2, "name": "triangle", "isthing": 1, "color": [0, 0, 230], "supercategory": "shape"},
    {"id": 3, "name": "square", "isthing": 1, "color": [250, 170, 30], "supercategory": "shape"},
    {"id": 4, "name": "star", "isthing": 1, "color": [160, 0, 200], "supercategory": "shape"},
    {"id": 11, "name": "sky", "isthing": 0, "color": [135, 206, 235], "supercategory": "stuff"},
    {"id": 12, "name": "grass", "isthing": 0, "color": [60, 160, 60], "supercategory": "stuff"},
    {"id": 13, "name": "sand", "isthing": 0, "color": [210, 180, 120], "supercategory": "stuff"},
    {"id": 14, "name": "brick", "isthing": 0, "color": [150, 60, 40], "supercategory": "stuff"},
]


class ShapesSplit:
    """Parameters of one generated split; they fully determine its files.

    Args:
        split: "train" or "val" (or any folder name).
        num_images: number of images.
        image_size: side of the square images in pixels.
        seed: base seed; image ``i`` is drawn from ``default_rng([seed, i])``.
    """

    def __init__(self, split, num_images, image_size=128, seed=0):
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}.")
        if image_size < 48:
            raise ValueError(f"image_size must be >= 48 pixels to fit the shapes, got {image_size}.")
        self.split, self.num_images, self.image_size, self.seed = split, num_images, image_size, seed

    def params(self):
        return {"split": self.split, "num_images": self.num_images, "image_size": self.image_size,
                "seed": self.seed, "generator_version": GENERATOR_VERSION}

    def __repr__(self):
        return f"ShapesSplit({self.params()})"


# The built-in splits: small enough to generate in seconds and train on a CPU in minutes.
SHAPES_SPLITS = {
    "shapes_train": ShapesSplit("train", num_images=1000, image_size=128, seed=1),
    "shapes_val": ShapesSplit("val", num_images=100, image_size=128, seed=2),
    # a few images, for instant tests of the whole train -> evaluate -> visualize path
    "shapes_mini_train": ShapesSplit("mini_train", num_images=16, image_size=128, seed=3),
    "shapes_mini_val": ShapesSplit("mini_val", num_images=8, image_size=128, seed=4),
}

_DERIVED_SUFFIXES = ("_panoptic_separated", "_panoptic_stuffonly", "_htc")


def shapes_split_of(dataset_name):
    """The :class:`ShapesSplit` behind a registered built-in dataset name, or None."""
    for suffix in _DERIVED_SUFFIXES:
        if dataset_name.endswith(suffix):
            dataset_name = dataset_name[: -len(suffix)]
    return SHAPES_SPLITS.get(dataset_name)


def datasets_root():
    """``$DETECTRON2_DATASETS`` (detectron2's convention), default ``./datasets``."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def get_shapes_metadata():
    """Metadata in the form of detectron2's ``coco_panoptic_separated`` builtin metadata.

    Semantic ids: 0 is the extra "things" class, stuff dataset ids map to 1..N in order.
    """
    things = [c for c in CATEGORIES if c["isthing"]]
    stuff = [c for c in CATEGORIES if not c["isthing"]]
    stuff_map = {c["id"]: i + 1 for i, c in enumerate(stuff)}
    stuff_map[0] = 0
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        "stuff_classes": ["things"] + [c["name"] for c in stuff],
        "stuff_colors": [[82, 18, 128]] + [c["color"] for c in stuff],
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }


# ----------------------------------------------------------------------------- drawing
def _texture(rng, name, size):
    """A (size, size, 3) uint8 texture whose pattern (not just colour) identifies the stuff class."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    noise = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    if name == "sky":  # smooth vertical gradient, light blue, almost no noise
        top = np.array([rng.uniform(150, 200), rng.uniform(190, 230), rng.uniform(230, 255)])
        bottom = top * rng.uniform(0.75, 0.95)
        t = (yy / size)[..., None]
        img = top * (1 - t) + bottom * t + 3.0 * noise[..., None]
    elif name == "grass":  # green, strong vertical blades
        base = np.array([rng.uniform(40, 90), rng.uniform(120, 180), rng.uniform(30, 80)])
        blades = cv2.blur(rng.normal(0, 1, (size, size)).astype(np.float32), (1, 9))
        img = base + 35.0 * blades[..., None] + 6.0 * noise[..., None]
    elif name == "sand":  # yellowish fine speckle plus gentle dunes
        base = np.array([rng.uniform(190, 230), rng.uniform(160, 200), rng.uniform(100, 140)])
        phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.08, 0.2)
        dunes = np.sin(xx * freq * 0.5 + yy * freq + phase)
        img = base + 12.0 * dunes[..., None] + 18.0 * noise[..., None]
    elif name == "brick":  # reddish bricks with light mortar lines
        base = np.array([rng.uniform(130, 180), rng.uniform(40, 80), rng.uniform(30, 60)])
        bh, bw = int(rng.integers(8, 13)), int(rng.integers(16, 25))
        row = (yy // bh).astype(np.int64)
        mortar = ((yy % bh) < 2) | (((xx + (row % 2) * bw // 2) % bw) < 2)
        img = base + 8.0 * noise[..., None]
        img[mortar] = np.array([200.0, 195.0, 185.0])
    else:
        raise ValueError(f"unknown stuff class {name!r}")
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_polygon(rng, cls, cx, cy, radius):
    """Vertices (N, 2) float of a thing of class ``cls`` centred at (cx, cy); circles are 48-gons."""
    angle = rng.uniform(0, 2 * np.pi)
    if cls == "circle":
        n, radii = 48, np.full(48, radius)
    elif cls == "triangle":
        n, radii = 3, np.full(3, radius)
    elif cls == "square":
        n, radii = 4, np.full(4, radius)
    elif cls == "star":
        n, radii = 10, np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    else:
        raise ValueError(f"unknown thing class {cls!r}")
    theta = angle + 2 * np.pi * np.arange(n) / n
    return np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)], axis=1)


def _stuff_layout(rng, size):
    """(size, size) int map of region index 0..R-1 with wavy boundaries, and the region classes."""
    num_regions = int(rng.integers(2, 4))
    classes = [STUFF_CLASSES[i] for i in rng.permutation(len(STUFF_CLASSES))[:num_regions]]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    vertical = bool(rng.integers(0, 2))
    along, across = (xx, yy) if not vertical else (yy, xx)
    cuts = np.sort(rng.uniform(0.3, 0.7, num_regions - 1)) if num_regions == 2 else \
        np.array([rng.uniform(0.25, 0.42), rng.uniform(0.58, 0.75)])
    region = np.zeros((size, size), np.int64)
    for cut in cuts:
        amp, freq, phase = rng.uniform(2, size / 12), rng.uniform(1, 3), rng.uniform(0, 2 * np.pi)
        boundary = cut * size + amp * np.sin(2 * np.pi * freq * along / size + phase)
        region += (across > boundary).astype(np.int64)
    return region, classes


def _visible_polygons(mask, upsample=4):
    """COCO polygons (list of flat [x0, y0, x1, y1, ...]) of a binary mask; None if it has holes.

    Contours are traced on a ``upsample`` x nearest-upsampled mask so that the polygon runs along
    pixel edges (COCO coordinates: pixel (x, y) covers [x, x+1] x [y, y+1]), not through boundary
    pixel centres, so rasterizing it gives back the mask.
    """
    big = np.kron(mask.astype(np.uint8), np.ones((upsample, upsample), np.uint8))
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is not None and (hierarchy[0][:, 3] >= 0).any():
        return None  # a hole: not representable by non-crowd COCO polygons, caller re-draws
    return [np.round((c.reshape(-1).astype(np.float64) + 0.5) / upsample, 3).tolist()
            for c in contours if len(c) >= 3]


def _draw_image(rng, size):
    """One image: (image uint8 HxWx3, segment-id map, stuff segments, thing objects)."""
    region, region_classes = _stuff_layout(rng, size)
    image = np.zeros((size, size, 3), np.uint8)
    for r, name in enumerate(region_classes):
        tex = _texture(rng, name, size)
        image[region == r] = tex[region == r]

    # Things, back to front. owner[y, x] is the index of the top-most object (-1: background).
    owner = np.full((size, size), -1, np.int64)
    objects = []
    num_objects = int(rng.integers(2, 7))
    for _ in range(num_objects):
        for _attempt in range(20):
            cls_idx = int(rng.integers(len(THING_CLASSES)))
            radius = rng.uniform(0.08, 0.22) * size
            cx, cy = rng.uniform(radius * 0.6, size - radius * 0.6, 2)
            poly = _shape_polygon(rng, THING_CLASSES[cls_idx], cx, cy, radius)
            colour = rng.integers(0, 256, 3)
            shape_mask = np.zeros((size, size), np.uint8)
            cv2.fillPoly(shape_mask, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
            shape_mask = shape_mask.astype(bool)
            if shape_mask.sum() < 0.004 * size * size:
                continue
            new_owner = owner.copy()
            new_owner[shape_mask] = len(objects)
            # Every earlier object must stay mostly visible and hole-free, else try another draw.
            ok = True
            for k, obj in enumerate(objects):
                visible = new_owner == k
                if visible.sum() < 0.5 * obj["full_area"] or _visible_polygons(visible) is None:
                    ok = False
                    break
            if ok:
                owner = new_owner
                objects.append({"class": cls_idx, "colour": colour, "full_area": int(shape_mask.sum())})
                shade = np.clip(colour[None, :] * rng.uniform(0.85, 1.0), 0, 255)
                image[shape_mask] = shade.astype(np.uint8)
                # a darker outline, as drawn objects usually have
                cv2.polylines(image, [np.round(poly * 16).astype(np.int32)], True,
                              tuple(int(c * 0.6) for c in colour), 1, cv2.LINE_8, shift=4)
                break
    return image, owner, region, region_classes, objects


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def _id2rgb(segment_ids):
    """panopticapi's id2rgb: id = R + 256 * G + 256^2 * B."""
    rgb = np.zeros(segment_ids.shape + (3,), np.uint8)
    ids = segment_ids.copy()
    for c in range(3):
        rgb[..., c] = ids % 256
        ids //= 256
    return rgb


def _write_png(path, rgb):
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 else rgb):
        raise OSError(f"could not write {path}")


def _paths(root, split):
    return {
        "image_root": os.path.join(root, split),
        "instances_json": os.path.join(root, "annotations", f"instances_{split}.json"),
        "panoptic_json": os.path.join(root, "annotations", f"panoptic_{split}.json"),
        "panoptic_root": os.path.join(root, f"panoptic_{split}"),
        "sem_seg_root": os.path.join(root, f"panoptic_stuff_{split}"),
        "stamp": os.path.join(root, f".{split}_complete.json"),
    }


def _dump_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, sort_keys=True, separators=(",", ":"))


def generate_shapes_split(root, spec):
    """Write one split's images and COCO / panoptic / semantic annotations under ``root``.

    Args:
        root: the "shapes" folder (e.g. ``$DETECTRON2_DATASETS/shapes``).
        spec (ShapesSplit): the split's parameters.
    """
    p = _paths(root, spec.split)
    for key in ("image_root", "panoptic_root", "sem_seg_root"):
        os.makedirs(p[key], exist_ok=True)
    os.makedirs(os.path.dirname(p["instances_json"]), exist_ok=True)
    meta = get_shapes_metadata()
    stuff_ids = {c["name"]: c["id"] for c in CATEGORIES if not c["isthing"]}
    thing_ids = [c["id"] for c in CATEGORIES if c["isthing"]]

    images, instances, panoptic_anns = [], [], []
    for i in range(spec.num_images):
        rng = np.random.default_rng([spec.seed, i])
        image, owner, region, region_classes, objects = _draw_image(rng, spec.image_size)
        image_id = i + 1
        file_name, png_name = f"{image_id:06d}.jpg", f"{image_id:06d}.png"
        # JPEG like COCO (detectron2's load_sem_seg pairs "<name>.jpg" with "<name>.png").
        if not cv2.imwrite(os.path.join(p["image_root"], file_name), image[..., ::-1].copy(),
                           [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"could not write {os.path.join(p['image_root'], file_name)}")
        images.append({"id": image_id, "file_name": file_name, "height": spec.image_size,
                       "width": spec.image_size})

        segment_map = np.zeros(owner.shape, np.int64)  # 0 = unlabeled (VOID)
        segments, next_id = [], 1
        for k, obj in enumerate(objects):
            visible = owner == k
            polygons = _visible_polygons(visible)
            if not visible.any() or not polygons:
                continue
            segment_map[visible] = next_id
            cat_id = thing_ids[obj["class"]]
            box, area = _bbox(visible), int(visible.sum())
            instances.append({"id": len(instances) + 1, "image_id": image_id, "category_id": cat_id,
                              "segmentation": polygons, "area": area, "bbox": box, "iscrowd": 0})
            segments.append({"id": next_id, "category_id": cat_id, "iscrowd": 0, "bbox": box,
                             "area": area})
            next_id += 1
        for r, name in enumerate(region_classes):
            visible = (region == r) & (owner < 0)
            if not visible.any():
                continue
            segment_map[visible] = next_id
            segments.append({"id": next_id, "category_id": stuff_ids[name], "iscrowd": 0,
                             "bbox": _bbox(visible), "area": int(visible.sum())})
            next_id += 1
        _write_png(os.path.join(p["panoptic_root"], png_name), _id2rgb(segment_map))
        panoptic_anns.append({"image_id": image_id, "file_name": png_name,
                              "segments_info": segments})

        # prepare_panoptic_fpn.py: things -> 0, stuff -> contiguous 1..N, unlabeled -> 255.
        semantic = np.full(owner.shape, 255, np.uint8)
        for seg in segments:
            semantic[segment_map == seg["id"]] = meta["stuff_dataset_id_to_contiguous_id"].get(
                seg["category_id"], 0)
        _write_png(os.path.join(p["sem_seg_root"], png_name), semantic)

    thing_cats = [{k: c[k] for k in ("id", "name", "supercategory")} for c in CATEGORIES
                  if c["isthing"]]
    info = {"description": "DCDC built-in shapes dataset", "version": str(GENERATOR_VERSION)}
    _dump_json({"info": info, "images": images, "annotations": instances,
                "categories": thing_cats, "licenses": []}, p["instances_json"])
    _dump_json({"info": info, "images": images, "annotations": panoptic_anns,
                "categories": CATEGORIES, "licenses": []}, p["panoptic_json"])
    _dump_json(spec.params(), p["stamp"])  # written last: marks the split complete
    logger.info(f"Wrote {spec.num_images} {spec.image_size}px images and {len(instances)} objects "
                f"of shapes/{spec.split} under {root}.")


def stored_params(root, spec):
    """The parameters of the complete split ``spec.split`` under ``root``, or None."""
    stamp = _paths(root, spec.split)["stamp"]
    if not os.path.isfile(stamp):
        return None
    with open(stamp) as f:
        return json.load(f)


def _resized_by_user(stored, spec):
    """Whether ``stored`` is ``spec`` drawn by this generator with another number of images or
    image size, as ``python -m dcdc.data.shapes --num-train/--num-val/--image-size`` writes it."""
    same = ("split", "seed", "generator_version")
    return stored is not None and all(stored.get(k) == spec.params()[k] for k in same)


def ensure_shapes(root=None, splits=None, keep_resized=False):
    """Generate the shapes splits that are missing or stale under ``root``; return the folder.

    Args:
        root: the "shapes" folder; default ``$DETECTRON2_DATASETS/shapes``.
        splits: iterable of :class:`ShapesSplit`; default the built-in :data:`SHAPES_SPLITS`.
        keep_resized: keep a split on disk that differs from its spec only in ``num_images`` /
            ``image_size`` (one written by ``python -m dcdc.data.shapes --num-train ...``), with
            a warning that says so, instead of regenerating it. The registered datasets load
            this way, so a split the user generated is the one they train on.
    """
    root = root or os.path.join(datasets_root(), "shapes")
    for spec in (SHAPES_SPLITS.values() if splits is None else splits):
        stored = stored_params(root, spec)
        if stored == spec.params():
            continue
        if keep_resized and _resized_by_user(stored, spec):
            logger.warning(
                f"shapes/{spec.split} under {root} has {stored['num_images']} images of "
                f"{stored['image_size']} px (written by python -m dcdc.data.shapes), not the "
                f"built-in {spec.num_images} of {spec.image_size} px; using the files on disk. "
                f"Delete {os.path.join(root, spec.split)} and {_paths(root, spec.split)['stamp']} "
                "to get the built-in split.")
            continue
        logger.info(f"Generating shapes/{spec.split} ({spec.num_images} images) in {root} ...")
        generate_shapes_split(root, spec)
    return root


def prepare_data(cfg):
    """Generate the built-in shapes splits that a config's ``DATASETS.TRAIN`` / ``DATASETS.TEST``
    use, if missing or stale (nothing for other datasets); returns their folder, or None when the
    config uses none. Run before training, so that no two processes generate a split at once."""
    specs = [shapes_split_of(n) for n in tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST)]
    specs = [s for s in specs if s is not None]
    if not specs:
        return None
    return ensure_shapes(os.path.join(datasets_root(), "shapes"), specs)


def register_shapes(name, root, spec):
    """Register one shapes split under detectron2's COCO naming, generating its files on first use.

    Registers ``name`` (instances, evaluator_type "coco"), ``name + "_panoptic_separated"``
    (Panoptic FPN, evaluator_type "coco_panoptic_seg") and ``name + "_panoptic_stuffonly"``,
    exactly like ``coco_2017_{split}`` and ``coco_2017_{split}_panoptic_separated``.
    """
    p = _paths(root, spec.split)
    meta = get_shapes_metadata()
    instance_meta = {k: meta[k] for k in ("thing_classes", "thing_colors",
                                          "thing_dataset_id_to_contiguous_id")}
    register_coco_instances(name, instance_meta, p["instances_json"], p["image_root"])
    register_coco_panoptic_separated(name + "_panoptic", meta, p["image_root"], p["panoptic_root"],
                                     p["panoptic_json"], p["sem_seg_root"], p["instances_json"])
    # detectron2's loaders read the files; generate them first, once, when a split is first loaded.
    for dataset_name in (name, name + "_panoptic_separated", name + "_panoptic_stuffonly"):
        loader = DatasetCatalog[dataset_name]
        DatasetCatalog.remove(dataset_name)
        DatasetCatalog.register(dataset_name, _GenerateThenLoad(root, spec, loader))
        MetadataCatalog.get(dataset_name).set(shapes_split=spec.params())


class _GenerateThenLoad:
    """Dataset loader: ``ensure_shapes`` for one split, then detectron2's own COCO loader."""

    def __init__(self, root, spec, loader):
        self.root, self.spec, self.loader = root, spec, loader

    def __call__(self):
        ensure_shapes(self.root, [self.spec], keep_resized=True)
        return self.loader()


def register_all_shapes(root=None):
    """Register the built-in splits (``shapes_train``, ``shapes_val`` and their panoptic twins)."""
    root = root or os.path.join(datasets_root(), "shapes")
    for name, spec in SHAPES_SPLITS.items():
        if name not in DatasetCatalog.list():
            register_shapes(name, root, spec)


def file_hashes(root):
    """sha256 of every file under ``root`` (relative path -> hex digest); for determinism checks."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            path = os.path.join(dirpath, fn)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the built-in shapes dataset (COCO files).")
    parser.add_argument("--root", default=None,
                        help="output folder (default: $DETECTRON2_DATASETS/shapes)")
    parser.add_argument("--num-train", type=int, default=SHAPES_SPLITS["shapes_train"].num_images)
    parser.add_argument("--num-val", type=int, default=SHAPES_SPLITS["shapes_val"].num_images)
    parser.add_argument("--image-size", type=int, default=SHAPES_SPLITS["shapes_train"].image_size)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    splits = [ShapesSplit("train", args.num_train, args.image_size, SHAPES_SPLITS["shapes_train"].seed),
              ShapesSplit("val", args.num_val, args.image_size, SHAPES_SPLITS["shapes_val"].seed)]
    root = ensure_shapes(args.root, splits)
    print(root)
    if any(s.params() != SHAPES_SPLITS[f"shapes_{s.split}"].params() for s in splits):
        print("The registered shapes_train / shapes_val load these files as they are (with a "
              "warning); delete them to get the built-in splits back.")


if __name__ == "__main__":
    main()
