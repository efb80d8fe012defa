"""detectron2's own command-line tools read our LazyConfigs unchanged.

tools/install_detectron2.py keeps detectron2's tools/ scripts in <venv>/share/detectron2/tools;
a detectron2 installed some other way may not have them, and then these tests are skipped.
"""
import os
import re
import subprocess
import sys

import pytest
from detectron2.config import LazyConfig, instantiate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(sys.prefix, "share", "detectron2", "tools")
pytestmark = pytest.mark.skipif(not os.path.isdir(TOOLS),
                                reason=f"detectron2's tools/ scripts are not in {TOOLS}")


def run_tool(name, *args, env=None):
    return subprocess.run([sys.executable, os.path.join(TOOLS, name), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_detectron2_analyze_model_counts_our_lazyconfig():
    config = os.path.join(REPO, "configs", "mask_rcnn_dcdc_r50.py")
    proc = run_tool("analyze_model.py", "--config-file", config, "--tasks", "parameter")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reported = float(re.search(r"^\| model\s+\| ([\d.]+)M", proc.stdout, re.M).group(1))
    model = instantiate(LazyConfig.load(config).model)
    assert reported == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6, abs=0.05)


def test_detectron2_lazyconfig_train_net_trains_and_evaluates(tmp_path):
    """Two iterations of the DCDC-neck Mask R-CNN on the built-in shapes data, then COCO eval."""
    proc = run_tool(
        "lazyconfig_train_net.py", "--config-file",
        os.path.join(REPO, "configs", "mask_rcnn_dcdc_r50_dcdc_neck.py"),
        "train.max_iter=2", 'train.init_checkpoint=""', "train.device=cpu", "train.eval_period=2",
        f"train.output_dir={tmp_path / 'out'}", "model.backbone.bottom_up.stages.norm=GN",
        "model.roi_heads.num_classes=4", "dataloader.train.dataset.names=shapes_mini_train",
        "dataloader.test.dataset.names=shapes_mini_val", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[64]",
        "dataloader.train.mapper.augmentations.0.max_size=64",
        "dataloader.test.mapper.augmentations.0.short_edge_length=64",
        "dataloader.test.mapper.augmentations.0.max_size=64",
        env={"DETECTRON2_DATASETS": str(tmp_path / "datasets")},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert os.path.isfile(tmp_path / "out" / "model_final.pth")
    assert "copypaste: Task: bbox" in proc.stdout + proc.stderr
