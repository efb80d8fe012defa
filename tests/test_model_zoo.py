"""dcdc.model_zoo: our configs and the DCDC backbone helpers from users' own code, as
detectron2.model_zoo gives its own; found from the editable install (the repository's configs/)
and from an installed, non-editable copy (configs/ shipped inside the package); every DCDC
config's input is RGB with the ImageNet mean / std."""
import os
import runpy
import subprocess
import sys
import tarfile
import textwrap

import pytest
import torch

from detectron2.config import CfgNode, LazyConfig, instantiate

import dcdc
from dcdc import model_zoo
from dcdc.model_zoo import INPUT_FORMAT, PIXEL_MEAN, PIXEL_STD, use_dcdc_backbone

from helpers import REPO

# The README's example: a user's own LazyConfig, outside this repository, that puts a DCDC
# backbone into detectron2's model-zoo Mask R-CNN.
USER_CONFIG = '''\
# detectron2's Mask R-CNN R50-FPN recipe with a DCDC-ResNet-50 backbone and the DCDC neck
from detectron2.model_zoo import get_config
from dcdc.model_zoo import use_dcdc_backbone

model = get_config("common/models/mask_rcnn_fpn.py").model
dataloader = get_config("common/data/coco.py").dataloader
optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
train = get_config("common/train.py").train

use_dcdc_backbone(model, dataloader, depth=50, operator="dcdc", neck="dcdc")  # input: RGB now
train.init_checkpoint = "pretrained/DCDC-R50.pkl"  # tools/convert_classifier_to_d2.py; "" = scratch
'''


def test_users_own_lazyconfig_puts_a_dcdc_backbone_into_detectron2s_model_zoo(tmp_path,
                                                                              monkeypatch):
    (tmp_path / "my_mask_rcnn_dcdc.py").write_text(USER_CONFIG)
    monkeypatch.chdir(tmp_path)  # outside the repository: only the installed package helps
    cfg = LazyConfig.load("my_mask_rcnn_dcdc.py")
    assert cfg.model.backbone.bottom_up.stages.depth == 50
    assert cfg.model.input_format == INPUT_FORMAT == "RGB"
    assert cfg.dataloader.train.mapper.image_format == "RGB"
    assert cfg.dataloader.test.mapper.image_format == "RGB"  # follows train's interpolation
    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.0  # random weights: keep boxes
    model = instantiate(cfg.model).eval()
    assert type(model.backbone).__name__ == "DCDCFPN"
    assert model.pixel_mean.flatten().tolist() == pytest.approx(PIXEL_MEAN)
    assert model.pixel_std.flatten().tolist() == pytest.approx(PIXEL_STD)
    image = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0)) * 255  # RGB
    with torch.no_grad():
        (out,) = model([{"image": image}])
    instances = out["instances"]
    assert instances.image_size == (64, 80) and len(instances) > 0
    assert tuple(instances.pred_masks.shape[1:]) == (64, 80)


def test_get_config_and_config_file_from_the_editable_install():
    assert model_zoo.configs_dir() == str(REPO / "configs")
    assert model_zoo.get_config_file("mask_rcnn_dcdc_r50.py") == str(
        REPO / "configs" / "mask_rcnn_dcdc_r50.py")
    names = model_zoo.list_configs()
    assert {"mask_rcnn_dcdc_r50.py", "faster_rcnn_dcdc_r50.yaml", "common/dcdc.py"} <= set(names)
    lazy = model_zoo.get_config("mask_rcnn_dcdc_r50.py")
    assert lazy.train.init_checkpoint == "pretrained/DCDC-R50.pkl"
    assert lazy.model.input_format == "RGB" and list(lazy.model.pixel_mean) == PIXEL_MEAN
    yaml = model_zoo.get_config("faster_rcnn_dcdc_r50.yaml")
    assert isinstance(yaml, CfgNode) and yaml.MODEL.DCDC.OPERATOR == "dcdc"
    assert yaml.INPUT.FORMAT == "RGB" and list(yaml.MODEL.PIXEL_MEAN) == PIXEL_MEAN
    with pytest.raises(FileNotFoundError, match="did you mean mask_rcnn_dcdc_r50.py"):
        model_zoo.get_config_file("mask_rcnn_dcdc_r5.py")
    assert dcdc.model_zoo is model_zoo  # `import dcdc` is enough, as detectron2.model_zoo


def test_configs_common_dcdc_reexports_the_package_helpers():
    """One source: configs/common/dcdc.py (the configs' relative imports) is the package's."""
    common = runpy.run_path(str(REPO / "configs" / "common" / "dcdc.py"))
    for name in ("use_dcdc_backbone", "dcdc_resnet", "PIXEL_MEAN", "PIXEL_STD"):
        assert common[name] is getattr(model_zoo, name), name


def test_use_dcdc_backbone_input_format_and_optional_dataloader():
    from detectron2.model_zoo import get_config

    model = get_config("common/models/retinanet.py").model
    assert model.input_format == "BGR"
    use_dcdc_backbone(model, depth=26, neck="involution")  # no dataloader: the model only
    assert (model.input_format, list(model.pixel_mean), list(model.pixel_std)) == (
        "RGB", PIXEL_MEAN, PIXEL_STD)
    assert model.backbone.neck_operator == "involution"
    # A test mapper with its own (non-interpolated) format is switched too.
    loader = get_config("common/data/coco.py").dataloader
    loader.test.mapper.image_format = "BGR"
    use_dcdc_backbone(get_config("common/models/mask_rcnn_fpn.py").model, loader)
    assert loader.train.mapper.image_format == loader.test.mapper.image_format == "RGB"
    with pytest.raises(ValueError, match="neck must be one of"):
        use_dcdc_backbone(model, neck="bifpn")


def test_installed_copy_ships_and_finds_the_configs(tmp_path):
    """The sdist holds configs/; installed from it (not editable), dcdc.model_zoo finds them
    inside the package and loads a LazyConfig and a YAML config, outside the repository."""
    env = {**os.environ, "DCDC_BUILD_NATIVE": "0", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
                    "sdist", "-d", str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    (sdist,) = tmp_path.glob("dcdc-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    for config in ("configs/mask_rcnn_dcdc_r50.py", "configs/common/dcdc.py",
                   "configs/Base-DCDC-RCNN-FPN.yaml", "configs/faster_rcnn_dcdc_r50.yaml"):
        assert f"{top}/{config}" in names, config
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-build-isolation", "--no-index", "--target", str(site),
                           str(sdist)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = textwrap.dedent("""
        import sys
        import dcdc
        from dcdc.model_zoo import configs_dir, get_config
        assert dcdc.__file__.startswith(sys.argv[1]), dcdc.__file__
        assert configs_dir().startswith(sys.argv[1]), configs_dir()
        lazy = get_config("mask_rcnn_dcdc_r50.py")
        yaml = get_config("mask_rcnn_dcdc_r50_dcdc_neck.yaml")
        print(configs_dir(), lazy.model.input_format, yaml.MODEL.DCDC.NECK)
    """)
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(site)], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(site)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [str(site / "dcdc" / "model_zoo" / "configs"), "RGB", "dcdc"]
