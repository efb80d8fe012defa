"""DCDC-ResNet: ResNet-v1 bottlenecks whose 3x3 conv is a DCDC operator (RedNet layout).

Built from detectron2's own ``ResNet`` / ``CNNBlockBase`` so that one module serves as the
ImageNet classifier (``num_classes``) and as the detectron2 backbone, and classifier checkpoints
load into detectron2 with unchanged parameter names (minus ``linear.*``).
:func:`build_classifier` is the one classifier builder: the timm models
(:mod:`dcdc.modeling.timm_models`) are built by it and add only timm's interface.
"""
import torch.nn.functional as F
from torch import nn

from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from detectron2.modeling.backbone import ResNet

from ..layers import build_operator, folded_conv, norm_relu_
from .init import scratch_init_, zero_init_last_norm_

__all__ = ["DCDCStem", "DCDCBottleneckBlock", "make_dcdc_stages", "build_classifier",
           "init_classifier_head", "DEPTHS"]

DEPTHS = {26: (1, 2, 4, 1), 38: (2, 3, 5, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _relu_norm(norm, channels):
    return get_norm(norm, channels), nn.ReLU(inplace=True)


class DCDCStem(CNNBlockBase):
    """RedNet stem: 3x3 conv s2 (3->C/2), operator(C/2, k=3), 3x3 conv (C/2->C), max-pool s2.

    Each conv is followed by norm + ReLU; the whole stem has stride 4.
    """

    def __init__(self, in_channels=3, out_channels=64, norm="BN", operator="dcdc",
                 operator_kwargs=None):
        super().__init__(in_channels, out_channels, 4)
        mid = out_channels // 2
        self.conv1 = Conv2d(in_channels, mid, 3, stride=2, padding=1, bias=False,
                            norm=get_norm(norm, mid))
        self.conv2 = build_operator(operator, mid, kernel_size=3, stride=1, norm=norm,
                                    **(operator_kwargs or {}))
        self.conv2_norm = get_norm(norm, mid)
        self.conv3 = Conv2d(mid, out_channels, 3, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))

    def forward(self, x):
        x = F.relu_(folded_conv(self.conv1, x))
        x = norm_relu_(self.conv2_norm, self.conv2(x))
        x = F.relu_(folded_conv(self.conv3, x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class DCDCBottleneckBlock(CNNBlockBase):
    """1x1 conv -> operator(k, stride) -> 1x1 conv, each with norm, ReLU after the sum.

    The shortcut is a strided 1x1 conv + norm when the shape changes (ResNet-v1 / RedNet).
    """

    def __init__(self, in_channels, out_channels, *, bottleneck_channels, stride=1, norm="BN",
                 operator="dcdc", kernel_size=7, operator_kwargs=None):
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels or stride != 1:
            self.shortcut = Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                                   norm=get_norm(norm, out_channels))
        else:
            self.shortcut = None
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, bias=False,
                            norm=get_norm(norm, bottleneck_channels))
        self.conv2 = build_operator(operator, bottleneck_channels, kernel_size=kernel_size,
                                    stride=stride, norm=norm, **(operator_kwargs or {}))
        self.conv2_norm = get_norm(norm, bottleneck_channels)
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False,
                            norm=get_norm(norm, out_channels))

    def forward(self, x):
        out = F.relu_(folded_conv(self.conv1, x))
        out = norm_relu_(self.conv2_norm, self.conv2(out))
        out = folded_conv(self.conv3, out)
        out += x if self.shortcut is None else folded_conv(self.shortcut, x)
        return F.relu_(out)


def make_dcdc_stages(depth, norm="BN", operator="dcdc", kernel_size=7, operator_kwargs=None,
                     stem_out_channels=64, res2_out_channels=256):
    """The four stages (res2..res5) of a DCDC-ResNet, as lists of blocks for detectron2's ResNet."""
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}.")
    stages, in_channels = [], stem_out_channels
    out_channels, bottleneck = res2_out_channels, res2_out_channels // 4
    for idx, num_blocks in enumerate(DEPTHS[depth]):
        stages.append(ResNet.make_stage(
            DCDCBottleneckBlock, num_blocks, in_channels=in_channels, out_channels=out_channels,
            stride_per_block=[1 if idx == 0 else 2] + [1] * (num_blocks - 1),
            bottleneck_channels=bottleneck, norm=norm, operator=operator,
            kernel_size=kernel_size, operator_kwargs=operator_kwargs,
        ))
        in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2
    return stages


def init_classifier_head(linear):
    """The head initialisation of :func:`build_classifier`: detectron2's ResNet head (normal,
    std 0.01) with a zero bias."""
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)


def build_classifier(depth, operator="dcdc", num_classes=1000, norm="BN", in_channels=3,
                     zero_init_last=True, scratch_init=False, stem_out_channels=64,
                     res2_out_channels=256, **operator_kwargs):
    """An ImageNet-style DCDC-ResNet (paper Table I): detectron2 ``ResNet`` with a linear head.

    Args:
        depth: 26, 38, 50 or 101.
        operator: "dcdc", "lsa", "involution" (RedNet) or "conv" (ResNet baseline, same layout).
        num_classes: size of the final linear layer; None: no head (``forward`` returns the
            ``res5`` features).
        norm: any detectron2 ``get_norm`` name ("BN", "SyncBN", "GN", "FrozenBN", ...).
        in_channels: input channels of the stem.
        zero_init_last: start every residual branch at zero (the scale of the last norm of each
            bottleneck), as timm's ResNet and mmcls' ``zero_init_residual`` (the RedNet/paper
            protocol) do. Without it a fresh DCDC-ResNet-26's gradients are large enough on
            small inputs that SGD at the paper's lr does not learn; only initial values change.
            The rule is :func:`dcdc.modeling.init.zero_init_last_norm_`, the one the detectors'
            scratch initialisation (``MODEL.DCDC.SCRATCH_INIT``) applies; a norm without a
            scale, or a frozen one (FrozenBN), raises.
        scratch_init: also draw every conv and norm as the anchors do from scratch
            (:func:`dcdc.modeling.init.scratch_init_`: Kaiming fan_out for every conv, the
            operators' kernel generators included, norms 1 / 0, each block's last norm 0), the
            same for every operator; the head keeps its init. Off by default (PyTorch's layer
            init), on in the operator comparison's classification grid.
        stem_out_channels, res2_out_channels: the widths (64 and 256 in Table I; every later
            stage doubles ``res2``'s), narrower for the miniatures.
        operator_kwargs: forwarded to :class:`dcdc.layers.DCDCConv2d`, e.g. ``dw_kernel_size``,
            ``gsi_kernel_size``, ``gsi_scale``, ``global_branch``.
    """
    stem = DCDCStem(in_channels, stem_out_channels, norm=norm, operator=operator,
                    operator_kwargs=operator_kwargs)
    stages = make_dcdc_stages(depth, norm, operator, operator_kwargs=operator_kwargs,
                              stem_out_channels=stem_out_channels,
                              res2_out_channels=res2_out_channels)
    model = ResNet(stem, stages, num_classes=num_classes)
    if num_classes is not None:
        # ResNet has drawn the weight as init_classifier_head does; only the bias is left
        nn.init.zeros_(model.linear.bias)
    if scratch_init:
        scratch_init_(model, exclude=(model.linear,) if num_classes is not None else ())
    if zero_init_last:
        zero_init_last_norm_([b for stage in model.stages for b in stage], strict=True)
    return model
