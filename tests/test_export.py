"""Deployment round trips: the dcdc operators and DCDC / RedNet detectors exported to TorchScript
and ONNX (standard ops only) give the eager model's outputs, on the tracing size and another.

Small models and images; the models are randomly initialised (seeded), which exercises the same
graphs as trained ones."""
import io
import os
import subprocess
import sys

import pytest
import torch

from detectron2.export import STABLE_ONNX_OPSET_VERSION
from detectron2.modeling import build_backbone, build_model

from dcdc.config import get_dcdc_cfg
from dcdc.export import (
    ONNX_MIN_OPSET, OnnxRuntimeModel, compare_outputs, export_onnx, export_onnx_detector,
    export_torchscript,
)
from dcdc.layers import LSA, DCDCConv2d

from helpers import REPO, assert_onnx_equals_eager, assert_standard_onnx

CURRENT_OPSET = 18
SMALL = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "96",
         "INPUT.MAX_SIZE_TEST", "128"]


@pytest.mark.parametrize("stride,groups_channels", [(1, 4), (2, 8)])
@pytest.mark.parametrize("opset", [STABLE_ONNX_OPSET_VERSION, CURRENT_OPSET])
def test_dcdc_conv_legacy_onnx_equals_eager(tmp_path, stride, groups_channels, opset):
    """The graph that was silently wrong before (up to 5.2 off on its own tracing input)."""
    torch.manual_seed(0)
    m = DCDCConv2d(16, stride=stride, group_channels=groups_channels).eval()
    x = torch.randn(2, 16, 13, 17)
    path = tmp_path / "m.onnx"
    export_onnx(m, (x,), path, dynamo=False, opset_version=opset, input_names=["x"],
                dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    assert_onnx_equals_eager(path, m, (x, torch.randn(1, 16, 22, 9)), atol=1e-4)


def test_dcdc_conv_below_min_opset_raises(tmp_path):
    m = DCDCConv2d(16, stride=2).eval()
    with pytest.raises(Exception, match=f"opset >= {ONNX_MIN_OPSET}"):
        export_onnx(m, (torch.randn(1, 16, 9, 9),), tmp_path / "m.onnx", dynamo=False,
                    opset_version=ONNX_MIN_OPSET - 1)


def _dims(min_size):
    # multiples of 32, as the detectors pad to: the stride-2 ceil sizes specialize on parity.
    # min_size keeps every output level above 1 px: torch.export guards against size 1 (it
    # broadcasts), so a program traced with larger levels refuses inputs that produce one.
    dim = {n: 32 * torch.export.Dim(n, min=min_size // 32, max=32) for n in "hw"}
    return ({2: dim["h"], 3: dim["w"]},)


def _dynamo_round_trip(tmp_path, model, x, other, min_size=64, **kwargs):
    path = tmp_path / "m.onnx"
    export_onnx(model, (x,), path, dynamic_shapes=_dims(min_size), **kwargs)
    assert_onnx_equals_eager(path, model, (x, other))


def test_dcdc_conv_dynamo_onnx_equals_eager(tmp_path):
    torch.manual_seed(0)
    m = DCDCConv2d(16, stride=2).eval()
    _dynamo_round_trip(tmp_path, m, torch.randn(1, 16, 64, 96), torch.randn(1, 16, 128, 64))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_dcdc_r50_fpn_backbone_onnx_equals_eager(tmp_path, dynamo):
    """DCDC-ResNet-50 (the quickstart's narrow widths, K = 3 to keep the graph small) with the
    DCDC FPN neck, p2-p6 on two sizes, exported by a plain ``torch.onnx.export`` (the
    registrations of ``import dcdc``, nothing else), with the dynamic sizes a user passes (see
    docs/deployment.md). The ONNX optimizer is skipped for time; the operator tests run it."""
    torch.manual_seed(0)
    cfg = get_dcdc_cfg(str(REPO / "configs" / "quickstart_panoptic_fpn_dcdc_shapes_instant.yaml"),
                       ["MODEL.RESNETS.DEPTH", "50", "MODEL.DCDC.NECK", "dcdc",
                        "MODEL.DCDC.KERNEL_SIZE", "3", "MODEL.DCDC.NECK_KERNEL_SIZE", "3",
                        "MODEL.DEVICE", "cpu"])
    backbone = build_backbone(cfg).eval()
    x, other = torch.randn(1, 3, 128, 192), torch.randn(1, 3, 192, 128)
    path = tmp_path / "m.onnx"
    if dynamo:
        torch.onnx.export(backbone, (x,), path, dynamic_shapes=_dims(128), optimize=False)
    else:
        torch.onnx.export(backbone, (x,), path, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {2: "h", 3: "w"}})
    assert_onnx_equals_eager(path, backbone, (x, other))


def test_dynamo_export_without_decomposition_raises(tmp_path, monkeypatch):
    """A graph still holding a dcdc operator is refused, not written with a custom domain."""
    import dcdc.export.onnx_ops as onnx_ops

    monkeypatch.setattr(onnx_ops, "decompositions", lambda: {})
    with pytest.raises(RuntimeError, match="no decomposition"):
        export_onnx(DCDCConv2d(16).eval(), (torch.randn(1, 16, 9, 9),), tmp_path / "m.onnx")


# (config, overrides, ONNX opset): every meta-architecture, with conv / DCDC / involution necks.
# Opset 16 is the oldest with RoIAlign's aligned mode (detectron2's STABLE_ONNX_OPSET_VERSION,
# 11, cannot express it: see test_roi_pooling_below_opset_16_raises); RetinaNet pools no RoIs.
DETECTORS = [
    ("faster_rcnn_dcdc_r50.yaml", [], 16),
    ("retinanet_rednet50_involution_neck.yaml", [], STABLE_ONNX_OPSET_VERSION),
    ("mask_rcnn_dcdc_r50_dcdc_neck.yaml", [], 16),
    ("cascade_mask_rcnn_dcdc_r50.yaml", [], 16),
    ("quickstart_panoptic_fpn_dcdc_shapes_instant.yaml", ["MODEL.DCDC.NECK", "involution"], 16),
    ("quickstart_panoptic_fpn_dcdc_shapes_instant.yaml", [], CURRENT_OPSET),
]


@pytest.mark.parametrize("config,opts,opset", DETECTORS,
                         ids=[f"{c[:-5]}-{o}" for c, _, o in DETECTORS])
def test_detector_torchscript_and_onnx_equal_eager(tmp_path, config, opts, opset):
    torch.manual_seed(0)
    cfg = get_dcdc_cfg(str(REPO / "configs" / config), [*SMALL, *opts])
    model = build_model(cfg).eval()
    image = torch.rand(3, 96, 128) * 255
    other = torch.rand(3, 80, 112) * 255
    _, adapter = export_torchscript(model, image, tmp_path / "model.ts")
    loaded = torch.jit.load(str(tmp_path / "model.ts"))
    # the deployed graph runs what eager runs: the fused generation + aggregation op, and the
    # native depth-wise op where an operator has DW convs (DCDC, LSA; not RedNet's involution)
    graph = str(loaded.inlined_graph)
    assert "dcdc::lsa_generate_aggregate" in graph and "dcdc::lsa_aggregate(" not in graph
    has_dw = any(isinstance(m, LSA) and m.dw_in is not None for m in model.modules())
    assert ("dcdc::depthwise_conv" in graph) == has_dw
    export_onnx_detector(model, image, tmp_path / "model.onnx", opset)
    assert_standard_onnx(tmp_path / "model.onnx")
    onnx_model = OnnxRuntimeModel(tmp_path / "model.onnx")
    for inp in (image, other):
        with torch.no_grad():
            eager = adapter(inp)
            for exported in (loaded(inp), onnx_model(inp)):
                diffs = compare_outputs(adapter, eager, exported)
                assert max(diffs.values()) < 1e-3, diffs


def test_roi_pooling_below_opset_16_raises(tmp_path):
    cfg = get_dcdc_cfg(str(REPO / "configs" / "quickstart_panoptic_fpn_dcdc_shapes_instant.yaml"),
                       SMALL)
    model = build_model(cfg).eval()
    with pytest.raises(ValueError, match="opset 16 or higher"):
        export_onnx_detector(model, torch.rand(3, 96, 96) * 255, tmp_path / "m.onnx", 11)


def test_export_model_tool_round_trip_and_fresh_process(tmp_path):
    """tools/export_model.py: export, check on two sizes, --run-eval gives the eager AP; the saved
    TorchScript file runs in a process that imports only torch and dcdc."""
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets"),
           "OMP_NUM_THREADS": "1"}
    config = str(REPO / "configs" / "quickstart_panoptic_fpn_dcdc_shapes_instant.yaml")
    for fmt in ("torchscript", "onnx"):
        out = tmp_path / fmt
        proc = subprocess.run(
            [sys.executable, str(REPO / "tools" / "export_model.py"), "--config-file", config,
             "--format", fmt, "--export-method", "tracing", "--output", str(out), "--run-eval",
             "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "SEED", "3"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "largest difference over all outputs" in proc.stdout
        assert "largest metric difference exported vs eager" in proc.stdout
        gap = float(proc.stdout.split("largest metric difference exported vs eager")[1]
                    .split(":")[1].split()[0])
        # The exit status already bounds every output's difference by --atol (1e-3). Neither
        # format computes eager's sums in eager's order (eager CPU inference folds BatchNorm into
        # its convs, the traced graph and onnxruntime keep conv + BN): differences of ~1e-5 can
        # flip a mask pixel at the 0.5 threshold, a few thousandths of an AP point.
        assert gap < 0.05, (fmt, gap)
    image = tmp_path / "image.pt"
    torch.save(torch.rand(3, 72, 100) * 255, image)
    code = ("import sys, torch, dcdc; m = torch.jit.load(sys.argv[1]); "
            "torch.save(m(torch.load(sys.argv[2])), sys.argv[3])")
    ts = str(tmp_path / "torchscript" / "model.ts")
    proc = subprocess.run([sys.executable, "-c", code, ts, str(image), str(tmp_path / "out.pt")],
                          capture_output=True, text=True, timeout=200, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch.no_grad():
        want = torch.jit.load(ts)(torch.load(image))
    got = torch.load(tmp_path / "out.pt")
    assert len(got) == len(want) >= 4
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_export_model_tool_bad_input(tmp_path, capsys, monkeypatch):
    """tools/export_model.py's main (dcdc.export.cli.main), in this process: one message, exit
    status 2, nothing written (more cases in test_cli_errors.py)."""
    import detectron2.utils.logger

    from dcdc.export.cli import main

    # detectron2's setup_logger would stop the "dcdc" loggers propagating for the session
    monkeypatch.setattr(detectron2.utils.logger, "setup_logger", lambda *a, **k: None)
    config = str(REPO / "configs" / "quickstart_panoptic_fpn_dcdc_shapes_instant.yaml")
    base = ["--config-file", config, "--output", str(tmp_path)]
    for extra, message in ((["--format", "caffe2"], "not supported"),
                           (["--export-method", "scripting"], "not supported"),
                           (["MODEL.WEIGHTS", "missing.pth"], "does not exist"),
                           (["--atol", "-1"], "must be >= 0")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("export_model.py: error: ") and message in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


class _InstancesAdapter:
    """What compare_outputs needs of detectron2's TracingAdapter: flat outputs (boxes, classes,
    scores) -> [{"instances": Instances}]."""

    def outputs_schema(self, flat):
        from detectron2.structures import Boxes, Instances

        boxes, classes, scores = flat
        instances = Instances((200, 200))
        instances.pred_boxes = Boxes(boxes)
        instances.pred_classes, instances.scores = classes, scores
        return [{"instances": instances}]


def _detections():
    boxes = torch.tensor([[10.0, 10, 50, 50], [12, 11, 52, 49], [100, 100, 150, 160],
                          [20, 120, 60, 190], [105, 98, 148, 158]])
    classes = torch.tensor([1, 2, 1, 0, 3])
    scores = torch.tensor([0.9, 0.5001, 0.5, 0.3, 0.29995])
    return boxes, classes, scores


def test_detections_are_matched_not_compared_by_index():
    """The same detections in another order (near-tied scores) and within float noise agree;
    by index they would differ by ~100 px."""
    from dcdc.export.cli import report_check

    boxes, classes, scores = _detections()
    order = torch.tensor([0, 2, 1, 4, 3])  # the near-ties swapped
    exported = (boxes[order] + 1e-4, classes[order], scores[order] - 2e-5)
    assert (boxes[order] - boxes).abs().max() > 50
    diffs = compare_outputs(_InstancesAdapter(), (boxes, classes, scores), exported)
    assert diffs.matched == 5 and not diffs.unmatched and diffs.within(1e-3)
    assert diffs["instances.pred_boxes"] == pytest.approx(1e-4, rel=0.1)
    assert diffs["instances.scores"] == pytest.approx(2e-5, rel=0.1)
    assert diffs["instances.pred_classes"] == 0
    assert report_check([((3, 200, 200), diffs)], atol=1e-3, out=io.StringIO())


def test_detection_mismatches_still_fail(capsys):
    from dcdc.export import match_detections
    from dcdc.export.cli import report_check

    boxes, classes, scores = _detections()
    # a detection moved far away, another of the wrong class: unpaired on both sides
    moved, relabelled = boxes.clone(), classes.clone()
    moved[3] += 80
    relabelled[0] = 4
    fields = lambda b, c, s: {"pred_boxes": b, "pred_classes": c, "scores": s}  # noqa: E731
    pairs, lone_e, lone_a = match_detections(fields(boxes, classes, scores),
                                             fields(moved, relabelled, scores))
    assert sorted(pairs) == [(1, 1), (2, 2), (4, 4)] and lone_e == [0, 3] and lone_a == [0, 3]
    diffs = compare_outputs(_InstancesAdapter(), (boxes, classes, scores),
                            (moved, relabelled, scores))
    assert len(diffs.unmatched) == 4 and not diffs.within(1e-3)
    assert not report_check([((3, 200, 200), diffs)], atol=1e-3)
    out = capsys.readouterr().out
    assert "eager detection 3 (class 0, score 0.3" in out and "has no exported counterpart" in out
    assert "4 detections without a counterpart" in out
    # paired, but a score that differs beyond atol
    off = scores.clone()
    off[2] += 0.01
    diffs = compare_outputs(_InstancesAdapter(), (boxes, classes, scores), (boxes, classes, off))
    assert not diffs.unmatched and diffs["instances.scores"] == pytest.approx(0.01, rel=1e-3)
    assert not diffs.within(1e-3) and diffs.within(0.02)
    # an empty side: everything of the other is unpaired
    empty = (boxes[:0], classes[:0], scores[:0])
    diffs = compare_outputs(_InstancesAdapter(), (boxes, classes, scores), empty)
    assert diffs.matched == 0 and len(diffs.unmatched) == 5


def test_tracer_warnings_are_counted_not_printed():
    import warnings

    from dcdc.export.cli import summarized_tracer_warnings

    # the warnings it shows go through warnings.showwarning, which pytest records (a terminal
    # prints them to stderr)
    with pytest.warns(UserWarning, match="something the user should see") as shown:
        with summarized_tracer_warnings() as hidden:
            for _ in range(3):  # the same call site: every one counted
                warnings.warn("Converting a tensor to a Python boolean", torch.jit.TracerWarning)
            warnings.warn("something the user should see", UserWarning)
    assert hidden == {"TracerWarning": 3}
    assert not [w for w in shown if issubclass(w.category, torch.jit.TracerWarning)]
