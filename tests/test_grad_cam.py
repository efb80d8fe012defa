"""tools/grad_cam.py: the map points at the evidence, checkpoints load, the PNG is written."""
import argparse
import json
import os

import cv2
import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("pytorch_grad_cam")
timm = pytest.importorskip("timm")
import dcdc.modeling.timm_models  # noqa: E402,F401  (registers rednet26 etc.)
from dcdc.utils import grad_cam as gc  # noqa: E402


class RedDetector(nn.Module):
    """logit("red") = mean over pixels of (R - G); the evidence sits exactly on red pixels."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1))

    def forward(self, x):
        score = self.features(x).mean((2, 3))
        return torch.cat([score, -score], dim=1)


def _write(path, image_rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))


def test_cam_highlights_the_evidence(tmp_path):
    image = np.full((32, 32, 3), 230, np.uint8)
    image[4:14, 18:28] = (220, 20, 20)  # a red square, top right
    path = str(tmp_path / "red" / "a.png")
    _write(path, image)
    model = RedDetector().eval()
    loaded = gc.LoadedModel("red_detector", model, (3, 32, 32), 1.0, "bilinear", (0.0,) * 3,
                            (1.0,) * 3, ["red", "other"], model.features, checkpoint="x")
    (res,) = gc.compute_cams(loaded, [path])
    assert res["target"] == "red" and res["pred"] == "red"  # class from the folder name
    cam = res["cam"]
    assert cam.shape == (32, 32) and 0.0 <= cam.min() and cam.max() <= 1.0
    inside, outside = np.zeros((32, 32), bool), np.ones((32, 32), bool)
    inside[6:12, 20:26] = True
    outside[2:16, 16:30] = False
    assert cam[inside].mean() > 0.8 and cam[outside].max() < 0.1
    np.testing.assert_allclose(res["image"], image / 255.0, atol=1e-6)  # the input it was shown


def test_command_writes_png_side_by_side(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "val"
    for name in ("circle", "star"):
        for i in range(2):
            _write(str(images / name / f"{i}.png"), rng.integers(0, 255, (40, 40, 3), np.uint8))
    # A checkpoint as tools/train_classifier.py writes it: timm format + classes.json beside it.
    ckpt_dir = tmp_path / "run"
    ckpt_dir.mkdir()
    model = timm.create_model("rednet26", num_classes=2)
    torch.save({"state_dict": model.state_dict(), "epoch": 0, "version": 2,
                "args": argparse.Namespace(img_size=32, crop_pct=1.0)}, ckpt_dir / "last.pth.tar")
    with open(ckpt_dir / "classes.json", "w") as f:
        json.dump({"circle": 0, "star": 1}, f)

    loaded = gc.load_model(f"rednet26={ckpt_dir / 'last.pth.tar'}")
    assert loaded.classes == ["circle", "star"] and loaded.input_size == (3, 32, 32)
    # model_final.pth (tensors + data_config): the same input size, not timm's default 224
    torch.save({"state_dict": model.state_dict(), "data_config": {"img_size": 32, "crop_pct": 1.0}},
               ckpt_dir / "model_final.pth")
    assert gc.load_model(f"rednet26={ckpt_dir / 'model_final.pth'}").input_size == (3, 32, 32)
    assert loaded.target_layer is loaded.module.res5[-1]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value)

    out = str(tmp_path / "cam.png")
    with pytest.warns(UserWarning, match="random weights"):
        gc.main(["--model", f"rednet26={ckpt_dir / 'last.pth.tar'}", "--model", "tv:resnet18",
                 "--images", str(images), "--output", out, "--num-classes", "2"])
    png = cv2.imread(out)
    assert png is not None
    # Two images (one per class folder) in rows, input + two models in columns.
    height, width = png.shape[:2]
    assert width > height and width == 3 * 160


def test_missing_inputs_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        gc.load_model(f"rednet26={tmp_path / 'nope.pth'}")
    with pytest.raises(ValueError, match="no images"):
        gc.list_images([str(tmp_path)])
