"""Pre-flight checks of a training or evaluation job, run before any model is built: each fails at
once, saying what was wrong and how to fix it, instead of an hour into a run."""
import difflib
import inspect
import os
import warnings

from omegaconf import DictConfig, OmegaConf

from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.registry import locate

from ..config import suggest_key
from ..data.shapes import datasets_root
from ..utils.errors import UserFileNotFoundError, UserKeyError, UserValueError
from .lazy import OPTIONAL_TRAIN_KEYS

__all__ = ["check_datasets", "check_weights", "check_lazy_overrides", "load_lazy_config",
           "lazy_dataset_names"]

# Files of detectron2's builtin COCO datasets, relative to $DETECTRON2_DATASETS (see
# detectron2/data/datasets/builtin.py and datasets/README.md in the detectron2 repository).
COCO_LAYOUT = """\
  coco/annotations/instances_{train,val}2017.json
  coco/{train,val}2017/                      the images
and, for the panoptic configs (*_panoptic_separated datasets):
  coco/annotations/panoptic_{train,val}2017.json
  coco/panoptic_{train,val}2017/             PNGs from annotations/panoptic_annotations_trainval2017.zip
  coco/panoptic_stuff_{train,val}2017/       made by detectron2's datasets/prepare_panoptic_fpn.py
and, for the HTC configs (*_htc datasets), the panoptic files above and:
  coco/stuffthingmaps_panoptic_{train,val}2017/  made by python -m dcdc.data.semantic --coco"""


def check_datasets(names):
    """Raise if a dataset is unregistered, or if a file that one of detectron2's builtin COCO
    datasets (``coco_*``, ``keypoints_coco_*``) points to is missing.

    Other datasets are left to their loaders (dcdc's built-in "shapes" generates its files on
    first use, under the same ``$DETECTRON2_DATASETS``).
    """
    root = datasets_root()
    for name in names:
        if name not in DatasetCatalog.list():
            close = difflib.get_close_matches(name, DatasetCatalog.list(), n=3)
            raise UserKeyError(
                f"Dataset '{name}' is not registered."
                + (f" Did you mean {close}?" if close else "")
                + " Register it with detectron2.data.datasets.register_coco_instances."
            )
        if not name.startswith(("coco_", "keypoints_coco_")):
            continue
        meta = MetadataCatalog.get(name)
        paths = [meta.get(k) for k in ("json_file", "image_root", "panoptic_json",
                                       "panoptic_root", "sem_seg_root")]
        for path in filter(None, paths):
            if not os.path.exists(path):
                command = meta.get("prepare_command", None)
                if path == meta.get("sem_seg_root") and command:
                    raise UserFileNotFoundError(
                        f"Dataset '{name}' needs its semantic maps in '{path}', which does not "
                        f"exist. Make them (from COCO's panoptic annotations) with\n  {command}")
                raise UserFileNotFoundError(
                    f"Dataset '{name}' needs '{path}', which does not exist.\n"
                    f"detectron2 looks for its builtin datasets under $DETECTRON2_DATASETS, "
                    f"now '{root}' (= '{os.path.abspath(root)}'). Set DETECTRON2_DATASETS to the "
                    f"folder holding COCO, laid out as\n{COCO_LAYOUT}\n"
                    "(https://detectron2.readthedocs.io/en/latest/tutorials/builtin_datasets.html)."
                    " To try the pipeline without COCO, use the built-in shapes dataset: "
                    "configs/quickstart*."
                )


def check_weights(path, key, eval_only=False):
    """Raise :class:`~dcdc.utils.errors.UserFileNotFoundError` if a local checkpoint path does
    not exist (URLs are left to detectron2).

    ``key`` is the config key that named it: ``MODEL.WEIGHTS`` (YAML) or
    ``train.init_checkpoint`` (LazyConfig); the advice uses that config system's keys. For
    ``eval_only`` the message asks for the trained model to evaluate; for training it says how
    to make the ImageNet weights the configs start from, or how to train from scratch.
    """
    if not path or "://" in path or os.path.isfile(path):
        return
    lazy = key.startswith("train.")

    def override(k, v):
        return f"{k}={v}" if lazy else f"{k} {v}"

    if eval_only:
        raise UserFileNotFoundError(
            f"{key} '{path}' does not exist. --eval-only evaluates a trained model: give the "
            f"checkpoint a training run wrote, e.g. {override(key, 'output/model_final.pth')} "
            "at the end of the command.")
    if lazy:
        scratch = " ".join([override(key, '""'), "model.backbone.bottom_up.stages.norm=BN",
                            "model.backbone.bottom_up.freeze_at=0"])
    else:
        scratch = " ".join([override(key, '""'), "MODEL.RESNETS.NORM BN",
                            "MODEL.BACKBONE.FREEZE_AT 0"])
    raise UserFileNotFoundError(
        f"{key} '{path}' does not exist. The DCDC / RedNet configs start from ImageNet weights "
        "converted to detectron2's format: make them from a dcdc.modeling classifier "
        f"checkpoint with `python tools/convert_classifier_to_d2.py CLASSIFIER.pth {path}`, or "
        f"train from scratch with {scratch} (BN or GN: FrozenBN without pretrained statistics "
        "diverges).")


def _accepts(target, name):
    """Whether the LazyCall target ``target`` takes keyword argument ``name``."""
    if isinstance(target, str):
        target = locate(target)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def check_lazy_overrides(cfg, overrides):
    """Reject ``a.b.c=value`` overrides whose key neither exists in the LazyConfig nor is an
    argument of the object the enclosing ``LazyCall`` builds, nor one of dcdc's optional
    ``train.*`` keys (omegaconf would add it silently)."""
    for override in overrides:
        if "=" not in override:
            raise UserValueError(
                f"Overrides of a LazyConfig are key=value (e.g. "
                f"train.init_checkpoint=model_final.pth), got {' '.join(overrides)!r}.")
        key = override.split("=", 1)[0].strip()
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        if not isinstance(parent, DictConfig):
            raise UserKeyError(
                f"Config key '{parent_key}' of override '{override}' does not exist.")
        if leaf in parent or (parent_key == "train" and leaf in OPTIONAL_TRAIN_KEYS):
            continue
        target = parent.get("_target_", None)
        if target is not None and _accepts(target, leaf):
            continue
        raise UserKeyError(
            f"Config key '{key}' of override '{override}' does not exist."
            + suggest_key(leaf, [str(k) for k in parent.keys()]
                          + (list(OPTIONAL_TRAIN_KEYS) if parent_key == "train" else []))
        )


def load_lazy_config(config_file, overrides=()):
    """The LazyConfig ``config_file`` with the ``key=value`` ``overrides`` applied, after
    checking that the file and every overridden key exist (:func:`check_lazy_overrides`)."""
    if not os.path.isfile(config_file):
        raise UserFileNotFoundError(
            f"Config file '{config_file}' does not exist (this project's are in configs/, "
            "e.g. configs/mask_rcnn_dcdc_r50.py).")
    with warnings.catch_warnings():  # detectron2's LazyConfig imports pkg_resources
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        cfg = LazyConfig.load(config_file)
    check_lazy_overrides(cfg, overrides)
    return LazyConfig.apply_overrides(cfg, list(overrides))


def lazy_dataset_names(cfg, key):
    """The dataset names at ``key`` (e.g. ``dataloader.train.dataset.names``) of a LazyConfig,
    as a list; [] where the config has none."""
    names = OmegaConf.select(cfg, key, default=None)
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)
