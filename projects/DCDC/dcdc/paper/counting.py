"""#Params and FLOPs of the DCDC models, counted as the paper counts them (mmdetection's counter).

* #Params: every parameter, plus the affine weight / bias of FrozenBN layers (buffers in
  detectron2, parameters in the paper's frameworks).
* FLOPs: fvcore's ``FlopCountAnalysis`` (multiply-accumulates, like mmdetection's counter) of
  :class:`DummyForward`, the pass mmdetection's ``get_flops.py`` times with ``forward_dummy``:
  backbone + neck + dense heads, the box head on 1000 proposals, the mask head on 100 of them
  (Panoptic FPN adds its semantic head). Proposal sampling / NMS / ROIAlign count 0 in both.
* The LSA aggregation is a custom op, unknown to fvcore and to mmdetection's counter (which
  counts it as 0): :func:`aggregation_flop_jit` counts K*K multiply-accumulates per output
  element, registered for every node name the tracer gives the op (:data:`AGGREGATION_OPS`).
  :func:`count_flops` reports the total and the aggregation's share, so a table can give FLOPs
  without it (the paper's convention) and with it. The GSI per-sample conv is a ``bmm``
  (k_gsi = 1) or a grouped conv (k_gsi > 1), which fvcore's own handles count exactly.
"""
from collections import Counter

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch import PanopticFPN, RetinaNet
from detectron2.structures import Boxes, Instances

from ..config import get_dcdc_cfg
from ..modeling.htc import HybridTaskCascadeROIHeads
from ..modeling.resnet import build_classifier
from .results import BASELINES, CLASSIFIER_ROWS

__all__ = ["AGGREGATION_OPS", "count_parameters", "aggregation_flop_jit", "add_aggregation_handles",
           "DummyForward", "flop_count", "count_flops", "build_from_config", "analyze_detectors",
           "classifier_param_table", "percent_change"]

# The traced node names of the LSA aggregation: the torch.library ops (the fused generation op
# is traced unfused, but is listed in case a tracer keeps it) and the autograd Function they
# replaced, so that FLOP counts do not silently drop to 0 if the implementation changes.
AGGREGATION_OPS = ("dcdc::lsa_aggregate", "dcdc::lsa_generate_aggregate",
                   "prim::PythonOp._LSAAggregate")


def count_parameters(model):
    """Parameters + FrozenBN affine weights (parameters in the paper's mmdetection models)."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n += m.weight.numel() + m.bias.numel()
    return n


def aggregation_flop_jit(inputs, outputs):
    """MACs of the LSA aggregation (Eq. 5): K*K per output element.

    ``lsa_aggregate(x, kernels, ...)`` has K*K = kernels.shape[2];
    ``lsa_generate_aggregate(x, hidden, weight, ...)`` has G*K*K = weight.shape[0] with
    G = C / (C // G) unknown here, so K*K comes from ``kernel_size`` (its fifth input).
    """
    n = 1
    for d in get_shape(outputs[0]):
        n *= d
    second = get_shape(inputs[1])
    if len(second) == 5:
        return n * second[2]
    kernel_size = inputs[4].toIValue()
    return n * kernel_size * kernel_size


def add_aggregation_handles(analysis):
    """Register :func:`aggregation_flop_jit` on an fvcore analysis for every
    :data:`AGGREGATION_OPS` name; returns the analysis."""
    for name in AGGREGATION_OPS:
        analysis.set_op_handle(name, aggregation_flop_jit)
    return analysis


def _aggregation_total(by_op):
    # fvcore keys by_operator() on the name after "::"
    return sum(by_op.get(name.split("::")[-1], 0) for name in AGGREGATION_OPS)


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
        mask_boxes = [Boxes(self.proposals[: self.num_mask_rois])]
        if isinstance(roi_heads, HybridTaskCascadeROIHeads):
            return outputs + _htc_dummy_forward(roi_heads, features, boxes, mask_boxes, images)
        box_features = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features], boxes)
        if isinstance(roi_heads.box_head, nn.ModuleList):  # Cascade R-CNN: every stage, same boxes
            for head, predictor in zip(roi_heads.box_head, roi_heads.box_predictor):
                outputs.append(predictor(head(box_features)))
        else:
            outputs.append(roi_heads.box_predictor(roi_heads.box_head(box_features)))
        if getattr(roi_heads, "mask_on", False):
            mask_features = roi_heads.mask_pooler(
                [features[f] for f in roi_heads.mask_in_features], mask_boxes)
            outputs.append(roi_heads.mask_head.layers(mask_features))
        if isinstance(m, PanopticFPN):
            outputs.append(m.sem_seg_head.layers(features))
        return outputs


def _htc_dummy_forward(roi_heads, features, boxes, mask_boxes, images):
    """mmdetection's HTC ``forward_dummy``: the semantic branch, every box stage on the same
    boxes, and the chained mask heads of every stage on the first mask boxes."""
    semantic = roi_heads.semantic_head(features)[1] if roi_heads.semantic_head is not None \
        else None
    proposals = Instances(tuple(images.shape[-2:]), proposal_boxes=boxes[0])
    box_features = [features[f] for f in roi_heads.box_in_features]
    outputs = [semantic] + [roi_heads._run_stage(box_features, [proposals], k, semantic)
                            for k in range(roi_heads.num_cascade_stages)]
    if roi_heads.mask_on:
        x = roi_heads._mask_roi_features(features, mask_boxes, semantic)
        previous = None
        for head in roi_heads.mask_head:
            previous = head.mask_features(x, previous if roi_heads.mask_info_flow else None)
            outputs.append(head.mask_logits(previous))
    return outputs


def flop_count(module, inputs):
    """(total MACs, MACs of the LSA aggregation) of ``module(*inputs)``: fvcore's counting with
    :func:`aggregation_flop_jit` for the aggregation."""
    analysis = add_aggregation_handles(FlopCountAnalysis(module, inputs))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with torch.no_grad():
        by_op = Counter(analysis.by_operator())
    return sum(by_op.values()), _aggregation_total(by_op)


def count_flops(model, image_size=(800, 1280)):
    """(total MACs, MACs of the LSA aggregation) of :class:`DummyForward` at ``image_size``."""
    model.eval()
    return flop_count(DummyForward(model, image_size), (torch.zeros(1, 3, *image_size),))


def build_from_config(config_file):
    """The detectron2 model of a YAML config, on CPU, without loading weights."""
    cfg = get_dcdc_cfg(config_file, ["MODEL.DEVICE", "cpu"])
    return build_model(cfg)


def percent_change(value, base):
    """100 * (value - base) / base."""
    return 100.0 * (value - base) / base


def analyze_detectors(rows, config_path, flops=True, image_size=(800, 1280), log=print):
    """Measure ``rows`` (:class:`~.results.DetectorRow`); ``config_path(stem)`` gives the
    YAML file of a row. Returns one dict per row, with the deltas against :data:`BASELINES`."""
    results = {}
    for row in rows:
        model = build_from_config(config_path(row.config))
        r = dict(row=row, params=count_parameters(model) / 1e6)
        if flops and row.flops_g is not None:
            total, aggregation = count_flops(model, image_size)
            r.update(flops=(total - aggregation) / 1e9, flops_with_agg=total / 1e9)
        results[row.config] = r
        log(f"{row.config}: {r['params']:.2f} M" + (
            f", {r['flops']:.1f} G (+{r['flops_with_agg'] - r['flops']:.1f} G aggregation)"
            if "flops" in r else ""))
        del model
    for r in results.values():
        base = results.get(BASELINES[r["row"].detector])
        if base is None or r is base:
            continue
        r["paper_dparams"] = percent_change(r["row"].params_m, base["row"].params_m)
        r["dparams"] = percent_change(r["params"], base["params"])
        if "flops" in r and "flops" in base:
            r["paper_dflops"] = percent_change(r["row"].flops_g, base["row"].flops_g)
            r["dflops"] = percent_change(r["flops"], base["flops"])
            r["dflops_with_agg"] = percent_change(r["flops_with_agg"], base["flops_with_agg"])
    return list(results.values())


def classifier_param_table():
    """Yield ``(row, ours in M, paper in M, relative difference)`` for every
    :data:`~.results.CLASSIFIER_ROWS` entry, 1000-class heads."""
    for row in CLASSIFIER_ROWS:
        ours = count_parameters(build_classifier(num_classes=1000, **row.build_kwargs)) / 1e6
        yield f"{row.name} (Table {row.table})", ours, row.params_m, ours / row.params_m - 1
