"""Pretrain -> convert -> fine-tune: a classifier checkpoint of tools/train_classifier.py becomes
the backbone of a detectron2 detector (tools/convert_classifier_to_d2.py), which then trains."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("timm")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(REPO, "configs", "quickstart_panoptic_fpn_dcdc_shapes_instant.yaml")


def test_pretrained_classifier_converts_and_detector_trains(tmp_path):
    for needed in ("tools/convert_classifier_to_d2.py", "train_net.py", INSTANT):
        if not os.path.isfile(os.path.join(REPO, needed)):
            pytest.fail(f"{needed} is missing")
    from dcdc.engine import Trainer
    from dcdc.engine import classifier_training as tc
    from test_train_classifier import _image_folder

    # 1. Pretrain a DCDC-ResNet-26 for two iterations.
    data, cls_out = _image_folder(str(tmp_path / "data")), str(tmp_path / "cls")
    tc.main(["--data-dir", data, "--output", cls_out, "--model", "dcdc_resnet26",
             "--img-size", "32", "--batch-size", "4", "--workers", "0", "--epochs", "1",
             "--iters-per-epoch", "2"])
    final = os.path.join(cls_out, "model_final.pth")
    classifier = torch.load(final, map_location="cpu", weights_only=True)["state_dict"]

    # 2. Convert it, as the README says.
    pkl = str(tmp_path / "DCDC-R26-shapes.pkl")
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_classifier_to_d2.py"),
                          final, pkl], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr

    # 3. A Panoptic FPN with a full-width DCDC-R26 backbone loads it and trains a few iterations.
    from dcdc.config import get_dcdc_cfg

    cfg = get_dcdc_cfg(INSTANT, [
        "MODEL.WEIGHTS", pkl,
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "64", "MODEL.RESNETS.RES2_OUT_CHANNELS", "256",
        "MODEL.RESNETS.WIDTH_PER_GROUP", "64", "MODEL.RESNETS.NORM", "FrozenBN",
        "MODEL.BACKBONE.FREEZE_AT", "2", "INPUT.FORMAT", "RGB",
        "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]",
        "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]",
        "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
        "OUTPUT_DIR", str(tmp_path / "det"),
    ], freeze=True)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    backbone = trainer.model.backbone.bottom_up.state_dict()
    loaded = [k for k in classifier if k in backbone]
    assert len(loaded) == len([k for k in backbone if not k.endswith("num_batches_tracked")])
    for key in loaded:
        np.testing.assert_allclose(backbone[key].numpy(), classifier[key].float().numpy(),
                                   err_msg=key)
    # Paper setting: stem and res2 frozen (FrozenBN, no gradients), the rest fine-tuned.
    frozen = trainer.model.backbone.bottom_up.res2[0].conv1.weight
    before = frozen.detach().clone()
    tuned = trainer.model.backbone.bottom_up.res4[0].shortcut.weight
    tuned_before = tuned.detach().clone()
    trainer.train()
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(math.isfinite(v) for v, _ in losses)
    assert torch.equal(frozen, before) and not torch.equal(tuned, tuned_before)
