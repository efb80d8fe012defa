"""Config keys of the DCDC backbones and necks (``MODEL.DCDC``).

The DCDC backbones otherwise read detectron2's own keys: ``MODEL.RESNETS.{DEPTH, NORM,
OUT_FEATURES, STEM_OUT_CHANNELS, RES2_OUT_CHANNELS}``, ``MODEL.BACKBONE.FREEZE_AT`` and
``MODEL.FPN.{IN_FEATURES, OUT_CHANNELS, NORM, FUSE_TYPE}``. The norms inside the backbone
operators' kernel generators follow ``MODEL.RESNETS.NORM`` (so ``FREEZE_AT`` and FrozenBN freeze
them with the rest of the block).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_dcdc_config", "operator_kwargs_from_cfg"]


def add_dcdc_config(cfg):
    """Add the ``MODEL.DCDC`` keys (and ``DATALOADER.SKIP_UNREADABLE_IMAGES``) to a detectron2
    config, in place."""
    _C = cfg
    _C.MODEL.DCDC = CN()
    # The spatial operator that replaces the 3x3 conv of every bottleneck and of the stem:
    # "dcdc" (LSA + GSI, the paper), "lsa" (LSA branch only, Table III), "rednet" (RedNet's
    # involution: no depth-wise convs in the kernel generator, no GSI branch) or "conv" (a plain
    # 3x3 conv in the same deep-stem layout).
    _C.MODEL.DCDC.OPERATOR = "dcdc"
    # LSA kernel size K of the bottleneck operators (the stem's operator always uses 3).
    _C.MODEL.DCDC.KERNEL_SIZE = 7
    # Channels sharing one LSA kernel; the operator has C / GROUP_CHANNELS kernel groups.
    _C.MODEL.DCDC.GROUP_CHANNELS = 16
    # 1 / alpha: width reduction inside the LSA kernel generator (alpha = 0.25 in the paper).
    _C.MODEL.DCDC.REDUCTION = 4
    # k_dw of the two depth-wise convs in the LSA kernel generator (Eq. 7; 3 in the paper,
    # 5 / 7 in Table IV). Ignored by "rednet", which has none.
    _C.MODEL.DCDC.DW_KERNEL_SIZE = 3
    # k_gsi, spatial size of the per-sample GSI kernel (1 in the paper, 3 / 5 in Table IV).
    _C.MODEL.DCDC.GSI_KERNEL_SIZE = 1
    # lambda: the GSI branch works on m = round(lambda * sqrt(C)) channels (1.0 in the paper).
    _C.MODEL.DCDC.GSI_SCALE = 1.0

    # The FPN's per-level 3x3 output convs: "conv" (detectron2's FPN unchanged), "dcdc" (the
    # paper's DCDC neck: a DCDC operator on OUT_CHANNELS channels) or "involution" (RedNet's
    # involution neck). Lateral 1x1 convs and RetinaNet's P6/P7 convs stay plain convs.
    _C.MODEL.DCDC.NECK = "conv"
    # LSA kernel size of the neck operators (7 in the paper).
    _C.MODEL.DCDC.NECK_KERNEL_SIZE = 7
    # Norm inside the neck operators' kernel generators (they train from scratch, so a norm that
    # learns, not FrozenBN). MODEL.FPN.NORM, if set, is applied after each neck operator, as
    # detectron2's FPN applies it after each output conv.
    _C.MODEL.DCDC.NECK_OPERATOR_NORM = "BN"

    # Training images that cannot be read (truncated, not an image, missing): True logs the
    # file name and trains on another image; False stops with an error naming the file.
    # Evaluation always stops, since skipping images would bias the metrics.
    _C.DATALOADER.SKIP_UNREADABLE_IMAGES = True


def operator_kwargs_from_cfg(cfg):
    """The operator hyperparameters of ``MODEL.DCDC`` as keyword arguments of
    :func:`dcdc.layers.build_operator` (kernel size, stride and norm excluded)."""
    d = cfg.MODEL.DCDC
    return {
        "group_channels": d.GROUP_CHANNELS,
        "reduction": d.REDUCTION,
        "dw_kernel_size": d.DW_KERNEL_SIZE,
        "gsi_kernel_size": d.GSI_KERNEL_SIZE,
        "gsi_scale": d.GSI_SCALE,
    }
