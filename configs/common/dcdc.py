"""Turn a detectron2 R50-FPN LazyConfig into its DCDC-ResNet / RedNet counterpart.

Used by the leaf configs (e.g. ``configs/mask_rcnn_dcdc_r50_dcdc_neck.py``) so that each says
only what differs from the baseline; the result is plain LazyCall data that
``detectron2.config.instantiate`` builds, equal to the YAML configs' ``MODEL.DCDC`` defaults.
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import ResNet

from dcdc.layers.dcdc_conv import OPERATOR_DEFAULTS
from dcdc.modeling import NECKS, DCDCFPN, DCDCStem, make_dcdc_stages

# The DCDC classifiers take RGB input normalized with the ImageNet mean / std (0-255 scale).
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]


def dcdc_resnet(depth=50, operator="dcdc", out_features=("res2", "res3", "res4", "res5"),
                norm="FrozenBN", freeze_at=2, kernel_size=7):
    """LazyCall of a DCDC-ResNet as detectron2's ``ResNet``; the stem shares the stages' norm,
    operator and operator hyperparameters (``stages.operator_kwargs``)."""
    return L(ResNet)(
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
    )


def use_dcdc_backbone(model, dataloader, depth=50, operator="dcdc", neck="conv"):
    """Replace ``model.backbone``'s bottom-up ResNet by a DCDC-ResNet (in place), make its FPN
    the DCDC / involution neck when ``neck`` is "dcdc" / "involution", and switch the input to
    RGB with ImageNet mean / std."""
    if neck not in NECKS:
        raise ValueError(f"neck must be one of {sorted(NECKS)}, got {neck!r}.")
    fpn = model.backbone
    fpn.bottom_up = dcdc_resnet(depth, operator, out_features=fpn.bottom_up.out_features,
                                freeze_at=fpn.bottom_up.get("freeze_at", 2))
    if NECKS[neck] is not None:
        fpn._target_ = DCDCFPN
        fpn.update(neck_operator=neck, kernel_size=7, operator_norm="BN",
                   operator_kwargs="${.bottom_up.stages.operator_kwargs}")
    model.pixel_mean = PIXEL_MEAN
    model.pixel_std = PIXEL_STD
    model.input_format = "RGB"
    dataloader.train.mapper.image_format = "RGB"
    return model
