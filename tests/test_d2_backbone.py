"""DCDC backbones and necks under detectron2's contracts: FREEZE_AT, norms, OUT_FEATURES, depths,
neck structure, clear config errors, checkpoint round trips and the FLOP
handles of dcdc.paper.counting."""

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone, build_model

from dcdc import add_dcdc_config
from dcdc.layers import GSI, DCDCConv2d
from dcdc.modeling import DEPTHS, NeckOperator, build_classifier
from dcdc.paper.counting import add_aggregation_handles, count_flops

from helpers import REPO




def cfg_for(name="faster_rcnn_dcdc_r26_dcdc_neck", *opts):
    cfg = get_cfg()
    add_dcdc_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / f"{name}.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3, 5])
def test_freeze_at(freeze_at):
    cfg = cfg_for("faster_rcnn_dcdc_r26_dcdc_neck", "MODEL.RESNETS.NORM", "BN",
                  "MODEL.BACKBONE.FREEZE_AT", str(freeze_at))
    fpn = build_backbone(cfg)
    bottom_up = fpn.bottom_up
    stages = [("stem", bottom_up.stem)] + [(n, s) for n, s in zip(
        bottom_up.stage_names, bottom_up.stages)]
    for idx, (name, module) in enumerate(stages):
        frozen = idx < freeze_at
        grads = {p.requires_grad for p in module.parameters()}
        assert grads == {not frozen}, f"{name} at FREEZE_AT={freeze_at}"
        # Frozen blocks' norms, the operators' own kernel-generator norms included, are FrozenBN.
        bns = [m for m in module.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
        assert bns and all(isinstance(m, FrozenBatchNorm2d) == frozen for m in bns), name
    neck = [p for n, p in fpn.named_parameters() if not n.startswith("bottom_up.")]
    assert neck and all(p.requires_grad for p in neck)


@pytest.mark.parametrize("norm", ["FrozenBN", "BN", "SyncBN", "GN"])
def test_norms_and_output_shapes(norm):
    cfg = cfg_for("retinanet_dcdc_r26_dcdc_neck", "MODEL.RESNETS.NORM", norm, "MODEL.FPN.NORM",
                  "GN" if norm == "GN" else "", "MODEL.BACKBONE.FREEZE_AT", "0")
    backbone = build_backbone(cfg)
    norm_types = {type(m).__name__ for m in backbone.bottom_up.modules()
                  if "Norm" in type(m).__name__}
    assert norm_types == {{"FrozenBN": "FrozenBatchNorm2d", "BN": "BatchNorm2d",
                           "SyncBN": "SyncBatchNorm", "GN": "GroupNorm"}[norm]}
    if norm == "GN":
        assert isinstance(backbone.fpn_output3.norm, nn.GroupNorm)
        # GroupNorm(32, C) where C allows, gcd(32, C) groups in the 8-channel stem generator.
        assert backbone.bottom_up.res2[0].conv1.norm.num_groups == 32
        assert backbone.bottom_up.stem.conv2.lsa.reduce.norm.num_groups == 8
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 160))
    shapes = backbone.output_shape()
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"] == list(shapes)
    for k, v in out.items():
        assert v.shape == (1, 256, -(-128 // shapes[k].stride), -(-160 // shapes[k].stride)), k
        assert torch.isfinite(v).all()


def test_out_features_and_plain_backbone():
    cfg = cfg_for("faster_rcnn_dcdc_r26_dcdc_neck", "MODEL.BACKBONE.NAME",
                  "build_dcdc_resnet_backbone", "MODEL.RESNETS.OUT_FEATURES", "['stem', 'res3', 'res5']")
    backbone = build_backbone(cfg).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 64))
    assert {k: (v.shape[1], 64 // v.shape[-1]) for k, v in out.items()} == {
        "stem": (64, 4), "res3": (512, 8), "res5": (2048, 32)}
    assert {k: (s.channels, s.stride) for k, s in backbone.output_shape().items()} == {
        "stem": (64, 4), "res3": (512, 8), "res5": (2048, 32)}


@pytest.mark.parametrize("depth", sorted(DEPTHS))
@pytest.mark.parametrize("operator", ["dcdc", "involution"])
def test_backbone_is_the_classifier_without_head(depth, operator):
    """Same names and shapes as the ImageNet classifier: converted weights load one to one."""
    cfg = cfg_for("faster_rcnn_dcdc_r50", "MODEL.BACKBONE.NAME", "build_dcdc_resnet_backbone",
                  "MODEL.RESNETS.DEPTH", str(depth), "MODEL.DCDC.OPERATOR", operator,
                  "MODEL.RESNETS.NORM", "BN")
    backbone = build_backbone(cfg)
    classifier = build_classifier(depth, operator)
    expected = {k: v.shape for k, v in classifier.state_dict().items()
                if not k.startswith("linear.")}
    assert {k: v.shape for k, v in backbone.state_dict().items()} == expected


def test_dcdc_and_involution_necks():
    conv = build_backbone(cfg_for("faster_rcnn_dcdc_r50"))
    dcdc = build_backbone(cfg_for("faster_rcnn_dcdc_r50_dcdc_neck"))
    inv = build_backbone(cfg_for("faster_rcnn_rednet50_involution_neck"))
    for fpn in (dcdc, inv):
        for stage in (2, 3, 4, 5):
            assert isinstance(getattr(fpn, f"fpn_lateral{stage}"), nn.Conv2d)
            assert isinstance(getattr(fpn, f"fpn_output{stage}"), NeckOperator)
        assert fpn.output_convs == [fpn.fpn_output5, fpn.fpn_output4, fpn.fpn_output3,
                                    fpn.fpn_output2]
    op = dcdc.fpn_output2.operator
    assert isinstance(op, DCDCConv2d) and isinstance(op.gsi, GSI) and op.lsa.dw_in is not None
    assert op.lsa.kernel_size == 7 and op.channels == 256
    involution = inv.fpn_output2.operator
    assert involution.gsi is None and involution.lsa.dw_in is None
    # The DCDC neck is lighter than the 3x3 output convs it replaces: ~2.0 M fewer parameters
    # over a four-level FPN (the paper's neck rows against the convolution-neck rows).
    def n(m):
        return sum(p.numel() for p in m.parameters())
    assert 1.9e6 < n(conv) - n(dcdc) < 2.1e6
    # Lateral convs and RetinaNet's P6/P7 stay plain, with the same names.
    retina = build_backbone(cfg_for("retinanet_dcdc_r50_dcdc_neck"))
    assert isinstance(retina.top_block.p6, nn.Conv2d) and isinstance(retina.top_block.p7, nn.Conv2d)
    plain = build_backbone(cfg_for("retinanet_dcdc_r50"))
    same = {k for k in plain.state_dict() if not k.startswith("fpn_output")}
    assert same <= set(retina.state_dict())


@pytest.mark.parametrize("opts, message", [
    (["MODEL.RESNETS.DEPTH", "18"], "DEPTH=18"),
    (["MODEL.RESNETS.NUM_GROUPS", "32"], "NUM_GROUPS"),
    (["MODEL.RESNETS.RES5_DILATION", "2"], "RES5_DILATION"),
    (["MODEL.DCDC.NECK", "bifpn"], "MODEL.DCDC.NECK"),
    (["MODEL.DCDC.OPERATOR", "deform"], "operator must be one of"),
])
def test_config_errors_say_what_to_change(opts, message):
    with pytest.raises((ValueError, KeyError), match=message):
        build_backbone(cfg_for("faster_rcnn_dcdc_r26_dcdc_neck", *opts))


def test_missing_add_dcdc_config_is_explained():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_dcdc_resnet_fpn_backbone"
    with pytest.raises(KeyError, match="add_dcdc_config"):
        build_backbone(cfg)


def test_detection_checkpointer_round_trip(tmp_path):
    cfg = cfg_for("mask_rcnn_dcdc_r26_dcdc_neck", "MODEL.RESNETS.NORM", "BN")
    torch.manual_seed(0)
    a = build_model(cfg)
    with torch.no_grad():  # non-default BN statistics must survive too
        for m in a.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    DetectionCheckpointer(a, save_dir=str(tmp_path)).save("model")
    torch.manual_seed(1)
    b = build_model(cfg)
    incompatible = DetectionCheckpointer(b).load(str(tmp_path / "model.pth"))
    assert incompatible is not None
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("gsi_kernel_size", [1, 3])
def test_flop_handles_count_aggregation_and_per_sample_conv(gsi_kernel_size):
    c, h, w, k, m = 64, 12, 16, 7, 8
    op = DCDCConv2d(c, kernel_size=k, gsi_kernel_size=gsi_kernel_size).eval()
    x = torch.randn(2, c, h, w)
    flops = FlopCountAnalysis(op, (x,))
    add_aggregation_handles(flops).unsupported_ops_warnings(False)
    by_op = flops.by_operator()
    assert by_op["lsa_aggregate"] == 2 * c * k * k * h * w
    kk = gsi_kernel_size ** 2
    gsi_convs = 2 * (c * m * h * w + m * m * m * kk + m * c * h * w)  # reduce, kernel_gen, expand
    dynamic = 2 * m * m * kk * h * w                               # the per-sample conv
    lsa_convs = 2 * h * w * (c * 9 + c * (c // 4) + (c // 4) * 9 + (c // 4) * k * k * (c // 16))
    if gsi_kernel_size == 1:
        assert by_op["bmm"] == dynamic
        assert by_op["conv"] == gsi_convs + lsa_convs
    else:
        assert by_op["conv"] == gsi_convs + lsa_convs + dynamic


def test_count_flops_of_a_detector():
    small = (128, 160)
    base = build_model(cfg_for("faster_rcnn_dcdc_r26_dcdc_neck", "MODEL.DCDC.NECK", "conv"))
    neck = build_model(cfg_for("faster_rcnn_dcdc_r26_dcdc_neck"))
    total_base, agg_base = count_flops(base, small)
    total_neck, agg_neck = count_flops(neck, small)
    assert 0 < agg_base < agg_neck < total_neck
    # The DCDC neck is much cheaper than the 3x3 output convs it replaces (paper: -43 G).
    assert total_neck - agg_neck < total_base - agg_base
    r50 = build_model(cfg_for("faster_rcnn_r50"))
    assert count_flops(r50, small)[1] == 0
