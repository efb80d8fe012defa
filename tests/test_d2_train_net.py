"""The pre-flight checks of dcdc.engine, and train_net.py running them before anything is built:
missing COCO, missing weights, config-key typos; and the evaluators picked from the dataset."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

import dcdc  # noqa: F401  registers the DCDC backbones
from dcdc.config import get_dcdc_cfg
from dcdc.engine import (build_evaluator, check_datasets, check_lazy_overrides, check_weights,
                         lazy_dataset_names)

REPO = Path(__file__).resolve().parents[1]


def run_train_net(cwd, *argv):
    """``python train_net.py ARGV`` as a user runs it, from ``cwd``; (exit code, output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("DETECTRON2_DATASETS", None)
    proc = subprocess.run([sys.executable, str(REPO / "train_net.py"), *argv], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    return proc.returncode, proc.stdout


def coco_message(names, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # detectron2's builtin COCO paths are relative: datasets/coco/...
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    with pytest.raises(FileNotFoundError) as e:
        check_datasets(names)
    return str(e.value)


@pytest.mark.parametrize("config, expected", [
    ("configs/mask_rcnn_dcdc_r50.yaml", "coco/annotations/instances_train2017.json"),
    ("configs/mask_rcnn_dcdc_r50.py", "coco/annotations/instances_train2017.json"),
    ("configs/panoptic_fpn_dcdc_r50_dcdc_neck.yaml", "coco_2017_train_panoptic_separated"),
])
def test_missing_coco_fails_at_once(config, expected, tmp_path, monkeypatch):
    if config.endswith(".yaml"):
        names = list(get_dcdc_cfg(str(REPO / config)).DATASETS.TRAIN)
    else:
        names = lazy_dataset_names(LazyConfig.load(str(REPO / config)),
                                   "dataloader.train.dataset.names")
    msg = coco_message(names, tmp_path, monkeypatch)
    assert expected in msg and "DETECTRON2_DATASETS" in msg
    assert str(tmp_path / "datasets") in msg  # the folder it looked in, made absolute
    assert "prepare_panoptic_fpn.py" in msg and "panoptic_stuff_" in msg


@pytest.mark.parametrize("config, extra, expected", [
    ("configs/mask_rcnn_dcdc_r50.py", ["train.device=cpu"], "instances_train2017.json"),
    ("configs/faster_rcnn_r50.yaml", ["--eval-only"], "instances_val2017.json"),
])
def test_train_net_checks_before_building_anything(config, extra, expected, tmp_path):
    """train_net.py runs the dataset check first (eval-only: the test set only) and stops
    before default_setup logs or builds a model."""
    code, log = run_train_net(tmp_path, "--config-file", str(REPO / config), *extra)
    assert code == 2 and "Traceback" not in log, log[-3000:]
    assert "train_net.py: error: Dataset '" in log and expected in log, log[-3000:]
    if "--eval-only" in extra:
        assert "instances_train2017.json" not in log
    assert "Model:" not in log and "Full config saved" not in log


def test_lazy_dataset_names():
    cfg = LazyConfig.load(str(REPO / "configs/retinanet_dcdc_r50.py"))
    assert lazy_dataset_names(cfg, "dataloader.train.dataset.names") == ["coco_2017_train"]
    assert lazy_dataset_names(cfg, "dataloader.nothing.names") == []
    cfg.dataloader.test.dataset.names = ["a", "b"]
    assert lazy_dataset_names(cfg, "dataloader.test.dataset.names") == ["a", "b"]


def test_unregistered_dataset_names_close_matches():
    with pytest.raises(KeyError, match=r"'coco_2017_trian' is not registered.*coco_2017_train"):
        check_datasets(["coco_2017_trian"])


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        check_weights("pretrained/DCDC-R50.pkl", "MODEL.WEIGHTS")
    assert "tools/convert_classifier_to_d2.py" in str(e.value)
    assert 'MODEL.WEIGHTS ""' in str(e.value)
    # LazyConfig keys for a LazyConfig; for --eval-only the trained model, not ImageNet weights
    with pytest.raises(FileNotFoundError) as e:
        check_weights("pretrained/DCDC-R50.pkl", "train.init_checkpoint")
    assert 'train.init_checkpoint=""' in str(e.value) and "MODEL." not in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        check_weights("out/model_final.pth", "MODEL.WEIGHTS", eval_only=True)
    assert "--eval-only evaluates a trained model" in str(e.value)
    assert "convert_classifier" not in str(e.value)
    check_weights("", "MODEL.WEIGHTS")  # from scratch
    check_weights("detectron2://ImageNetPretrained/MSRA/R-50.pkl", "MODEL.WEIGHTS")
    (tmp_path / "w.pkl").write_bytes(b"")
    check_weights(str(tmp_path / "w.pkl"), "MODEL.WEIGHTS")


def test_yaml_key_typo_names_the_key(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(f'_BASE_: "{REPO}/configs/faster_rcnn_dcdc_r50.yaml"\n'
                   'MODEL:\n  DCDC:\n    OPRATOR: "lsa"\n')
    code, log = run_train_net(tmp_path, "--config-file", str(bad))
    assert code == 2 and "Traceback" not in log, log[-3000:]
    assert "train_net.py: error: Config key MODEL.DCDC.OPRATOR" in log
    assert "Did you mean MODEL.DCDC.OPERATOR" in log
    assert "typo.yaml" in log


def test_lazy_override_typo_names_the_key():
    cfg = LazyConfig.load(str(REPO / "configs/retinanet_dcdc_r50.py"))
    with pytest.raises(KeyError, match=r"train\.max_itr.*Did you mean max_iter"):
        check_lazy_overrides(cfg, ["train.max_itr=10"])
    with pytest.raises(KeyError, match=r"model\.backbone\.bottom_up\.stages\.dept"):
        check_lazy_overrides(cfg, ["model.backbone.bottom_up.stages.dept=26"])
    with pytest.raises(KeyError, match=r"model\.backbon"):
        check_lazy_overrides(cfg, ["model.backbon.out_channels=128"])
    with pytest.raises(KeyError, match=r"train\.sed.*Did you mean seed"):
        check_lazy_overrides(cfg, ["train.sed=1"])
    # Existing keys, arguments the LazyCall target accepts but the config leaves at default,
    # and dcdc's optional train.* keys.
    check_lazy_overrides(cfg, ["train.max_iter=10", "model.backbone.square_pad=0",
                               "model.backbone.bottom_up.stages.depth=26", "train.seed=3",
                               "train.skip_unreadable_images=False",
                               "train.expected_results=[['bbox','AP',1.0,0.1]]"])


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
    cfg = get_dcdc_cfg(str(REPO / "configs/mask_rcnn_dcdc_r50.yaml"),
                       ["OUTPUT_DIR", str(tmp_path / "out")])
    assert isinstance(build_evaluator(cfg, tiny_coco), COCOEvaluator)
    # A panoptic-separated dataset (metadata as detectron2 registers it): all three evaluators.
    name = tiny_coco + "_panoptic_separated"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        evaluator_type="coco_panoptic_seg", json_file=str(tmp_path / "a.json"),
        panoptic_json="p.json", panoptic_root="p", sem_seg_root="s", ignore_label=255,
        stuff_classes=["things", "sky"], thing_dataset_id_to_contiguous_id={1: 0},
        stuff_dataset_id_to_contiguous_id={0: 0, 2: 1}, thing_classes=["a"])
    try:
        ev = build_evaluator(cfg, name)
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
            build_evaluator(cfg, name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
