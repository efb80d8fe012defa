"""The DCDC neck (paper Tables V-VII): detectron2's FPN with dynamic per-level output operators.

Only the per-level 3x3 output convs (``fpn_output{stage}``) change; the lateral 1x1 convs, the
top-down pathway and the top block (``LastLevelMaxPool`` or RetinaNet's ``LastLevelP6P7``) are
detectron2's, so everything but the output operators loads from an ordinary FPN checkpoint.
"""
from torch import nn

from detectron2.layers import get_norm
from detectron2.modeling.backbone import FPN

from ..layers import VARIANTS, build_operator

__all__ = ["NECKS", "NeckOperator", "DCDCFPN"]

# neck name (MODEL.DCDC.NECK) -> operator name of dcdc.layers.build_operator; "conv" is the plain
# FPN (detectron2's 3x3 output convs), the others the variants usable as neck operators.
NECKS = {"conv": None, **{v.name: v.operator for v in VARIANTS if v.neck}}


class NeckOperator(nn.Module):
    """An FPN output operator: ``norm(operator(x))``, channel count unchanged.

    Mirrors detectron2's ``Conv2d(norm=...)`` that it replaces: the FPN's own norm (``FPN.NORM``)
    comes after the operator. ``operator_norm`` is the norm inside the operator's kernel
    generators, independent of the FPN's.
    """

    def __init__(self, channels, operator="dcdc", kernel_size=7, norm="", operator_norm="BN",
                 operator_kwargs=None):
        super().__init__()
        self.operator = build_operator(operator, channels, kernel_size=kernel_size, stride=1,
                                       norm=operator_norm, **(operator_kwargs or {}))
        self.norm = get_norm(norm, channels)

    def forward(self, x):
        x = self.operator(x)
        return x if self.norm is None else self.norm(x)


class DCDCFPN(FPN):
    """:class:`detectron2.modeling.backbone.FPN` whose per-level 3x3 output convs are a DCDC
    operator ("dcdc", the paper's DCDC neck) or RedNet's involution ("involution").

    Parameter names stay detectron2's (``fpn_lateral{stage}``, ``fpn_output{stage}``,
    ``top_block``, ``bottom_up``); the output operator lives in ``fpn_output{stage}.operator``.

    Args:
        bottom_up, in_features, out_channels, norm, top_block, fuse_type, square_pad: as for
            detectron2's ``FPN``.
        neck_operator: "dcdc", "involution" or "lsa" (see :data:`NECKS`).
        kernel_size: LSA kernel size of the output operators (7 in the paper).
        operator_norm: norm inside the operators' kernel generators (a detectron2 norm name).
        operator_kwargs: further :func:`dcdc.layers.build_operator` arguments
            (``group_channels``, ``dw_kernel_size``, ``gsi_scale``, ...).
    """

    def __init__(self, bottom_up, in_features, out_channels, norm="", top_block=None,
                 fuse_type="sum", square_pad=0, *, neck_operator="dcdc", kernel_size=7,
                 operator_norm="BN", operator_kwargs=None):
        if NECKS.get(neck_operator) is None:
            raise ValueError(
                f"neck_operator must be one of {[k for k, v in NECKS.items() if v]}, got "
                f"{neck_operator!r}; for detectron2's plain FPN use FPN (MODEL.DCDC.NECK 'conv')."
            )
        super().__init__(bottom_up, in_features, out_channels, norm=norm, top_block=top_block,
                         fuse_type=fuse_type, square_pad=square_pad)
        self.neck_operator = neck_operator
        # FPN keeps its output convs both as attributes "fpn_output{stage}" (for the state dict)
        # and in the top-down ordered list self.output_convs (for forward); replace both.
        outputs = {}
        for name, conv in list(self.named_children()):
            if name.startswith("fpn_output"):
                outputs[id(conv)] = NeckOperator(
                    out_channels, NECKS[neck_operator], kernel_size, norm, operator_norm,
                    operator_kwargs,
                )
                setattr(self, name, outputs[id(conv)])
        self.output_convs = [outputs[id(conv)] for conv in self.output_convs]
