"""Hybrid Task Cascade: every switch combination trains and predicts, each switch does what it
says (checked against independent re-computations), the semantic maps match the panoptic
annotations, parameter counts match Table VI, YAML == LazyConfig, and the instant config runs
through train_net.py with evaluation and drawing."""
import itertools
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.layers import FrozenBatchNorm2d
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from detectron2.utils.visualizer import Visualizer

from dcdc.config import get_dcdc_cfg
from dcdc.data.semantic import (
    IGNORE_VALUE,
    PREPARE_COCO,
    make_semantic_maps,
    register_all_htc,
    register_htc_instances,
)
from dcdc.data.shapes import SHAPES_SPLITS, _paths, ensure_shapes
from dcdc.engine import check_datasets
from dcdc.engine.metrics import read_metrics
from dcdc.modeling.htc import HybridTaskCascadeROIHeads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
INSTANT = os.path.join(CONFIGS, "quickstart_htc_dcdc_shapes_instant.yaml")


def _register_htc(root):
    for n in [n + "_htc" for n in SHAPES_SPLITS] + ["coco_2017_train_htc", "coco_2017_val_htc"]:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
    register_all_htc(root)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The ``*_htc`` datasets registered under a temporary $DETECTRON2_DATASETS."""
    root = str(tmp_path_factory.mktemp("datasets"))
    _register_htc(root)
    yield root
    _register_htc(None)


def _cfg(*opts):
    return get_dcdc_cfg(INSTANT, ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", 0, *opts])


@pytest.fixture(scope="module")
def batch(datasets):
    torch.manual_seed(0)
    return next(iter(build_detection_train_loader(_cfg())))


def _count(model):
    return sum(p.numel() for p in model.parameters()) + sum(
        m.weight.numel() + m.bias.numel() for m in model.modules()
        if isinstance(m, FrozenBatchNorm2d))


@pytest.mark.parametrize("interleaved,info_flow,semantic",
                         list(itertools.product([True, False], repeat=3)))
def test_every_switch_combination_trains_and_predicts(batch, interleaved, info_flow, semantic):
    torch.manual_seed(0)
    cfg = _cfg("MODEL.HTC.INTERLEAVED", interleaved, "MODEL.HTC.MASK_INFO_FLOW", info_flow,
               "MODEL.HTC.SEMANTIC_ON", semantic)
    model = build_model(cfg)
    heads = model.roi_heads
    assert isinstance(heads, HybridTaskCascadeROIHeads) and len(heads.mask_head) == 3
    assert [h.info_flow is not None for h in heads.mask_head] == [False, info_flow, info_flow]
    assert (heads.semantic_head is not None) == semantic
    with EventStorage():
        losses = model(batch)
    expected = {f"loss_{n}_stage{k}" for n in ("cls", "box_reg", "mask") for k in range(3)}
    expected |= {"loss_rpn_cls", "loss_rpn_loc"} | ({"loss_semantic_seg"} if semantic else set())
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("mask_head.0", "mask_head.1", "mask_head.2", "semantic_head", "info_flow"):
        params = [(n, p) for n, p in heads.named_parameters() if name in n]
        # mask heads of every stage, the semantic branch and the info-flow convs all learn
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in params), name
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"]}])[0]["instances"]
    assert len(out) > 0 and out.pred_masks.shape[1:] == batch[0]["image"].shape[1:]


def test_interleaved_mask_branch_sees_the_refined_boxes(batch, monkeypatch):
    """Interleaved: stage k's mask loss is computed on the boxes stage k+1 receives (stage k's
    refinement); not interleaved: on the boxes stage k itself received."""
    for interleaved in (True, False):
        torch.manual_seed(0)
        model = build_model(_cfg("MODEL.HTC.INTERLEAVED", interleaved))
        heads, seen = model.roi_heads, {"stage": [], "mask": []}
        run_stage, mask_loss = heads._run_stage, heads._mask_loss

        def record_stage(features, proposals, stage, semantic=None):
            seen["stage"].append([p.proposal_boxes.tensor.clone() for p in proposals])
            return run_stage(features, proposals, stage, semantic)

        def record_mask(features, proposals, stage, semantic):
            seen["mask"].append([p.proposal_boxes.tensor.clone() for p in proposals])
            return mask_loss(features, proposals, stage, semantic)

        monkeypatch.setattr(heads, "_run_stage", record_stage)
        monkeypatch.setattr(heads, "_mask_loss", record_mask)
        with EventStorage():
            model(batch)
        for k in range(2):
            target = seen["stage"][k + 1] if interleaved else seen["stage"][k]
            for a, b in zip(seen["mask"][k], target):
                assert torch.equal(a, b)
        if interleaved:  # the refined boxes differ from the stage's input
            assert not torch.equal(seen["mask"][0][0], seen["stage"][0][0])


def test_test_time_masks_average_the_stages_with_information_flow(batch):
    torch.manual_seed(0)
    model = build_model(_cfg()).eval()
    heads = model.roi_heads
    for head in heads.mask_head:  # non-trivial weights so every stage differs
        for p in head.parameters():
            torch.nn.init.normal_(p, std=0.05)
    with torch.no_grad():
        images = model.preprocess_image([{"image": batch[0]["image"]}])
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features)
        instances, _ = heads(images, features, proposals)
        # independent re-computation: chain the heads by hand, average the class's sigmoid
        _, semantic, _ = heads.semantic_head(features)
        boxes = [instances[0].pred_boxes]
        x = heads.mask_pooler([features[f] for f in heads.mask_in_features], boxes)
        s = heads.semantic_pooler([semantic], boxes)
        x = x + s
        previous, total = None, 0
        cls = instances[0].pred_classes
        for i, head in enumerate(heads.mask_head):
            y = x if previous is None else x + torch.relu(head.info_flow(previous))
            for layer in head.conv_norm_relus:
                y = layer(y)
            previous = y
            logits = head.predictor(torch.relu(head.deconv(y)))
            total = total + logits[torch.arange(len(cls)), cls][:, None].sigmoid()
    torch.testing.assert_close(instances[0].pred_masks, total / 3)


def test_semantic_fusion_switches_where_the_semantic_features_go(batch):
    """Box scores depend on the semantic branch iff "box" is fused; masks iff "mask" is."""
    for fusion in (("box",), ("mask",), ("box", "mask")):
        torch.manual_seed(0)
        model = build_model(_cfg("MODEL.HTC.SEMANTIC_FUSION", fusion)).eval()
        inputs = [{"image": batch[0]["image"]}]
        with torch.no_grad():
            images = model.preprocess_image(inputs)
            features = model.backbone(images.tensor)
            proposals, _ = model.proposal_generator(images, features)
            a = model.roi_heads._forward_box(features, proposals,
                                             semantic=model.roi_heads.semantic_head(features)[1])
            a = model.roi_heads._forward_mask(features, a,
                                              semantic=model.roi_heads.semantic_head(features)[1])
            masks = a[0].pred_masks.clone()  # _forward_mask writes into the instances
            torch.nn.init.normal_(model.roi_heads.semantic_head.embedding.weight, std=1.0)
            sem = model.roi_heads.semantic_head(features)[1]
            b = model.roi_heads._forward_box(features, proposals, semantic=sem)
            masks_same_boxes = model.roi_heads._forward_mask(features, [a[0]], semantic=sem)
        assert torch.equal(a[0].scores, b[0].scores) == ("box" not in fusion), fusion
        assert torch.equal(masks, masks_same_boxes[0].pred_masks) == \
            ("mask" not in fusion), fusion


def test_semantic_branch_needs_labels(batch):
    model = build_model(_cfg())
    unlabeled = [{k: v for k, v in x.items() if k != "sem_seg"} for x in batch]
    with EventStorage(), pytest.raises(ValueError, match="SEMANTIC_ON False"):
        model(unlabeled)


def test_semantic_maps_match_the_panoptic_annotations(datasets, tmp_path):
    shapes = os.path.join(datasets, "shapes")
    spec = SHAPES_SPLITS["shapes_mini_val"]
    ensure_shapes(shapes, [spec])
    p = _paths(shapes, spec.split)
    out = tmp_path / "maps"
    classes = make_semantic_maps(p["panoptic_json"], p["panoptic_root"], str(out))
    panoptic = json.load(open(p["panoptic_json"]))
    assert classes == [c["name"] for c in panoptic["categories"]] and len(classes) == 8
    for ann in panoptic["annotations"]:
        label = cv2.imread(str(out / ann["file_name"]), cv2.IMREAD_UNCHANGED)
        rgb = cv2.imread(os.path.join(p["panoptic_root"], ann["file_name"]))[..., ::-1]
        ids = rgb[..., 0].astype(int) + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        expected = np.full(ids.shape, IGNORE_VALUE)
        for seg in ann["segments_info"]:
            expected[ids == seg["id"]] = [c["id"] for c in panoptic["categories"]].index(
                seg["category_id"])
        np.testing.assert_array_equal(label, expected)
    # existing maps are kept (an interrupted run continues), never rewritten
    first = out / panoptic["annotations"][0]["file_name"]
    first.write_bytes(b"kept")
    make_semantic_maps(p["panoptic_json"], p["panoptic_root"], str(out))
    assert first.read_bytes() == b"kept"


def test_missing_maps_name_the_command(datasets, tmp_path):
    spec = SHAPES_SPLITS["shapes_mini_val"]
    p = _paths(ensure_shapes(os.path.join(datasets, "shapes"), [spec]), spec.split)
    register_htc_instances("htc_test_without_maps", {}, p["instances_json"], p["image_root"],
                           str(tmp_path / "no_maps"), command=PREPARE_COCO)
    try:
        with pytest.raises(FileNotFoundError, match="8 of 8 semantic maps are missing") as e:
            DatasetCatalog.get("htc_test_without_maps")
        assert PREPARE_COCO in str(e.value)
    finally:
        DatasetCatalog.remove("htc_test_without_maps")
        MetadataCatalog.remove("htc_test_without_maps")


def test_dataset_check_names_the_missing_coco_maps_and_the_command(datasets):
    coco = os.path.join(datasets, "coco")
    os.makedirs(os.path.join(coco, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(coco, "val2017"), exist_ok=True)
    open(os.path.join(coco, "annotations", "instances_val2017.json"), "w").write("{}")
    with pytest.raises(FileNotFoundError, match="stuffthingmaps_panoptic_val2017") as e:
        check_datasets(["coco_2017_val_htc"])
    assert PREPARE_COCO in str(e.value)


@pytest.mark.parametrize("stem,paper", [("htc_r50", 80.0), ("htc_dcdc_r50_dcdc_neck", 68.3)])
def test_parameters_match_table_vi_and_yaml_equals_lazyconfig(stem, paper):
    cfg = get_dcdc_cfg(os.path.join(CONFIGS, stem + ".yaml"),
                       ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    yaml_model = build_model(cfg)
    lazy_model = instantiate(LazyConfig.load(os.path.join(CONFIGS, stem + ".py")).model)
    assert abs(_count(yaml_model) / 1e6 / paper - 1) < 0.02
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(yaml_model) == shapes(lazy_model)


def test_instant_config_trains_evaluates_and_draws(datasets, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "DETECTRON2_DATASETS": datasets, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", INSTANT, "OUTPUT_DIR", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = read_metrics(out / "metrics.json")
    final = [r for r in records if "bbox/AP" in r][-1]
    assert final["iteration"] == 4 and "segm/AP" in final  # evaluated after MAX_ITER 4
    losses = [r for r in records if "total_loss" in r][-1]
    assert {f"loss_mask_stage{k}" for k in range(3)} | {"loss_semantic_seg"} <= set(losses)

    # the Visualizer draws the trained model's predictions
    cfg = _cfg("MODEL.WEIGHTS", str(out / "model_final.pth"))
    record = DatasetCatalog.get("shapes_mini_val_htc")[0]
    image = cv2.imread(record["file_name"])
    instances = DefaultPredictor(cfg)(image)["instances"]
    assert len(instances) > 0 and instances.has("pred_masks")
    drawn = Visualizer(image[..., ::-1], MetadataCatalog.get("shapes_mini_val_htc")) \
        .draw_instance_predictions(instances).get_image()
    assert drawn.shape == image.shape and not np.array_equal(drawn, image[..., ::-1])
