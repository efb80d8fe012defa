"""Turn a detectron2 R50-FPN LazyConfig into its DCDC-ResNet / RedNet counterpart.

The leaf configs of this project (e.g. ``configs/mask_rcnn_dcdc_r50_dcdc_neck.py``, through
``configs/common/dcdc.py``) and users' own LazyConfigs use these, so that each says only what
differs from the baseline; the result is plain LazyCall data that
``detectron2.config.instantiate`` builds, equal to the YAML configs' ``MODEL.DCDC`` defaults.

Input format: a DCDC backbone takes **RGB** images normalized with the ImageNet mean / std on the
0-255 scale (:data:`PIXEL_MEAN`, :data:`PIXEL_STD`), as the DCDC-ResNet classifiers whose
converted weights it starts from were trained. :func:`use_dcdc_backbone` sets the model's
``pixel_mean`` / ``pixel_std`` / ``input_format`` and the data loaders' ``image_format``
accordingly; code that calls ``instantiate(cfg.model)`` and feeds images itself must give them
in RGB order, not in detectron2's default BGR (``cv2.imread`` gives BGR: ``image[:, :, ::-1]``).

Initialisation: the backbone's ``scratch_init`` (``model.backbone.bottom_up.scratch_init``, which
the neck follows; ``MODEL.DCDC.SCRATCH_INIT`` of the YAML configs) is "auto" by default: the
scratch initialisation of :func:`dcdc.modeling.init.scratch_init_` when ``train.init_checkpoint``
is empty (or the config has none), PyTorch's / detectron2's default init when weights are given.
"""
from omegaconf import DictConfig, OmegaConf

from detectron2.config import LazyCall as L

from ..layers.dcdc_conv import OPERATOR_DEFAULTS
from ..modeling import NECKS, DCDCStem, build_dcdc_fpn, build_dcdc_resnet, make_dcdc_stages

__all__ = ["INPUT_FORMAT", "PIXEL_MEAN", "PIXEL_STD", "dcdc_resnet", "use_dcdc_backbone",
           "use_dcdc_input_format"]

# The DCDC classifiers take RGB input normalized with the ImageNet mean / std (0-255 scale);
# the YAML configs' MODEL.PIXEL_MEAN / MODEL.PIXEL_STD / INPUT.FORMAT (Base-DCDC-*.yaml) agree.
INPUT_FORMAT = "RGB"
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]

# The weights "auto" scratch initialisation looks at: the config's train.init_checkpoint, None
# (no weights: scratch) where the config has no train.init_checkpoint.
INIT_CHECKPOINT = "${oc.select:train.init_checkpoint,null}"


def dcdc_resnet(depth=50, operator="dcdc", out_features=("res2", "res3", "res4", "res5"),
                norm="FrozenBN", freeze_at=2, kernel_size=7, scratch_init="auto"):
    """LazyCall of a DCDC-ResNet as detectron2's ``ResNet``
    (:func:`dcdc.modeling.build_dcdc_resnet`); the stem shares the stages' norm, operator and
    operator hyperparameters (``stages.operator_kwargs``).

    ``scratch_init``: the scratch initialisation (``MODEL.DCDC.SCRATCH_INIT``): "auto" (on iff
    the config's ``train.init_checkpoint`` is empty or missing), True or False.

    It expects RGB input with the ImageNet mean / std (see the module docstring): a model built
    around it needs ``pixel_mean=PIXEL_MEAN``, ``pixel_std=PIXEL_STD`` and RGB images, which
    :func:`use_dcdc_backbone` / :func:`use_dcdc_input_format` set."""
    return L(build_dcdc_resnet)(
        stem=L(DCDCStem)(
            in_channels=3,
            out_channels=64,
            norm="${..stages.norm}",
            operator="${..stages.operator}",
            operator_kwargs="${..stages.operator_kwargs}",
        ),
        stages=L(make_dcdc_stages)(
            depth=depth,
            norm=norm,
            operator=operator,
            kernel_size=kernel_size,
            operator_kwargs=dict(OPERATOR_DEFAULTS),
        ),
        out_features=list(out_features),
        freeze_at=freeze_at,
        scratch_init=scratch_init,
        init_checkpoint=INIT_CHECKPOINT,
    )


def _set_image_format(loader):
    mapper = loader.get("mapper", None) if isinstance(loader, DictConfig) else None
    if not isinstance(mapper, DictConfig):
        return
    # detectron2's test mappers follow the train mapper ("${...train.mapper.image_format}")
    if "image_format" in mapper and OmegaConf.is_interpolation(mapper, "image_format"):
        return
    mapper.image_format = INPUT_FORMAT


def use_dcdc_input_format(model, dataloader=None):
    """Make ``model`` (and ``dataloader``'s mappers, if given) take RGB images normalized with
    the ImageNet mean / std, the input of the DCDC backbones; in place, returns ``model``."""
    model.pixel_mean = list(PIXEL_MEAN)
    model.pixel_std = list(PIXEL_STD)
    model.input_format = INPUT_FORMAT
    if dataloader is not None:
        for split in ("train", "test"):
            if split in dataloader:
                _set_image_format(dataloader[split])
    return model


def use_dcdc_backbone(model, dataloader=None, depth=50, operator="dcdc", neck="conv",
                      scratch_init="auto"):
    """Replace ``model.backbone``'s bottom-up ResNet by a DCDC-ResNet (in place), make its FPN
    the DCDC / involution neck when ``neck`` is "dcdc" / "involution", and switch the input to
    RGB with the ImageNet mean / std.

    ``scratch_init`` (``model.backbone.bottom_up.scratch_init``; the FPN follows it): the
    scratch initialisation of backbone and neck, as ``MODEL.DCDC.SCRATCH_INIT``: "auto" (on iff
    ``train.init_checkpoint`` is empty or missing), True or False.

    ``model`` is the LazyCall of a detectron2 FPN detector (``model.backbone`` an ``FPN`` over a
    ``ResNet``), e.g. ``detectron2.model_zoo.get_config("common/models/mask_rcnn_fpn.py").model``;
    ``dataloader`` (optional) the config's ``dataloader``, whose mappers then read images as RGB.

    **Input format**: the model then expects RGB images (0-255, ``model.pixel_mean`` /
    ``model.pixel_std`` = :data:`PIXEL_MEAN` / :data:`PIXEL_STD`). detectron2's data loaders
    deliver that when their mapper's ``image_format`` is "RGB" (set here for ``dataloader``);
    when you call ``instantiate(cfg.model)`` and feed images yourself, convert BGR ones
    (``cv2.imread``, detectron2's default) with ``image[:, :, ::-1]``, or the channels are
    silently swapped. Returns ``model``.
    """
    if neck not in NECKS:
        raise ValueError(f"neck must be one of {sorted(NECKS)}, got {neck!r}.")
    fpn = model.backbone
    fpn.bottom_up = dcdc_resnet(depth, operator, out_features=fpn.bottom_up.out_features,
                                freeze_at=fpn.bottom_up.get("freeze_at", 2),
                                scratch_init=scratch_init)
    # detectron2's FPN for "conv", DCDCFPN otherwise
    fpn._target_ = build_dcdc_fpn
    fpn.update(neck_operator=neck, scratch_init="${.bottom_up.scratch_init}",
               init_checkpoint="${.bottom_up.init_checkpoint}")
    if NECKS[neck] is not None:
        fpn.update(kernel_size=7, operator_norm="BN",
                   operator_kwargs="${.bottom_up.stages.operator_kwargs}")
    return use_dcdc_input_format(model, dataloader)
