"""train_net.py fails early and clearly: missing COCO, missing weights, config-key typos; and picks
the evaluators from the dataset."""
import json

import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import default_argument_parser
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from helpers import REPO, load_script

train_net = load_script("train_net.py")


def args_for(*argv):
    return default_argument_parser().parse_args(list(argv))


@pytest.fixture
def no_model(monkeypatch):
    """The checks must fire before anything is built."""
    def fail(*a, **k):
        raise AssertionError("a model was built before the check")
    monkeypatch.setattr(train_net.Trainer, "build_model", classmethod(fail))
    monkeypatch.setattr(train_net, "instantiate", fail)


@pytest.mark.parametrize("config, expected", [
    ("configs/mask_rcnn_dcdc_r50.yaml", "coco/annotations/instances_train2017.json"),
    ("configs/mask_rcnn_dcdc_r50.py", "coco/annotations/instances_train2017.json"),
    ("configs/panoptic_fpn_dcdc_r50_dcdc_neck.yaml", "coco_2017_train_panoptic_separated"),
])
def test_missing_coco_fails_at_once(config, expected, tmp_path, monkeypatch, no_model):
    monkeypatch.chdir(tmp_path)  # detectron2's builtin COCO paths are relative: datasets/coco/...
    with pytest.raises(FileNotFoundError) as e:
        train_net.main(args_for("--config-file", str(REPO / config), "MODEL.DEVICE", "cpu")
                       if config.endswith(".yaml") else
                       args_for("--config-file", str(REPO / config), "train.device=cpu"))
    msg = str(e.value)
    assert expected in msg and "DETECTRON2_DATASETS" in msg
    assert str(tmp_path / "datasets") in msg  # the folder it looked in, made absolute
    assert "prepare_panoptic_fpn.py" in msg and "panoptic_stuff_" in msg


def test_eval_only_checks_only_the_test_set(tmp_path, monkeypatch, no_model):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        train_net.main(args_for("--config-file", str(REPO / "configs/faster_rcnn_r50.yaml"),
                                "--eval-only"))


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        train_net.check_weights("pretrained/DCDC-R50.pkl", "MODEL.WEIGHTS")
    assert "tools/convert_classifier_to_d2.py" in str(e.value)
    assert 'MODEL.WEIGHTS ""' in str(e.value)
    train_net.check_weights("", "MODEL.WEIGHTS")  # from scratch
    train_net.check_weights("detectron2://ImageNetPretrained/MSRA/R-50.pkl", "MODEL.WEIGHTS")
    (tmp_path / "w.pkl").write_bytes(b"")
    train_net.check_weights(str(tmp_path / "w.pkl"), "MODEL.WEIGHTS")


def test_yaml_key_typo_names_the_key(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(f'_BASE_: "{REPO}/configs/faster_rcnn_dcdc_r50.yaml"\n'
                   'MODEL:\n  DCDC:\n    OPRATOR: "lsa"\n')
    with pytest.raises(KeyError, match=r"MODEL\.DCDC\.OPRATOR.*typo\.yaml.*MODEL\.DCDC\.OPERATOR"):
        train_net.setup(args_for("--config-file", str(bad)))
    with pytest.raises(KeyError, match=r"MODEL\.DCDC\.NEK from the command line.*MODEL\.DCDC\.NECK"):
        train_net.setup(args_for("--config-file", str(REPO / "configs/faster_rcnn_dcdc_r50.yaml"),
                                 "MODEL.DCDC.NEK", "dcdc"))
    cfg = train_net.setup(args_for("--config-file", str(REPO / "configs/faster_rcnn_dcdc_r50.yaml"),
                                   "MODEL.DCDC.NECK", "involution"))
    assert cfg.MODEL.DCDC.NECK == "involution" and cfg.MODEL.DCDC.OPERATOR == "dcdc"


def test_lazy_override_typo_names_the_key():
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(REPO / "configs/retinanet_dcdc_r50.py"))
    with pytest.raises(KeyError, match=r"train\.max_itr.*Did you mean max_iter"):
        train_net.check_lazy_overrides(cfg, ["train.max_itr=10"])
    with pytest.raises(KeyError, match=r"model\.backbone\.bottom_up\.stages\.dept"):
        train_net.check_lazy_overrides(cfg, ["model.backbone.bottom_up.stages.dept=26"])
    with pytest.raises(KeyError, match=r"model\.backbon"):
        train_net.check_lazy_overrides(cfg, ["model.backbon.out_channels=128"])
    # Existing keys, and arguments the LazyCall target accepts but the config leaves at default.
    train_net.check_lazy_overrides(cfg, ["train.max_iter=10", "model.backbone.square_pad=0",
                                         "model.backbone.bottom_up.stages.depth=26"])


@pytest.fixture
def tiny_coco(tmp_path):
    import cv2

    images, annotations = [], []
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.zeros((32, 32, 3), np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 32, "width": 32})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [4, 4, 10, 10], "area": 100,
                            "segmentation": [[4, 4, 14, 4, 14, 14, 4, 14]]})
    (tmp_path / "a.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}))
    name = f"dcdc_test_tiny_{id(tmp_path)}"
    register_coco_instances(name, {}, str(tmp_path / "a.json"), str(tmp_path))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_evaluators_follow_the_dataset(tiny_coco, tmp_path):
    cfg = train_net.setup(args_for("--config-file", str(REPO / "configs/mask_rcnn_dcdc_r50.yaml"),
                                   "OUTPUT_DIR", str(tmp_path / "out")))
    assert isinstance(train_net.build_evaluator(cfg, tiny_coco), COCOEvaluator)
    # A panoptic-separated dataset (metadata as detectron2 registers it): all three evaluators.
    name = tiny_coco + "_panoptic_separated"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        evaluator_type="coco_panoptic_seg", json_file=str(tmp_path / "a.json"),
        panoptic_json="p.json", panoptic_root="p", sem_seg_root="s", ignore_label=255,
        stuff_classes=["things", "sky"], thing_dataset_id_to_contiguous_id={1: 0},
        stuff_dataset_id_to_contiguous_id={0: 0, 2: 1}, thing_classes=["a"])
    try:
        ev = train_net.build_evaluator(cfg, name)
        assert isinstance(ev, DatasetEvaluators)
        assert {type(e) for e in ev._evaluators} == {
            COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator}
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(evaluator_type="lvis")
    try:
        with pytest.raises(NotImplementedError, match="evaluator_type 'lvis'"):
            train_net.build_evaluator(cfg, name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
