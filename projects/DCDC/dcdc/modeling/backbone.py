"""DCDC-ResNet backbones for detectron2's ``BACKBONE_REGISTRY``.

* ``build_dcdc_resnet_backbone``: a DCDC-ResNet (``MODEL.RESNETS.OUT_FEATURES`` out of
  stem/res2..res5).
* ``build_dcdc_resnet_fpn_backbone``: + FPN with ``LastLevelMaxPool`` (Faster / Mask R-CNN,
  Panoptic FPN, Cascade R-CNN).
* ``build_retinanet_dcdc_resnet_fpn_backbone``: + FPN with ``LastLevelP6P7`` on res5 (RetinaNet).

The FPN is detectron2's, or :class:`DCDCFPN` when ``MODEL.DCDC.NECK`` is "dcdc" / "involution".
Select one with e.g. ``MODEL.BACKBONE.NAME "build_dcdc_resnet_fpn_backbone"`` after
``dcdc.add_dcdc_config(cfg)``.

All of them build through :func:`build_dcdc_resnet` and :func:`build_dcdc_fpn` (also the
LazyConfigs' targets, see :mod:`dcdc.model_zoo`), which apply the scratch initialisation
(:func:`dcdc.modeling.init.scratch_init_`) as ``MODEL.DCDC.SCRATCH_INIT`` / ``scratch_init``
says.
"""
import logging

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7

from ..config import operator_kwargs_from_cfg
from ..layers.dcdc_conv import group_norm
from .init import residual_blocks, resolve_scratch_init, scratch_init_
from .neck import NECKS, DCDCFPN
from .resnet import DEPTHS, DCDCStem, make_dcdc_stages

__all__ = [
    "build_dcdc_resnet_backbone",
    "build_dcdc_resnet_fpn_backbone",
    "build_retinanet_dcdc_resnet_fpn_backbone",
    "build_dcdc_resnet",
    "build_dcdc_fpn",
    "build_fpn",
    "group_norm",
]

logger = logging.getLogger(__name__)


def _scratch_init(module, what, scratch_init, init_checkpoint, exclude=()):
    if not resolve_scratch_init(scratch_init, init_checkpoint):
        return module
    blocks = residual_blocks(module)
    # on and not forced (True): "auto" with no weights
    if (scratch_init is not True and blocks
            and all(isinstance(b.conv3.norm, FrozenBatchNorm2d) for b in blocks)):
        # A model whose norms are all frozen is built for pretrained weights: without norms that
        # learn, the recipe's Kaiming-initialised dynamic kernels grow from block to block (Inf
        # at init; a Mask R-CNN DCDC-R50 with FrozenBN and no weights).
        logger.warning(
            f"Scratch initialisation of the {what} not applied: no weights are loaded but the "
            "model has frozen norms (FrozenBN), which cannot learn from scratch. Give pretrained "
            "weights, or train from scratch with MODEL.RESNETS.NORM BN / SyncBN / GN and "
            "MODEL.BACKBONE.FREEZE_AT 0 (MODEL.DCDC.SCRATCH_INIT True forces it).")
        return module
    logger.info(f"Scratch initialisation of the {what} (scratch_init={scratch_init!r}, "
                f"weights {init_checkpoint!r}): convs Kaiming normal (fan_out), norms 1 / 0, "
                "each residual block's last norm 0.")
    return scratch_init_(module, exclude=exclude)


def build_dcdc_resnet(stem, stages, out_features=None, freeze_at=0, *, scratch_init=False,
                      init_checkpoint=None):
    """detectron2's ``ResNet(stem, stages, out_features=..., freeze_at=...)``, scratch-initialised
    if ``scratch_init`` says so: the LazyConfigs' bottom-up backbone
    (:func:`dcdc.model_zoo.dcdc_resnet`) and :func:`build_dcdc_resnet_backbone`'s.

    Args:
        stem, stages, out_features, freeze_at: as for detectron2's ``ResNet``, e.g. a
            :class:`DCDCStem` and :func:`make_dcdc_stages`.
        scratch_init: :func:`dcdc.modeling.init.scratch_init_` or not: True, False, or "auto" /
            None: on iff ``init_checkpoint`` is empty or None (``MODEL.DCDC.SCRATCH_INIT``).
        init_checkpoint: the weights the model will be loaded from afterwards
            (``train.init_checkpoint`` / ``MODEL.WEIGHTS``); only ``scratch_init="auto"`` reads it.
    """
    model = ResNet(stem, stages, out_features=out_features, freeze_at=freeze_at)
    return _scratch_init(model, "DCDC-ResNet", scratch_init, init_checkpoint)


def build_dcdc_fpn(bottom_up, in_features, out_channels, norm="", top_block=None,
                   fuse_type="sum", square_pad=0, *, neck_operator="conv", kernel_size=7,
                   operator_norm="BN", operator_kwargs=None, scratch_init=False,
                   init_checkpoint=None):
    """The neck over ``bottom_up``: detectron2's ``FPN`` (``neck_operator`` "conv") or
    :class:`DCDCFPN` ("dcdc", "involution", "lsa"), then, if ``scratch_init`` says so, the
    scratch initialisation of all but ``bottom_up`` (lateral convs, output convs or operators,
    the top block's convs), which its own builder initialises.

    Args:
        bottom_up, in_features, out_channels, norm, top_block, fuse_type, square_pad: as for
            detectron2's ``FPN``.
        neck_operator, kernel_size, operator_norm, operator_kwargs: as for :class:`DCDCFPN`
            (the last three unused by "conv").
        scratch_init, init_checkpoint: as for :func:`build_dcdc_resnet`.
    """
    if neck_operator not in NECKS:
        raise ValueError(f"neck_operator must be one of {sorted(NECKS)}, got {neck_operator!r}.")
    kwargs = dict(bottom_up=bottom_up, in_features=in_features, out_channels=out_channels,
                  norm=norm, top_block=top_block, fuse_type=fuse_type, square_pad=square_pad)
    if NECKS[neck_operator] is None:
        fpn = FPN(**kwargs)
    else:
        fpn = DCDCFPN(**kwargs, neck_operator=neck_operator, kernel_size=kernel_size,
                      operator_norm=operator_norm, operator_kwargs=operator_kwargs)
    return _scratch_init(fpn, "FPN", scratch_init, init_checkpoint, exclude=(fpn.bottom_up,))


def _scratch_init_kwargs(cfg):
    return dict(scratch_init=cfg.MODEL.DCDC.get("SCRATCH_INIT", None),
                init_checkpoint=cfg.MODEL.WEIGHTS)


def _norm(norm):
    return group_norm if norm == "GN" else norm


def _check_cfg(cfg):
    """Reject configs the DCDC-ResNet cannot honour, saying which key to change."""
    if "DCDC" not in cfg.MODEL:
        raise KeyError(
            "cfg.MODEL.DCDC is missing: call dcdc.add_dcdc_config(cfg) right after get_cfg(), "
            "before merging a DCDC config file."
        )
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in DEPTHS:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH={r.DEPTH} has no DCDC-ResNet; use one of {sorted(DEPTHS)}."
        )
    if r.NUM_GROUPS != 1 or r.NUM_GROUPS * r.WIDTH_PER_GROUP != r.RES2_OUT_CHANNELS // 4:
        raise ValueError(
            f"DCDC-ResNets have no grouped 3x3 conv: need MODEL.RESNETS.NUM_GROUPS=1 and "
            f"WIDTH_PER_GROUP=RES2_OUT_CHANNELS/4 (={r.RES2_OUT_CHANNELS // 4}), got "
            f"NUM_GROUPS={r.NUM_GROUPS}, WIDTH_PER_GROUP={r.WIDTH_PER_GROUP}."
        )
    if r.RES5_DILATION != 1 or any(r.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "DCDC-ResNets support neither MODEL.RESNETS.RES5_DILATION != 1 nor "
            f"DEFORM_ON_PER_STAGE; got {r.RES5_DILATION} and {list(r.DEFORM_ON_PER_STAGE)}."
        )
    if cfg.MODEL.DCDC.NECK not in NECKS:
        raise ValueError(
            f"MODEL.DCDC.NECK must be one of {sorted(NECKS)}, got {cfg.MODEL.DCDC.NECK!r}."
        )
    resolve_scratch_init(cfg.MODEL.DCDC.get("SCRATCH_INIT", None), cfg.MODEL.WEIGHTS,
                         key="MODEL.DCDC.SCRATCH_INIT", weights_key="MODEL.WEIGHTS")


@BACKBONE_REGISTRY.register()
def build_dcdc_resnet_backbone(cfg, input_shape: ShapeSpec):
    """A DCDC-ResNet from ``MODEL.RESNETS`` and ``MODEL.DCDC``, as detectron2's :class:`ResNet`.

    ``MODEL.RESNETS.STRIDE_IN_1X1`` is ignored: the stride is always in the operator (RedNet).
    Scratch-initialised as ``MODEL.DCDC.SCRATCH_INIT`` (with ``MODEL.WEIGHTS``) says.
    """
    _check_cfg(cfg)
    norm = _norm(cfg.MODEL.RESNETS.NORM)
    operator = cfg.MODEL.DCDC.OPERATOR
    operator_kwargs = operator_kwargs_from_cfg(cfg)
    stem = DCDCStem(input_shape.channels, cfg.MODEL.RESNETS.STEM_OUT_CHANNELS, norm=norm,
                    operator=operator, operator_kwargs=operator_kwargs)
    stages = make_dcdc_stages(
        cfg.MODEL.RESNETS.DEPTH, norm=norm, operator=operator,
        kernel_size=cfg.MODEL.DCDC.KERNEL_SIZE, operator_kwargs=operator_kwargs,
        stem_out_channels=cfg.MODEL.RESNETS.STEM_OUT_CHANNELS,
        res2_out_channels=cfg.MODEL.RESNETS.RES2_OUT_CHANNELS,
    )
    return build_dcdc_resnet(stem, stages, out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
                             freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT, **_scratch_init_kwargs(cfg))


def build_fpn(cfg, bottom_up, top_block):
    """detectron2's FPN (``MODEL.DCDC.NECK`` "conv") or :class:`DCDCFPN` from ``MODEL.FPN``,
    scratch-initialised as ``MODEL.DCDC.SCRATCH_INIT`` says (:func:`build_dcdc_fpn`)."""
    return build_dcdc_fpn(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        neck_operator=cfg.MODEL.DCDC.NECK,
        kernel_size=cfg.MODEL.DCDC.NECK_KERNEL_SIZE,
        operator_norm=_norm(cfg.MODEL.DCDC.NECK_OPERATOR_NORM),
        operator_kwargs=operator_kwargs_from_cfg(cfg),
        **_scratch_init_kwargs(cfg),
    )


@BACKBONE_REGISTRY.register()
def build_dcdc_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """DCDC-ResNet + FPN (neck from ``MODEL.DCDC.NECK``) + max-pooled P6, as detectron2's
    ``build_resnet_fpn_backbone``."""
    return build_fpn(cfg, build_dcdc_resnet_backbone(cfg, input_shape), LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_retinanet_dcdc_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """DCDC-ResNet + FPN (neck from ``MODEL.DCDC.NECK``) + P6/P7 convs on res5, as detectron2's
    ``build_retinanet_resnet_fpn_backbone``; P6/P7 stay plain convs with any neck."""
    bottom_up = build_dcdc_resnet_backbone(cfg, input_shape)
    in_channels_p6p7 = bottom_up.output_shape()["res5"].channels
    top_block = LastLevelP6P7(in_channels_p6p7, cfg.MODEL.FPN.OUT_CHANNELS)
    return build_fpn(cfg, bottom_up, top_block)
