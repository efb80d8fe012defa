"""Every paper-row config builds on CPU at full size, takes one SGD step on two small random images
with finite losses and a gradient for every trainable parameter, then runs inference."""
from pathlib import Path

import pytest
import torch

from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from dcdc import add_dcdc_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml")
               if not p.stem.startswith("Base-") and "quickstart" not in p.stem
               and "shapes" not in p.stem)
SIZES = ((96, 128), (128, 96))


def make_inputs(sem_seg=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for h, w in SIZES:
        boxes = torch.tensor([[8.0, 8.0, 60.0, 50.0], [30.0, 20.0, 90.0, 80.0]])
        masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
            mask[y0:y1, x0:x1] = True
        instances = Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([1, 5]),
                              gt_masks=BitMasks(masks))
        d = {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
             "height": h, "width": w, "instances": instances}
        if sem_seg:  # Panoptic FPN's and HTC's semantic branches train on these
            d["sem_seg"] = torch.randint(0, 54, (h, w), generator=g)
        inputs.append(d)
    return inputs


def train_step_and_infer(model, panoptic, sem_seg=None):
    torch.manual_seed(0)
    model.train()
    inputs = make_inputs(panoptic if sem_seg is None else sem_seg)
    with EventStorage(0):
        losses = model(inputs)
    for name, loss in losses.items():
        assert torch.isfinite(loss), f"{name} = {loss}"
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optim = torch.optim.SGD([p for _, p in trainable], lr=1e-3, momentum=0.9)
    sum(losses.values()).backward()
    no_grad = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"no / non-finite gradient for {no_grad[:5]}"
    optim.step()

    model.eval()
    with torch.no_grad():
        outputs = model([{k: d[k] for k in ("image", "height", "width")} for d in inputs])
    assert len(outputs) == len(inputs)
    for out, (h, w) in zip(outputs, SIZES):
        assert out["instances"].image_size == (h, w)
        assert torch.isfinite(out["instances"].scores).all()
        if panoptic:
            assert out["sem_seg"].shape[-2:] == (h, w)
            assert out["panoptic_seg"][0].shape == (h, w)
    return losses


@pytest.mark.parametrize("name", NAMES)
def test_yaml_config_trains_and_infers(name):
    cfg = get_cfg()
    add_dcdc_config(cfg)
    cfg.merge_from_file(str(CONFIGS / f"{name}.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    htc = name.startswith("htc")
    losses = train_step_and_infer(model, panoptic="panoptic" in name,
                                  sem_seg="panoptic" in name or htc)
    expected = {"loss_cls", "loss_box_reg"} if "retinanet" in name else \
        {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    if "mask" in name or "panoptic" in name or htc:
        expected.add("loss_mask")
    if htc:
        expected.add("loss_semantic_seg")
    if "panoptic" in name:
        expected.add("loss_sem_seg")
    assert expected <= {k.rsplit("_stage", 1)[0] for k in losses}, sorted(losses)


@pytest.mark.parametrize("name", ["mask_rcnn_dcdc_r50_dcdc_neck", "retinanet_rednet50_involution_neck"])
def test_lazyconfig_trains_and_infers(name):
    cfg = LazyConfig.load(str(CONFIGS / f"{name}.py"))
    train_step_and_infer(instantiate(cfg.model), panoptic=False)
