"""Initialisation of the DCDC-ResNets and necks trained from scratch (``MODEL.DCDC.SCRATCH_INIT``).

The anchors' recipe: official RedNet (d-li14/involution, mmcls) initialises every conv with
Kaiming normal (fan_out, ReLU), every norm at weight 1 / bias 0, and the last norm of each
residual block at zero (``zero_init_residual``); detectron2's ResNet draws its convs with
``c2_msra_fill`` (the same Kaiming fan_out, bias 0). Without this, every conv of the
DCDC-ResNets and of the neck operators, the operators' kernel generators included (LSA's
depth-wise and 1x1 convs, GSI's reduce / kernel-generating / expand convs, the involution's),
keeps PyTorch's default init (``kaiming_uniform_`` with a = sqrt(5), uniform biases), and the
FPN's own convs detectron2's ``c2_xavier_fill``.

* :func:`scratch_init_`: that recipe, for every operator alike ("conv", "involution", "lsa",
  "dcdc"); the backbone and neck builders apply it (:func:`~dcdc.modeling.build_dcdc_resnet`,
  :func:`~dcdc.modeling.build_dcdc_fpn`).
* :func:`zero_init_last_norm_`: the residual-branch rule alone, shared with
  :func:`~dcdc.modeling.build_classifier` (``zero_init_last``).
* :func:`resolve_scratch_init`: ``"auto"`` / None -> on iff no weights are given.
"""
import logging

from torch import nn

from detectron2.layers import FrozenBatchNorm2d
from detectron2.layers.batch_norm import LayerNorm as D2LayerNorm

__all__ = ["resolve_scratch_init", "scratch_init_", "zero_init_last_norm_", "residual_blocks"]

logger = logging.getLogger(__name__)

# BN, SyncBN (nn.SyncBatchNorm, detectron2's NaiveSyncBatchNorm), GN, LN and FrozenBN.
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, D2LayerNorm,
          FrozenBatchNorm2d)


def resolve_scratch_init(scratch_init, weights, key="scratch_init", weights_key="weights"):
    """Whether to apply :func:`scratch_init_`: ``scratch_init`` True / False as given, None or
    "auto" when ``weights`` (``MODEL.WEIGHTS`` / ``train.init_checkpoint``) is empty or None,
    i.e. when the model trains from scratch. ``key`` / ``weights_key`` name the settings in
    messages."""
    if scratch_init is None or (isinstance(scratch_init, str) and scratch_init.lower() == "auto"):
        return not weights
    if isinstance(scratch_init, bool):
        return scratch_init
    raise ValueError(
        f"{key} must be \"auto\" (or None / YAML null: on when {weights_key} is empty), True or "
        f"False, got {scratch_init!r}.")


def residual_blocks(module):
    """The residual blocks of ``module`` (DCDC-ResNet bottlenecks), in module order."""
    from .resnet import DCDCBottleneckBlock

    return [m for m in module.modules() if isinstance(m, DCDCBottleneckBlock)]


def _learnable_scale(norm):
    weight = getattr(norm, "weight", None)
    return isinstance(weight, nn.Parameter) and weight.requires_grad


def zero_init_last_norm_(blocks, strict=True):
    """Start every residual branch at zero: the scale of each block's last norm (after
    ``conv3``) is set to 0, in place. Returns the blocks whose last norm was left as it was.

    Only a scale that learns is zeroed: a frozen norm (FrozenBN, or a norm of a stage that
    ``freeze_at`` froze) at 0 would switch its branch off for good, and a block without a norm
    has no scale. ``strict``: such a block raises a ValueError (the classifier, whose
    ``zero_init_last`` asks for the zeros); otherwise it is left as is and named in a warning.
    """
    skipped = []
    for block in blocks:
        norm = block.conv3.norm
        if _learnable_scale(norm):
            nn.init.zeros_(norm.weight)
            continue
        if strict:
            if getattr(norm, "weight", None) is None:
                raise ValueError(
                    f"zero_init_last needs a norm with a scale after each bottleneck's last conv, "
                    f"got {type(norm).__name__}; pass a norm such as 'BN' / 'GN' or "
                    "zero_init_last=False.")
            raise ValueError(
                f"zero_init_last needs a norm whose scale learns after each bottleneck's last "
                f"conv, got a frozen {type(norm).__name__} (at 0 it would switch the residual "
                "branch off for good); pass a norm such as 'BN' / 'GN' or zero_init_last=False.")
        skipped.append(block)
    return skipped


def scratch_init_(module, exclude=()):
    """Initialise ``module`` in place as RedNet / detectron2's ResNet do from scratch, whatever
    the operator: every conv (``nn.Conv1d/2d/3d``, detectron2's ``Conv2d``; the operators' kernel
    generators included) Kaiming normal with mode fan_out and ReLU gain
    (``nn.init.kaiming_normal_``, as detectron2's ``c2_msra_fill``) and bias 0; every norm (BN,
    SyncBN, GN, LN, FrozenBN) weight 1 / bias 0; then each residual block's last norm weight 0
    (:func:`zero_init_last_norm_`; frozen ones stay 1, with a warning). Other modules (linear
    layers, buffers such as BN's running statistics) are left as they are; parameters and their
    names do not change.

    ``exclude``: submodules to leave out (e.g. an FPN's ``bottom_up``, which its own builder
    initialised). Returns ``module``.
    """
    excluded = {id(m) for e in exclude for m in e.modules()}
    modules = [m for m in module.modules() if id(m) not in excluded]
    for m in modules:
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    blocks = [m for m in residual_blocks(module) if id(m) not in excluded]
    skipped = zero_init_last_norm_(blocks, strict=False)
    if skipped:
        kinds = sorted({type(b.conv3.norm).__name__ for b in skipped})
        logger.warning(
            f"Scratch initialisation: the last norm of {len(skipped)} of {len(blocks)} residual "
            f"blocks ({', '.join(kinds)}) is frozen or missing and keeps its scale (a frozen zero "
            "would switch the branch off for good). Training from scratch wants a norm that "
            "learns (MODEL.RESNETS.NORM BN / SyncBN / GN) and MODEL.BACKBONE.FREEZE_AT 0.")
    return module
