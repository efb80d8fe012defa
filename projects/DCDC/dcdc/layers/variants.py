"""The spatial operators of the paper's tables, in one table every other place reads.

A variant is what ``MODEL.DCDC.OPERATOR`` / ``build_operator`` (the four operators),
``build_classifier``, the timm model names, ``MODEL.DCDC.NECK``, the classifier converter's
``--operator`` and the operator comparison's rows name. Table order is display order: the
baseline first, then the dynamic operators from the simplest to the paper's, then Table III's
global-branch ablations of DCDC.
"""
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Variant", "VARIANTS", "OPERATORS", "GLOBAL_BRANCHES", "variant"]


@dataclass(frozen=True)
class Variant:
    """One row. ``operator``: the :func:`~dcdc.layers.build_operator` name that builds it;
    ``kwargs``: the :class:`~dcdc.layers.DCDCConv2d` arguments it fixes (None: a plain conv, no
    ``DCDCConv2d``; DCDC itself fixes none, its ``global_branch`` defaults to "gsi"); ``label``: its name in tables and figures; ``timm_prefix``: the
    timm model family (``<prefix><depth>``), if registered; ``neck``: usable as
    ``MODEL.DCDC.NECK``."""
    name: str
    operator: str
    kwargs: Optional[dict] = field(default=None, hash=False)
    label: str = ""
    timm_prefix: Optional[str] = None
    neck: bool = False

    @property
    def global_branch(self):
        return None if self.kwargs is None else self.kwargs.get("global_branch", "gsi")


VARIANTS = (
    Variant("conv", "conv", None, "3x3 conv (ResNet)"),
    Variant("involution", "involution", {"global_branch": "none", "dw_kernel_size": 0},
            "involution (RedNet)", "rednet", neck=True),
    Variant("lsa", "lsa", {"global_branch": "none"}, "LSA only", "lsa_resnet", neck=True),
    Variant("dcdc", "dcdc", {}, "DCDC (LSA + GSI)", "dcdc_resnet", neck=True),
    Variant("conv_small", "dcdc", {"global_branch": "conv_small"}, "LSA + Conv_small"),
    Variant("conv_large", "dcdc", {"global_branch": "conv_large"}, "LSA + Conv_large"),
)
# build_operator's names: the variants that are their own operator.
OPERATORS = tuple(v.name for v in VARIANTS if v.name == v.operator)
# DCDCConv2d's global_branch values.
GLOBAL_BRANCHES = tuple(dict.fromkeys(v.global_branch for v in VARIANTS if v.kwargs is not None))
_BY_NAME = {v.name: v for v in VARIANTS}


def variant(name):
    """The :class:`Variant` called ``name``; a clear error for any other name."""
    if name == "rednet":
        # RedNet names the network; its operator is "involution".
        raise ValueError('operator "rednet" is now called "involution" (RedNet is the network '
                         'built from it); use operator="involution" / MODEL.DCDC.OPERATOR '
                         '"involution".')
    if name not in _BY_NAME:
        raise ValueError(f"operator must be one of {tuple(_BY_NAME)}, got {name!r}.")
    return _BY_NAME[name]
