"""This project's configs from Python, as detectron2's ``detectron2.model_zoo`` gives its own.

``get_config_file("mask_rcnn_dcdc_r50.py")`` is the path of ``configs/mask_rcnn_dcdc_r50.py``;
``get_config(...)`` loads it (a LazyConfig for ``.py``, a detectron2 ``CfgNode`` with the
``MODEL.DCDC`` keys for ``.yaml``). The configs ship inside the installed package
(``dcdc/model_zoo/configs``, copied there by setup.py's ``build_py``, as detectron2 ships its
model zoo's); an editable install (``make install``) reads the repository's ``configs/``.

Input format: every DCDC / RedNet config expects **RGB** images normalized with the ImageNet
mean / std (``PIXEL_MEAN`` / ``PIXEL_STD`` of :mod:`dcdc.model_zoo.backbone`). detectron2's data
loaders and ``DefaultPredictor`` convert for you (``INPUT.FORMAT`` / the mappers'
``image_format``); a model you build with ``build_model(cfg)`` / ``instantiate(cfg.model)`` and
call yourself must get RGB tensors, not detectron2's default BGR.
"""
import difflib
import os
from pathlib import Path

__all__ = ["configs_dir", "list_configs", "get_config_file", "get_config"]

# a file every complete copy of configs/ holds
_MARKER = os.path.join("common", "dcdc.py")


def _candidates():
    here = Path(__file__).resolve().parent
    # 1. an installed (built) package: configs copied next to this file by setup.py
    yield here / "configs"
    # 2. an editable install / a source checkout: <repo>/projects/DCDC/dcdc/model_zoo/..
    yield here.parents[3] / "configs"


def configs_dir():
    """The folder of this project's configs (``configs/`` of the repository for an editable
    install, ``dcdc/model_zoo/configs`` of an installed package)."""
    for folder in _candidates():
        if (folder / _MARKER).is_file():
            return str(folder)
    raise FileNotFoundError(
        "dcdc's configs are not installed: looked in "
        + ", ".join(f"'{f}'" for f in _candidates())
        + ". Reinstall dcdc (`make install`, or pip install from the source tree / sdist, whose "
        "setup.py copies configs/ into the package).")


def list_configs():
    """Every config name (paths relative to ``configs/``, e.g. ``"mask_rcnn_dcdc_r50.py"``,
    ``"common/dcdc.py"``), sorted."""
    root = configs_dir()
    names = []
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith((".py", ".yaml")):
                names.append(os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/"))
    return sorted(names)


def get_config_file(config_path):
    """The real path of one of this project's configs.

    Args:
        config_path (str): file name relative to the repository's ``configs/``, e.g.
            ``"mask_rcnn_dcdc_r50.py"`` or ``"faster_rcnn_dcdc_r50.yaml"``.

    Raises FileNotFoundError, naming the closest config names, when there is no such config.
    """
    path = os.path.join(configs_dir(), config_path)
    if not os.path.isfile(path):
        close = difflib.get_close_matches(config_path, list_configs(), n=3)
        raise FileNotFoundError(
            f"{config_path!r} is not one of dcdc's configs"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + " (dcdc.model_zoo.list_configs() names them all).")
    return path


def get_config(config_path):
    """One of this project's configs, loaded: a LazyConfig (omegaconf ``DictConfig`` with
    ``model``, ``dataloader``, ``optimizer``, ``lr_multiplier``, ``train``) for a ``.py`` name,
    detectron2's ``CfgNode`` with the ``MODEL.DCDC`` keys (:func:`dcdc.get_dcdc_cfg`) for a
    ``.yaml`` name. Example::

        from detectron2.config import instantiate
        from dcdc.model_zoo import get_config

        cfg = get_config("mask_rcnn_dcdc_r50.py")
        cfg.train.init_checkpoint = ""           # or your converted ImageNet weights
        model = instantiate(cfg.model).eval()    # takes RGB images, see below

    **Input format**: the DCDC / RedNet configs expect RGB images normalized with the ImageNet
    mean / std (0-255 scale; ``cfg.model.pixel_mean`` / ``pixel_std``, ``MODEL.PIXEL_MEAN`` /
    ``MODEL.PIXEL_STD``). Their data loaders and detectron2's ``DefaultPredictor`` read images as
    RGB (``dataloader.*.mapper.image_format`` / ``INPUT.FORMAT``); when you call the model
    yourself, give it RGB ``(3, H, W)`` tensors, e.g. ``cv2.imread(path)[:, :, ::-1]``, not
    detectron2's default BGR. The baseline configs (``*_r50.py``, without dcdc/rednet in the
    name) keep detectron2's BGR.

    The weights the configs start from (``pretrained/DCDC-R50.pkl`` ...) are not shipped: make
    them with ``tools/convert_classifier_to_d2.py``, or set them to "" to start from scratch.
    """
    path = get_config_file(config_path)
    if path.endswith(".py"):
        import warnings

        from detectron2.config import LazyConfig

        with warnings.catch_warnings():  # detectron2's model_zoo imports pkg_resources
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            return LazyConfig.load(path)
    if path.endswith((".yaml", ".yml")):
        from ..config import get_dcdc_cfg

        return get_dcdc_cfg(path)
    raise ValueError(f"{config_path!r} is neither a .py (LazyConfig) nor a .yaml config.")
