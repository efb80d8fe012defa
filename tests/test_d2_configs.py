"""Every paper-row config: the YAML merges, the LazyConfig loads, both build the same model (same
parameter names and count), detectron2's LazyConfig tools can save and reload it, and the
parameter counts are the paper's (Tables V-VII, within 2%)."""

import pytest
import torch

from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model

from dcdc import add_dcdc_config

from dcdc.paper.counting import count_parameters
from dcdc.paper.results import DETECTOR_ROWS

from helpers import REPO

CONFIGS = REPO / "configs"
# Our leaf configs: every paper row (the quickstart / shapes configs are tested with the data).
NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml")
               if not p.stem.startswith("Base-") and "quickstart" not in p.stem
               and "shapes" not in p.stem)



def yaml_cfg(name, *opts):
    cfg = get_cfg()
    add_dcdc_config(cfg)
    cfg.merge_from_file(str(CONFIGS / f"{name}.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def test_every_paper_row_has_both_config_forms():
    rows = {r.config for r in DETECTOR_ROWS}
    assert rows <= set(NAMES), rows - set(NAMES)
    assert len(NAMES) >= 25
    for name in NAMES:
        assert (CONFIGS / f"{name}.py").is_file(), f"configs/{name}.py missing"


@pytest.mark.parametrize("name", NAMES)
def test_yaml_and_lazyconfig_build_the_same_model(name):
    cfg = yaml_cfg(name)
    lazy = LazyConfig.load(str(CONFIGS / f"{name}.py"))
    # The paper's 1x schedule and data, in both forms.
    assert cfg.SOLVER.MAX_ITER == lazy.train.max_iter
    assert cfg.SOLVER.BASE_LR == lazy.optimizer.lr
    assert cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER == pytest.approx(
        lazy.lr_multiplier.warmup_length)
    assert list(cfg.DATASETS.TRAIN) == [lazy.dataloader.train.dataset.names]
    assert cfg.MODEL.WEIGHTS == lazy.train.init_checkpoint
    assert_same_input(cfg, lazy)
    assert_same_model(build_model(cfg), instantiate(lazy.model))


def assert_same_input(cfg, lazy):
    """The YAML and the LazyConfig feed the model the same images: channel order (the data
    loaders' and the model's) and normalization."""
    assert cfg.INPUT.FORMAT == lazy.model.input_format
    assert cfg.INPUT.FORMAT == lazy.dataloader.train.mapper.image_format
    assert cfg.INPUT.FORMAT == lazy.dataloader.test.mapper.image_format
    assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx(list(lazy.model.pixel_mean))
    assert list(cfg.MODEL.PIXEL_STD) == pytest.approx(list(lazy.model.pixel_std))


def assert_same_model(y, z):
    ys, zs = y.state_dict(), z.state_dict()
    assert sorted(ys) == sorted(zs)
    assert {k: tuple(v.shape) for k, v in ys.items()} == {k: tuple(v.shape) for k, v in zs.items()}
    assert count_parameters(y) == count_parameters(z)
    assert [n for n, p in y.named_parameters() if not p.requires_grad] == \
        [n for n, p in z.named_parameters() if not p.requires_grad]
    # the normalization build_model / instantiate put in the (non-persistent) buffers
    for key in ("pixel_mean", "pixel_std"):
        assert torch.equal(getattr(y, key), getattr(z, key)), key


def test_quickstart_yaml_and_lazyconfig_twins_build_the_same_model():
    """configs/quickstart_panoptic_fpn_dcdc_shapes_instant.{yaml,py}: one checkpoint draws the
    same in both, so both take RGB with the ImageNet mean / std (the DCDC input; the shapes
    quickstart trains from scratch, and the DCDC-R26 classifiers it can start from are RGB)."""
    cfg = yaml_cfg("quickstart_panoptic_fpn_dcdc_shapes_instant")
    lazy = LazyConfig.load(str(CONFIGS / "quickstart_panoptic_fpn_dcdc_shapes_instant.py"))
    assert cfg.INPUT.FORMAT == "RGB"
    assert_same_input(cfg, lazy)
    assert list(cfg.DATASETS.TRAIN) == [lazy.dataloader.train.dataset.names]
    assert list(cfg.DATASETS.TEST) == [lazy.dataloader.test.dataset.names]
    assert cfg.MODEL.WEIGHTS == lazy.train.init_checkpoint == ""
    assert_same_model(build_model(cfg), instantiate(lazy.model))


@pytest.mark.parametrize("row", DETECTOR_ROWS, ids=lambda r: r.config)
def test_parameter_count_matches_paper(row):
    params = count_parameters(build_model(yaml_cfg(row.config))) / 1e6
    assert params == pytest.approx(row.params_m, rel=0.02), f"{row.config}: {params:.2f} M"


def test_lazyconfig_survives_detectron2_save_and_reload(tmp_path):
    """detectron2's lazyconfig_train_net.py / analyze_model.py load our .py with LazyConfig.load,
    apply overrides, instantiate; default_setup saves it as YAML, which must reload."""
    cfg = LazyConfig.load(str(CONFIGS / "retinanet_dcdc_r50_dcdc_neck.py"))
    cfg = LazyConfig.apply_overrides(cfg, ["train.device=cpu",
                                           "model.backbone.bottom_up.stages.depth=26"])
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    again = LazyConfig.load(str(tmp_path / "config.yaml"))
    a, b = instantiate(cfg.model), instantiate(again.model)
    assert count_parameters(a) == count_parameters(b)
    assert count_parameters(a) / 1e6 == pytest.approx(20.2, rel=0.02)  # R26 row
    # The stem follows the stages' operator hyperparameters, and so does the neck.
    again.model.backbone.bottom_up.stages.operator_kwargs.gsi_scale = 2.0
    m = instantiate(again.model)
    assert m.backbone.bottom_up.stem.conv2.gsi.width == 11  # round(2 * sqrt(32)) channels
    assert m.backbone.fpn_output3.operator.gsi.width == 32  # round(2 * sqrt(256))


def test_lazyconfig_optimizer_and_schedule_instantiate():
    cfg = LazyConfig.load(str(CONFIGS / "mask_rcnn_dcdc_r26_dcdc_neck.py"))
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    assert optim.defaults["lr"] == 0.02 and optim.defaults["momentum"] == 0.9
    sched = instantiate(cfg.lr_multiplier)
    assert sched(0.0) == pytest.approx(0.001)
    assert sched(500 / 90000) == pytest.approx(1.0)
    assert sched(70000 / 90000) == pytest.approx(0.1)
    assert sched(85000 / 90000) == pytest.approx(0.01)
    assert cfg.dataloader.train.mapper.image_format == "RGB"


def test_analyze_model_tool_prints_our_count_beside_the_paper():
    """tools/analyze_model.py, run as a user runs it, reads the rows of dcdc.paper.results."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "analyze_model.py"), "--configs",
         "retinanet_dcdc_r50", "--no-flops"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "DCDC-ResNet50 | Convolution" in line]
    assert len(lines) == 1 and "| 28.1 / 28.20 |" in lines[0], proc.stdout
    assert "| RetinaNet | ResNet50 | Convolution | 37.7 / 37.97 |" in proc.stdout
