#!/usr/bin/env python
"""#Params and FLOPs of the paper's detectors (Tables V-VII), next to the paper's numbers.

    python tools/analyze_model.py                    # every row, markdown table
    python tools/analyze_model.py --tables VII --no-flops
    python tools/analyze_model.py --configs configs/mask_rcnn_dcdc_r50.yaml

How it counts, so that the numbers are comparable with the paper's (mmdetection's counter):

* #Params: every parameter, plus the affine weight / bias of FrozenBN layers (buffers in
  detectron2, parameters in the paper's frameworks). 80 COCO classes.
* FLOPs: fvcore's ``FlopCountAnalysis`` (multiply-accumulates, like mmdetection's counter) of the
  pass mmdetection's ``get_flops.py`` times with ``forward_dummy`` at a fixed 1280x800 input:
  backbone + neck + dense heads (RPN head / RetinaNet head), the box head on 1000 proposals, the
  mask head on 100 of them (Panoptic FPN adds its semantic head). Proposal sampling / NMS /
  ROIAlign count 0 in both.
* The LSA aggregation is a custom autograd function, traced as ``prim::PythonOp._LSAAggregate``
  (unknown to fvcore and to mmdetection's counter, which counts it as 0): a handle registered
  here counts K*K multiply-accumulates per output element. The table gives FLOPs without it
  (the paper's convention) and with it. The GSI per-sample conv is a ``bmm`` (k_gsi = 1) or a
  grouped conv (k_gsi > 1); fvcore's own handles count both exactly (tests check it).
"""
import argparse
import logging
import os
import sys
from collections import Counter

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch import PanopticFPN, RetinaNet
from detectron2.structures import Boxes

import dcdc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGGREGATION_OP = "prim::PythonOp._LSAAggregate"

# (table, detector, backbone, neck, config, paper #Params (M), paper FLOPs (G) or None)
PAPER_ROWS = [
    ("V", "RetinaNet", "DCDC-ResNet26", "DCDC", "retinanet_dcdc_r26_dcdc_neck", 20.2, 179.4),
    ("V", "RetinaNet", "ResNet50", "Convolution", "retinanet_r50", 37.7, 239.3),
    ("V", "RetinaNet", "RedNet50", "Convolution", "retinanet_rednet50", 27.8, 208.6),
    ("V", "RetinaNet", "DCDC-ResNet50", "Convolution", "retinanet_dcdc_r50", 28.1, 210.0),
    ("V", "RetinaNet", "RedNet50", "Involution", "retinanet_rednet50_involution_neck", 26.3, 197.7),
    ("V", "RetinaNet", "DCDC-ResNet50", "DCDC", "retinanet_dcdc_r50_dcdc_neck", 26.5, 199.3),
    ("V", "Faster R-CNN", "DCDC-ResNet26", "DCDC", "faster_rcnn_dcdc_r26_dcdc_neck", 23.5, 114.5),
    ("V", "Faster R-CNN", "ResNet50", "Convolution", "faster_rcnn_r50", 41.5, 207.1),
    ("V", "Faster R-CNN", "RedNet50", "Convolution", "faster_rcnn_rednet50", 31.6, 176.4),
    ("V", "Faster R-CNN", "DCDC-ResNet50", "Convolution", "faster_rcnn_dcdc_r50", 31.9, 177.7),
    ("V", "Faster R-CNN", "RedNet50", "Involution", "faster_rcnn_rednet50_involution_neck", 29.5,
     132.0),
    ("V", "Faster R-CNN", "DCDC-ResNet50", "DCDC", "faster_rcnn_dcdc_r50_dcdc_neck", 29.8, 134.4),
    ("VI", "Mask R-CNN", "DCDC-ResNet26", "DCDC", "mask_rcnn_dcdc_r26_dcdc_neck", 26.1, 167.6),
    ("VI", "Mask R-CNN", "ResNet50", "Convolution", "mask_rcnn_r50", 44.2, 260.1),
    ("VI", "Mask R-CNN", "RedNet50", "Convolution", "mask_rcnn_rednet50", 34.2, 229.5),
    ("VI", "Mask R-CNN", "DCDC-ResNet50", "Convolution", "mask_rcnn_dcdc_r50", 34.5, 230.8),
    ("VI", "Mask R-CNN", "RedNet50", "Involution", "mask_rcnn_rednet50_involution_neck", 32.2, 185.1),
    ("VI", "Mask R-CNN", "DCDC-ResNet50", "DCDC", "mask_rcnn_dcdc_r50_dcdc_neck", 32.5, 187.4),
    ("VII", "Panoptic FPN", "ResNet50", "Convolution", "panoptic_fpn_r50", 46.0, None),
    ("VII", "Panoptic FPN", "RedNet50", "Convolution", "panoptic_fpn_rednet50", 36.0, None),
    ("VII", "Panoptic FPN", "DCDC-ResNet50", "Convolution", "panoptic_fpn_dcdc_r50", 36.3, None),
    ("VII", "Panoptic FPN", "RedNet50", "Involution", "panoptic_fpn_rednet50_involution_neck", 34.0,
     None),
    ("VII", "Panoptic FPN", "DCDC-ResNet50", "DCDC", "panoptic_fpn_dcdc_r50_dcdc_neck", 34.3, None),
]
# The row each Δ is taken against: the ResNet-50 baseline of the same detector.
BASELINES = {"RetinaNet": "retinanet_r50", "Faster R-CNN": "faster_rcnn_r50",
             "Mask R-CNN": "mask_rcnn_r50", "Panoptic FPN": "panoptic_fpn_r50"}


def count_parameters(model):
    """Parameters + FrozenBN affine weights (parameters in the paper's mmdetection models)."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n += m.weight.numel() + m.bias.numel()
    return n


def aggregation_flop_jit(inputs, outputs):
    """MACs of the LSA aggregation (Eq. 5): K*K per output element, K*K = kernels.shape[2]."""
    out_shape = get_shape(outputs[0])
    kernel_shape = get_shape(inputs[1])
    n = 1
    for d in out_shape:
        n *= d
    return n * kernel_shape[2]


class DummyForward(nn.Module):
    """mmdetection's ``forward_dummy`` for a detectron2 model: the layers that run per image,
    with fixed random proposals in place of the data-dependent proposal / NMS steps."""

    def __init__(self, model, image_size, num_proposals=1000, num_mask_rois=100, seed=0):
        super().__init__()
        self.model = model
        g = torch.Generator().manual_seed(seed)
        h, w = image_size
        xy = torch.rand(num_proposals, 2, generator=g) * torch.tensor([w / 2, h / 2])
        wh = torch.rand(num_proposals, 2, generator=g) * torch.tensor([w / 2, h / 2]) + 8
        self.register_buffer("proposals", torch.cat([xy, xy + wh], dim=1), persistent=False)
        self.num_mask_rois = num_mask_rois

    def forward(self, images):
        m = self.model
        features = m.backbone(images)
        if isinstance(m, RetinaNet):
            return m.head([features[f] for f in m.head_in_features])
        outputs = list(m.proposal_generator.rpn_head(
            [features[f] for f in m.proposal_generator.in_features]))
        roi_heads = m.roi_heads
        boxes = [Boxes(self.proposals)]
        box_features = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features], boxes)
        if isinstance(roi_heads.box_head, nn.ModuleList):  # Cascade R-CNN: every stage, same boxes
            for head, predictor in zip(roi_heads.box_head, roi_heads.box_predictor):
                outputs.append(predictor(head(box_features)))
        else:
            outputs.append(roi_heads.box_predictor(roi_heads.box_head(box_features)))
        if getattr(roi_heads, "mask_on", False):
            mask_boxes = [Boxes(self.proposals[: self.num_mask_rois])]
            mask_features = roi_heads.mask_pooler(
                [features[f] for f in roi_heads.mask_in_features], mask_boxes)
            outputs.append(roi_heads.mask_head.layers(mask_features))
        if isinstance(m, PanopticFPN):
            outputs.append(m.sem_seg_head.layers(features))
        return outputs


def count_flops(model, image_size=(800, 1280)):
    """(total MACs, MACs of the LSA aggregation) of :class:`DummyForward` at ``image_size``."""
    model.eval()
    images = torch.zeros(1, 3, *image_size)
    analysis = FlopCountAnalysis(DummyForward(model, image_size), (images,))
    analysis.set_op_handle(AGGREGATION_OP, aggregation_flop_jit)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with torch.no_grad():
        by_op = Counter(analysis.by_operator())
    total = sum(by_op.values())
    return total, by_op.get(AGGREGATION_OP.split("::")[-1], 0) + by_op.get(AGGREGATION_OP, 0)


def build_from_config(config_file):
    """The detectron2 model of a YAML config, on CPU, without loading weights."""
    cfg = get_cfg()
    dcdc.add_dcdc_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


def _pct(value, base):
    return 100.0 * (value - base) / base


def analyze(rows, flops=True, image_size=(800, 1280), log=print):
    """Measure ``rows`` (entries of :data:`PAPER_ROWS`); return one dict per row."""
    results = {}
    for table, detector, backbone, neck, name, p_params, p_flops in rows:
        model = build_from_config(os.path.join(REPO, "configs", name + ".yaml"))
        r = dict(table=table, detector=detector, backbone=backbone, neck=neck, config=name,
                 paper_params=p_params, paper_flops=p_flops, params=count_parameters(model) / 1e6)
        if flops and p_flops is not None:
            total, aggregation = count_flops(model, image_size)
            r.update(flops=(total - aggregation) / 1e9, flops_with_agg=total / 1e9)
        results[name] = r
        log(f"{name}: {r['params']:.2f} M" + (
            f", {r['flops']:.1f} G (+{r['flops_with_agg'] - r['flops']:.1f} G aggregation)"
            if "flops" in r else ""))
        del model
    for r in results.values():
        base = results.get(BASELINES[r["detector"]])
        if base is None or r["config"] == base["config"]:
            continue
        r["paper_dparams"] = _pct(r["paper_params"], base["paper_params"])
        r["dparams"] = _pct(r["params"], base["params"])
        if "flops" in r and "flops" in base:
            r["paper_dflops"] = _pct(r["paper_flops"], base["paper_flops"])
            r["dflops"] = _pct(r["flops"], base["flops"])
            r["dflops_with_agg"] = _pct(r["flops_with_agg"], base["flops_with_agg"])
    return list(results.values())


def format_table(results):
    """A markdown table of :func:`analyze`'s results."""
    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    lines = [
        "| Table | Detector | Backbone | Neck | #Params paper / ours (M) | diff | "
        "FLOPs paper (G) | ours w/o agg. | ours with agg. | ΔParams paper / ours | "
        "ΔFLOPs paper / ours w/o agg. / with agg. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        dp = (f"{r['paper_dparams']:+.0f}% / {r['dparams']:+.0f}%" if "dparams" in r else "")
        df = (f"{r['paper_dflops']:+.0f}% / {r['dflops']:+.0f}% / {r['dflops_with_agg']:+.0f}%"
              if "dflops" in r else "")
        lines.append(
            f"| {r['table']} | {r['detector']} | {r['backbone']} | {r['neck']} | "
            f"{r['paper_params']:.1f} / {r['params']:.2f} | "
            f"{_pct(r['params'], r['paper_params']):+.1f}% | {f(r['paper_flops'], '.1f')} | "
            f"{f(r.get('flops'), '.1f')} | {f(r.get('flops_with_agg'), '.1f')} | {dp} | {df} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=["V", "VI", "VII"],
                        choices=["V", "VI", "VII"], help="paper tables to reproduce")
    parser.add_argument("--configs", nargs="+", default=None,
                        help="only these rows (config names or paths, e.g. mask_rcnn_dcdc_r50)")
    parser.add_argument("--no-flops", action="store_true", help="count parameters only")
    parser.add_argument("--input-size", type=int, nargs=2, default=(800, 1280),
                        metavar=("H", "W"), help="fixed input size of the FLOP count")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    rows = [r for r in PAPER_ROWS if r[0] in args.tables]
    if args.configs:
        wanted = {os.path.splitext(os.path.basename(c))[0] for c in args.configs}
        unknown = wanted - {r[4] for r in PAPER_ROWS}
        if unknown:
            parser.error(f"no paper row for {sorted(unknown)}; rows: {[r[4] for r in PAPER_ROWS]}")
        rows = [r for r in rows if r[4] in wanted or r[4] == BASELINES[r[1]] and any(
            w.startswith(BASELINES[r[1]].split("_r50")[0]) for w in wanted)]
    results = analyze(rows, flops=not args.no_flops, image_size=tuple(args.input_size),
                      log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
