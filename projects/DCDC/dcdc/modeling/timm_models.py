"""DCDC-ResNet, LSA-ResNet and RedNet as timm models (``timm.create_model("dcdc_resnet50")``).

Importing this module registers, with timm's model registry::

    dcdc_resnet{26,38,50,101}   DCDC operator (LSA + GSI), paper Table I
    lsa_resnet{26,38,50,101}    LSA branch only (Table III "LSA")
    rednet{26,38,50,101}        RedNet's involution (no DW convs in phi, no GSI)

:class:`DCDCResNet` is a detectron2 ``ResNet`` whose stem and stages are the ones
:func:`dcdc.modeling.build_classifier` builds (with its ``zero_init_last``), under the same module
names (``stem``, ``res2`` .. ``res5``, ``linear``); it adds only timm's interface and a timm head.
A state_dict therefore moves unchanged between the timm model, ``build_classifier`` and (minus
``linear.*``) the detectron2 backbone, which is what ``tools/convert_classifier_to_d2.py``
relies on.

What timm expects of a model is provided in the style of ``timm/models/resnet.py``:
``pretrained_cfg``/``default_cfg`` metadata (input size, mean/std, ``first_conv``,
``classifier``), ``feature_info`` so that ``features_only=True`` returns the stem and the four
stage outputs, ``forward_features``/``forward_head``/``forward_intermediates``,
``reset_classifier`` and gradient checkpointing.

No weights are published for these models, so the configs carry no URL: ``pretrained=True``
only works with a local file, e.g.
``timm.create_model("dcdc_resnet26", pretrained=True, pretrained_cfg_overlay=dict(file=path))``
with a checkpoint written by ``tools/train_classifier.py``.
"""
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from detectron2.modeling.backbone import ResNet

from ..layers import VARIANTS

from .resnet import DEPTHS, build_classifier, init_classifier_head

__all__ = ["DCDCResNet", "TIMM_MODEL_NAMES"]

_STAGES = ("res2", "res3", "res4", "res5")
# operator -> timm model family, from the variants table
_PREFIXES = {v.operator: v.timm_prefix for v in VARIANTS if v.timm_prefix}


class DCDCResNet(ResNet):
    """A DCDC-ResNet classifier (:func:`dcdc.modeling.build_classifier`'s) with timm's model
    interface.

    Args:
        depth: 26, 38, 50 or 101 (blocks per stage in :data:`dcdc.modeling.DEPTHS`).
        operator: "dcdc", "lsa", "involution" or "conv" (see :func:`dcdc.layers.build_operator`).
        num_classes: classifier outputs; 0 gives pooled features (timm convention).
        in_chans: input channels.
        global_pool: timm pool type ("avg", "max", "avgmax", ...; "" keeps the feature map).
        drop_rate: dropout before the classifier.
        norm: any detectron2 ``get_norm`` name ("BN", "SyncBN", "GN", ...).
        zero_init_last: as for :func:`dcdc.modeling.build_classifier` (start every residual
            branch at zero).
        **operator_kwargs: forwarded to the operator (``dw_kernel_size``, ``gsi_kernel_size``,
            ``gsi_scale``, ``global_branch``, ...).
    """

    def __init__(self, depth=50, operator="dcdc", num_classes=1000, in_chans=3, global_pool="avg",
                 drop_rate=0.0, norm="BN", zero_init_last=True, **operator_kwargs):
        body = build_classifier(depth, operator, num_classes=None, norm=norm, in_channels=in_chans,
                                zero_init_last=zero_init_last, **operator_kwargs)
        super().__init__(body.stem, [list(stage) for stage in body.stages],
                         out_features=["stem", *_STAGES])
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.feature_info = [dict(num_chs=shape.channels, reduction=shape.stride, module=name)
                             for name, shape in self.output_shape().items()]
        self.num_features = self.head_hidden_size = self.feature_info[-1]["num_chs"]
        self.global_pool, self.linear = self._make_head(num_classes, global_pool)

    def _make_head(self, num_classes, global_pool):
        pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        if num_classes <= 0:
            return pool, nn.Identity()
        linear = nn.Linear(self.num_features * pool.feat_mult(), num_classes)
        init_classifier_head(linear)
        return pool, linear

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, str]:
        """Parameter groups for timm's layer-wise lr decay: the stem, then blocks (or stages)."""
        return dict(stem=r"^stem", blocks=r"^res(\d+)" if coarse else r"^res(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return "linear" if name_only else self.linear

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` (0: no head)."""
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        device = next(self.parameters()).device
        self.global_pool, self.linear = self._make_head(num_classes, global_pool)
        self.linear.to(device)
        self.global_pool.train(self.training)
        self.linear.train(self.training)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The stem and stage outputs selected by ``indices`` (0 = stem, 1..4 = res2..res5).

        Same contract as timm's ``ResNet.forward_intermediates`` (used by ``FeatureGetterNet``).
        """
        if output_fmt != "NCHW":
            raise ValueError(
                f"DCDCResNet only outputs NCHW features, got output_fmt={output_fmt!r}.")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        intermediates = []
        x = self.stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        stages = self.stages[:max_index] if stop_early else self.stages
        for idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> List[int]:
        """Drop the stages after the last index kept, and the head (timm contract)."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        for name in _STAGES[max_index:]:
            setattr(self, name, nn.Sequential())
        self.stages = [getattr(self, name) for name in self.stage_names]  # ResNet's list of them
        if max_index < len(_STAGES):
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or max_index < len(_STAGES):
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x, flatten=True)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(variant: str, pretrained: bool = False, **kwargs) -> DCDCResNet:
    local_file = [(kwargs.get(key) or {}).get("file") for key in ("pretrained_cfg_overlay",
                                                                   "pretrained_cfg")]
    if pretrained and not any(local_file):
        raise ValueError(
            f"No pretrained weights are published for {variant!r}. Train them with "
            "tools/train_classifier.py and load them with "
            f"timm.create_model({variant!r}, pretrained=True, "
            "pretrained_cfg_overlay=dict(file='output/.../model_best.pth.tar')).")
    return build_model_with_cfg(DCDCResNet, variant, pretrained, **kwargs)


def _cfg(**kwargs):
    """ImageNet metadata; no ``url``/``hf_hub_id``: nothing is ever downloaded."""
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1", "classifier": "linear", "license": "apache-2.0",
        "paper_ids": "Dual Complementary Dynamic Convolution for Image Recognition", **kwargs,
    }


TIMM_MODEL_NAMES = [f"{prefix}{depth}" for prefix in _PREFIXES.values() for depth in DEPTHS]
default_cfgs = generate_default_cfgs({name: _cfg() for name in TIMM_MODEL_NAMES})


def _make_entrypoint(operator, depth):
    name = f"{_PREFIXES[operator]}{depth}"

    def entrypoint(pretrained: bool = False, **kwargs) -> DCDCResNet:
        return _create(name, pretrained, **dict(dict(depth=depth, operator=operator), **kwargs))

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = (f"{name}: DCDC-ResNet layout, depth {depth}, operator {operator!r} "
                          "(paper Tables I and III).")
    return entrypoint


# timm's register_model keys on the function name and module; the twelve entrypoints differ only
# in (operator, depth), so they are generated rather than spelled out.
for _operator in _PREFIXES:
    for _depth in DEPTHS:
        _fn = _make_entrypoint(_operator, _depth)
        globals()[_fn.__name__] = register_model(_fn)
