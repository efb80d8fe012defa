"""The scratch initialisation of backbone and neck (``MODEL.DCDC.SCRATCH_INIT``, the LazyConfigs'
``scratch_init``), the same for every operator: every conv Kaiming normal (fan_out, ReLU) with
bias 0, every norm 1 / 0 but each residual block's last norm at 0; on by default when no weights
are given, off when they are (and loaded weights are what ends up in the model), kept at the
modules' own init when forced off. On the quickstart's narrow DCDC-R26 (all builds ~0.1 s)."""
import logging
import math
import re

import pytest
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone, build_model

from dcdc.config import get_dcdc_cfg
from dcdc.engine import Trainer
from dcdc.layers import OPERATORS
from dcdc.modeling import DCDCBottleneckBlock, build_classifier
from dcdc.modeling.init import _NORMS

from helpers import REPO

YAML = str(REPO / "configs" / "quickstart_panoptic_fpn_dcdc_shapes_instant.yaml")
LAZY = str(REPO / "configs" / "quickstart_panoptic_fpn_dcdc_shapes_instant.py")


def yaml_cfg(operator, *opts):
    """The quickstart with ``operator`` in the backbone and the neck ("conv": detectron2's FPN)."""
    return get_dcdc_cfg(YAML, ["MODEL.DCDC.OPERATOR", operator, "MODEL.DCDC.NECK", operator,
                               *opts])


def lazy_cfg(operator, *overrides):
    cfg = LazyConfig.load(LAZY)
    return LazyConfig.apply_overrides(cfg, [
        f"model.backbone.bottom_up.stages.operator={operator}",
        f"model.backbone.neck_operator={operator}", *overrides])


def convs(module):
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]


def kaiming_std(conv):
    fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()  # torch's fan_out: groups ignored
    return math.sqrt(2.0 / fan_out)


def role(name):
    """The conv's kind, to pool its statistics: 'lsa.span', 'gsi.kernel_gen', 'conv1', ..."""
    parts = name.split(".")
    if len(parts) > 1 and parts[-2] in ("lsa", "gsi"):
        return ".".join(parts[-2:])
    return re.sub(r"\d", "", parts[-1])


def last_norms(module):
    return {id(b.conv3.norm) for b in module.modules() if isinstance(b, DCDCBottleneckBlock)}


def assert_scratch_init(backbone):
    """Every conv ~ N(0, 2 / fan_out) with bias 0; norms 1 / 0, each block's last norm 0."""
    pooled, tails, total = {}, 0, 0
    for name, conv in convs(backbone):
        z = conv.weight.detach().flatten() / kaiming_std(conv)
        n = z.numel()
        # per tensor: mean 0 and std 1 within 6 standard errors (loose for the stem's small
        # generator convs, hence the pooled checks below)
        assert abs(z.mean()) < 6 / math.sqrt(n), name
        assert abs(z.std() - 1) < 6 / math.sqrt(2 * n), (name, z.std())
        s, c = pooled.get(role(name), (0.0, 0))
        pooled[role(name)] = (s + z.pow(2).sum().item(), c + n)
        tails += (z.abs() > 2).sum().item()
        total += n
        assert conv.bias is None or not conv.bias.any(), name
    for kind, (s, n) in pooled.items():
        # E[z^2] = 1 with standard error sqrt(2 / n); PyTorch's default init is >2x off
        assert abs(s / n - 1) < 6 * math.sqrt(2 / n), (kind, s / n, n)
    # normal, not only the right variance: P(|z| > 2) = 4.55% (a uniform draw has none)
    assert abs(tails / total - 0.0455) < 6 * math.sqrt(0.0455 * 0.9545 / total), tails / total
    last = last_norms(backbone)
    assert len(last) == 8  # DCDC-R26: 1 + 2 + 4 + 1 blocks
    norms = [m for m in backbone.modules() if isinstance(m, _NORMS)]
    assert len(norms) > len(last)
    for m in norms:
        assert torch.equal(m.weight, torch.full_like(m.weight, 0.0 if id(m) in last else 1.0))
        assert not m.bias.any()


def assert_default_init(backbone):
    """The modules' own init (no scratch initialisation): each block's last norm at 1, and, with
    a dynamic operator, the kernel generators' PyTorch default draws (non-zero biases)."""
    for m in backbone.modules():
        if isinstance(m, DCDCBottleneckBlock):
            assert (m.conv3.norm.weight == 1).all()
    biases = [c.bias for n, c in convs(backbone) if role(n) in ("lsa.span", "gsi.kernel_gen")]
    assert all(b.abs().min() > 0 for b in biases)


@pytest.mark.parametrize("operator", OPERATORS)
def test_scratch_init_of_backbone_and_neck_for_every_operator(operator):
    """From scratch (MODEL.WEIGHTS "", train.init_checkpoint ""): the YAML and the LazyConfig
    build the very same scratch-initialised tensors from one seed."""
    cfg = yaml_cfg(operator)
    assert cfg.MODEL.WEIGHTS == "" and cfg.MODEL.DCDC.SCRATCH_INIT is None  # "auto"
    torch.manual_seed(0)
    yaml_backbone = build_backbone(cfg)
    assert_scratch_init(yaml_backbone)
    lazy = lazy_cfg(operator)
    assert lazy.train.init_checkpoint == "" and lazy.model.backbone.scratch_init == "auto"
    torch.manual_seed(0)
    lazy_backbone = instantiate(lazy.model.backbone)
    ys, ls = yaml_backbone.state_dict(), lazy_backbone.state_dict()
    assert list(ys) == list(ls)
    for k in ys:
        assert torch.equal(ys[k], ls[k]), k


@pytest.mark.parametrize("operator", OPERATORS)
def test_scratch_init_draws_what_kaiming_normal_draws(operator):
    """Each conv holds exactly nn.init.kaiming_normal_(fan_out, relu)'s draw, in module order."""
    opts = ["MODEL.BACKBONE.NAME", "build_dcdc_resnet_backbone", "MODEL.DCDC.SCRATCH_INIT"]
    torch.manual_seed(0)
    expected = build_backbone(yaml_cfg(operator, *opts, "False"))
    for _, conv in convs(expected):
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    torch.manual_seed(0)
    got = build_backbone(yaml_cfg(operator, *opts, "True"))
    for (name, a), (_, b) in zip(convs(expected), convs(got)):
        assert torch.equal(a.weight, b.weight), name


def test_weights_given_are_what_the_model_holds(tmp_path):
    """With weights, "auto" keeps the modules' own init (nothing spent, nothing surprising), and
    what DetectionCheckpointer loads overwrites any init, forced on or not, in both config
    forms."""
    torch.manual_seed(0)
    source = build_model(yaml_cfg("dcdc", "MODEL.DCDC.SCRATCH_INIT", "False"))
    with torch.no_grad():  # values no initialisation gives
        for p in source.parameters():
            p.uniform_(-0.5, 0.5)
    DetectionCheckpointer(source, save_dir=str(tmp_path)).save("source")
    path = str(tmp_path / "source.pth")
    expected = source.state_dict()

    def assert_loaded(model):
        DetectionCheckpointer(model).load(path)
        state = model.state_dict()
        assert list(state) == list(expected)
        for k in state:
            assert torch.equal(state[k], expected[k]), k

    torch.manual_seed(1)
    model = Trainer.build_model(yaml_cfg("dcdc", "MODEL.WEIGHTS", path))  # as train_net.py
    assert_default_init(model.backbone)
    assert_loaded(model)
    torch.manual_seed(1)
    forced = build_model(yaml_cfg("dcdc", "MODEL.WEIGHTS", path, "MODEL.DCDC.SCRATCH_INIT", "True"))
    assert (forced.backbone.bottom_up.res2[0].conv3.norm.weight == 0).all()  # applied...
    assert_loaded(forced)  # ...and overwritten

    lazy = lazy_cfg("dcdc", f"train.init_checkpoint={path}")
    torch.manual_seed(1)
    model = instantiate(lazy.model)
    assert_default_init(model.backbone)
    assert_loaded(model)


@pytest.mark.parametrize("operator", ["dcdc", "conv"])
def test_forced_off_keeps_the_default_init_without_weights(operator):
    torch.manual_seed(0)
    assert_default_init(build_backbone(yaml_cfg(operator, "MODEL.DCDC.SCRATCH_INIT", "False")))
    lazy = lazy_cfg(operator, "model.backbone.bottom_up.scratch_init=False")
    assert lazy.model.backbone.scratch_init is False  # the neck follows the backbone
    torch.manual_seed(0)
    backbone = instantiate(lazy.model.backbone)
    assert_default_init(backbone)
    # PyTorch's default (kaiming_uniform, a=sqrt(5)): std 1/sqrt(3 fan_in), not Kaiming fan_out
    conv = backbone.bottom_up.res3[0].conv1
    assert conv.weight.std() < 0.7 * kaiming_std(conv)


def test_frozen_norms_keep_their_scale(caplog):
    """A frozen last norm (FREEZE_AT's FrozenBN) at 0 would switch its branch off for good: it
    stays 1, with a warning; the classifier, whose zero_init_last asks for the zeros, refuses."""
    with caplog.at_level(logging.WARNING, logger="dcdc.modeling.init"):
        backbone = build_backbone(yaml_cfg("dcdc", "MODEL.BACKBONE.FREEZE_AT", "2"))
    for stage, value in (("res2", 1.0), ("res3", 0.0)):
        norm = getattr(backbone.bottom_up, stage)[0].conv3.norm
        assert isinstance(norm, FrozenBatchNorm2d) == (stage == "res2")
        assert (norm.weight == value).all(), stage
    assert "the last norm of 1 of 8 residual blocks (FrozenBatchNorm2d)" in caplog.text
    with pytest.raises(ValueError, match="frozen FrozenBatchNorm2d"):
        build_classifier(26, "conv", num_classes=3, norm="FrozenBN")


def test_auto_leaves_a_frozen_norm_model_alone(caplog):
    """All norms frozen (FrozenBN, a paper config meant for pretrained weights) and no weights:
    "auto" keeps the default init, with a warning (the recipe would give Inf at init there);
    True forces it."""
    opts = ("MODEL.RESNETS.NORM", "FrozenBN", "MODEL.BACKBONE.FREEZE_AT", "2")
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="dcdc.modeling.backbone"):
        backbone = build_backbone(yaml_cfg("dcdc", *opts))
    assert "not applied: no weights are loaded but the model has frozen norms" in caplog.text
    assert_default_init(backbone)
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 128))
    assert all(torch.isfinite(v).all() for v in out.values())
    forced = build_backbone(yaml_cfg("dcdc", *opts, "MODEL.DCDC.SCRATCH_INIT", "True"))
    conv = forced.bottom_up.res3[0].conv1
    assert conv.weight.std() > 0.7 * kaiming_std(conv)


def test_key_values():
    assert get_dcdc_cfg(YAML, ["MODEL.DCDC.SCRATCH_INIT", "auto"]).MODEL.DCDC.SCRATCH_INIT == "auto"
    assert get_dcdc_cfg(YAML, ["MODEL.DCDC.SCRATCH_INIT", "True"]).MODEL.DCDC.SCRATCH_INIT is True
    with pytest.raises(ValueError, match="MODEL.DCDC.SCRATCH_INIT must be"):
        build_backbone(get_dcdc_cfg(YAML, ["MODEL.DCDC.SCRATCH_INIT", "yes"]))
