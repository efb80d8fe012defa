"""The built-in shapes generator: deterministic bytes, real COCO files, detectron2 registration."""
import json
import os

import numpy as np
import pytest

from dcdc.data import CATEGORIES, ShapesSplit, ensure_shapes, get_shapes_metadata, register_shapes
from dcdc.data.shapes import file_hashes

SPLITS = [ShapesSplit("train", 6, 96, seed=11), ShapesSplit("val", 3, 96, seed=12)]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return ensure_shapes(str(tmp_path_factory.mktemp("d2") / "shapes"), SPLITS)


def test_same_seed_same_bytes(shapes_root, tmp_path):
    again = ensure_shapes(str(tmp_path / "shapes"), SPLITS)
    first, second = file_hashes(shapes_root), file_hashes(again)
    assert len(first) == (6 + 3) * 3 + 4 + 2  # image, panoptic and semantic PNG; 4 JSON; 2 stamps
    assert first == second


def test_other_seed_other_images(shapes_root, tmp_path):
    other = ensure_shapes(str(tmp_path / "shapes"), [ShapesSplit("val", 3, 96, seed=13)])
    assert file_hashes(other)["val/000001.jpg"] != file_hashes(shapes_root)["val/000001.jpg"]


def test_stale_split_is_regenerated(tmp_path):
    root = str(tmp_path / "shapes")
    ensure_shapes(root, [ShapesSplit("val", 2, 96, seed=0)])
    ensure_shapes(root, [ShapesSplit("val", 3, 96, seed=0)])
    assert len(json.load(open(os.path.join(root, "annotations", "instances_val.json")))["images"]) == 3


def test_instances_load_with_pycocotools(shapes_root):
    from pycocotools.coco import COCO

    coco = COCO(os.path.join(shapes_root, "annotations", "instances_train.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 6 * 2
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {
        "circle", "triangle", "square", "star"}
    for ann in anns:
        assert isinstance(ann["segmentation"], list) and ann["iscrowd"] == 0
        # polygons follow pixel edges: rasterizing them gives back the visible area exactly
        assert coco.annToMask(ann).sum() == ann["area"]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96


def test_panoptic_and_semantic_pngs(shapes_root):
    from panopticapi.utils import rgb2id
    from PIL import Image

    pan = json.load(open(os.path.join(shapes_root, "annotations", "panoptic_val.json")))
    assert {c["id"]: c["isthing"] for c in pan["categories"]} == {
        c["id"]: c["isthing"] for c in CATEGORIES}
    stuff_map = get_shapes_metadata()["stuff_dataset_id_to_contiguous_id"]
    thing_ids = {c["id"] for c in CATEGORIES if c["isthing"]}
    for ann in pan["annotations"]:
        ids = rgb2id(np.asarray(Image.open(os.path.join(shapes_root, "panoptic_val", ann["file_name"]))))
        sem = np.asarray(Image.open(os.path.join(shapes_root, "panoptic_stuff_val", ann["file_name"])))
        segs = ann["segments_info"]
        assert sorted(np.unique(ids[ids > 0]).tolist()) == sorted(s["id"] for s in segs)
        assert any(s["category_id"] in thing_ids for s in segs)
        assert any(s["category_id"] not in thing_ids for s in segs)
        for s in segs:
            assert (ids == s["id"]).sum() == s["area"]
            # prepare_panoptic_fpn.py: things -> 0, stuff -> contiguous 1..N, void -> 255
            expected = 0 if s["category_id"] in thing_ids else stuff_map[s["category_id"]]
            assert np.all(sem[ids == s["id"]] == expected)
        assert np.all(sem[ids == 0] == 255)


def test_registered_like_coco(shapes_root):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    register_shapes("test_shapes_val", shapes_root, SPLITS[1])
    instances = DatasetCatalog.get("test_shapes_val")
    panoptic = DatasetCatalog.get("test_shapes_val_panoptic_separated")
    assert len(instances) == len(panoptic) == 3
    assert all(os.path.isfile(d["sem_seg_file_name"]) for d in panoptic)
    assert MetadataCatalog.get("test_shapes_val").evaluator_type == "coco"
    meta = MetadataCatalog.get("test_shapes_val_panoptic_separated")
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert meta.stuff_classes == ["things", "sky", "grass", "sand", "brick"]
    assert meta.thing_classes == ["circle", "triangle", "square", "star"]


def test_builtin_splits_registered():
    from detectron2.data import DatasetCatalog

    names = DatasetCatalog.list()
    for name in ("shapes_train", "shapes_val_panoptic_separated", "shapes_mini_val_panoptic_separated"):
        assert name in names


def test_bad_parameters():
    with pytest.raises(ValueError, match="image_size"):
        ShapesSplit("val", 2, 16)
    with pytest.raises(ValueError, match="num_images"):
        ShapesSplit("val", 0, 96)


def test_split_resized_by_the_cli_is_what_the_registered_dataset_loads(tmp_path):
    """``python -m dcdc.data.shapes --num-train N`` writes a split the registered dataset keeps
    (not one the next load silently regenerates at the built-in size)."""
    from detectron2.data import DatasetCatalog

    from dcdc.data.shapes import SHAPES_SPLITS, main

    root = str(tmp_path / "shapes")
    main(["--root", root, "--num-train", "3", "--num-val", "2", "--image-size", "64"])
    before = file_hashes(root)
    name = "test_user_resized_shapes_train"
    register_shapes(name, root, SHAPES_SPLITS["shapes_train"])
    try:
        dicts = DatasetCatalog.get(name)
    finally:
        for suffix in ("", "_panoptic_separated", "_panoptic_stuffonly"):
            DatasetCatalog.remove(name + suffix)
    assert len(dicts) == 3 and {(d["height"], d["width"]) for d in dicts} == {(64, 64)}
    assert file_hashes(root) == before
    # Another seed or generator version is not the user's resizing: still regenerated.
    ensure_shapes(root, [ShapesSplit("val", 2, 64, seed=99)], keep_resized=True)
    assert file_hashes(root)["val/000001.jpg"] != before["val/000001.jpg"]


def test_classification_crops_follow_the_split_on_disk(tmp_path, monkeypatch):
    """The shapes ImageFolder is cut from the split the user generated, and recut when it changes."""
    from dcdc.data.classification import ensure_shapes_imagefolder
    from dcdc.data.shapes import main

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    root, cls = str(tmp_path / "shapes"), str(tmp_path / "cls")

    def crops(split):
        return sum(len(files) for _, _, files in os.walk(os.path.join(cls, split)))

    def objects(split):
        anns = json.load(open(os.path.join(root, "annotations", f"instances_{split}.json")))
        return len(anns["annotations"]), len(anns["images"])

    main(["--root", root, "--num-train", "2", "--num-val", "1", "--image-size", "64"])
    ensure_shapes_imagefolder(cls, size=16)
    assert objects("train")[1] == 2 and 0 < crops("train") <= objects("train")[0]
    before = crops("train")
    # Before the fix the built-in 1000-image split was regenerated here and cut instead.
    main(["--root", root, "--num-train", "4", "--num-val", "1", "--image-size", "64"])
    ensure_shapes_imagefolder(cls, size=16)
    assert objects("train")[1] == 4 and before < crops("train") <= objects("train")[0]
    stamp = json.load(open(os.path.join(cls, ".complete.json")))
    assert sum(stamp["counts"]["train"].values()) == crops("train")
