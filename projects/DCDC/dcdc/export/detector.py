"""Export of the detectron2 detectors (DCDC / RedNet / ResNet backbones) by tracing.

The route of detectron2's ``tools/deploy/export_model.py``: :class:`detectron2.export.TracingAdapter`
flattens the model's rich inputs / outputs into tuples of tensors, then ``torch.jit.trace``
(TorchScript) or the TorchScript-based ONNX exporter (``dynamo=False``; the dynamo exporter
stops at data-dependent control flow in detectron2's proposal generator). The exported model
takes one image, a float32 (C, H, W) tensor in ``cfg.INPUT.FORMAT`` channel order and 0-255
scale, already resized by the test-time augmentation (as :class:`DefaultPredictor` feeds the
model), of any H and W; it returns the outputs before the final resize to the original image size
(R-CNN mask heads' 28 x 28 mask probabilities, Panoptic FPN's semantic logits at the padded
size), which :class:`ExportedDetector` applies for evaluation, as the eager model does.

Both trace inside :func:`dcdc.layers.dispatch.deployment_tracing`, so the graph holds what eager
runs: ``dcdc::lsa_generate_aggregate``, ``dcdc::depthwise_conv`` and the GEMM form of the
generators' 1x1 convs (TorchScript: loading needs ``import dcdc``, which registers the
operators), or their ONNX forms (standard ONNX operators only, see :mod:`.onnx_ops`).
"""
import numpy as np
import torch
from detectron2.export import TracingAdapter
from detectron2.modeling import GeneralizedRCNN, PanopticFPN, RetinaNet
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess

from ..layers.dispatch import deployment_tracing

__all__ = ["traceable_model", "export_torchscript", "export_onnx_detector", "OnnxRuntimeModel",
           "ExportedDetector", "named_outputs", "match_detections", "compare_outputs",
           "OutputComparison", "SUPPORTED_META_ARCHS"]

SUPPORTED_META_ARCHS = (GeneralizedRCNN, RetinaNet)  # PanopticFPN, HTC are GeneralizedRCNNs


def _inference_func(model):
    if isinstance(model, PanopticFPN):
        def inference(model, inputs):
            detector_results, sem_seg_results = model.inference(inputs, do_postprocess=False)
            return [{"instances": detector_results[0], "sem_seg": sem_seg_results[0]}]
        return inference
    if isinstance(model, GeneralizedRCNN):
        def inference(model, inputs):
            # do_postprocess=False: the RoI mask probabilities, not masks pasted into the image
            return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]
        return inference
    if isinstance(model, RetinaNet):
        return None  # its forward; the boxes come at the input image's size
    raise ValueError(
        f"cannot export a {type(model).__name__}: the exporter knows detectron2's "
        "GeneralizedRCNN (Faster / Mask / Cascade R-CNN, Panoptic FPN, HTC) and RetinaNet."
    )


def _check_image(image):
    if not (isinstance(image, torch.Tensor) and image.dim() == 3 and image.dtype == torch.float32):
        raise ValueError(
            "the exported detector takes one float32 (C, H, W) image tensor (0-255, the config's "
            f"INPUT.FORMAT), got {getattr(image, 'dtype', type(image))} of shape "
            f"{tuple(getattr(image, 'shape', ()))}; use image.float()."
        )


def traceable_model(model, image):
    """``TracingAdapter`` of ``model`` (eval mode) for one float32 (C, H, W) image: its forward
    takes the image and returns a tuple of tensors; ``outputs_schema`` rebuilds
    ``[{"instances": Instances, ("sem_seg": Tensor)}]``."""
    _check_image(image)
    if model.training:
        raise ValueError("export a model in eval mode: call model.eval() first.")
    # eval mode for the adapter too: torch.onnx.export restores the mode of the module it is
    # given, recursively, which would otherwise switch the detector to training afterwards
    return TracingAdapter(model, [{"image": image}], _inference_func(model)).eval()


def export_torchscript(model, image, path):
    """Trace ``model`` on ``image``, save the TorchScript module to ``path``; return
    ``(traced module, adapter)``."""
    adapter = traceable_model(model, image)
    with torch.no_grad(), deployment_tracing():
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
    torch.jit.save(traced, str(path))
    return traced, adapter


def export_onnx_detector(model, image, path, opset_version):
    """Export ``model`` with the TorchScript-based ONNX exporter at ``opset_version`` to
    ``path``, the image's H and W (and every output dimension) dynamic; return the adapter."""
    from detectron2.export import STABLE_ONNX_OPSET_VERSION

    adapter = traceable_model(model, image)
    with torch.no_grad():
        flat = adapter(image)
    output_names = [f"output{i}" for i in range(len(flat))]
    dynamic_axes = {"image": {1: "height", 2: "width"}}
    for name, value in zip(output_names, flat):
        dynamic_axes[name] = {d: f"{name}_dim{d}" for d in range(value.dim())}
    _check_roi_align_opset(model, opset_version, STABLE_ONNX_OPSET_VERSION)
    with torch.no_grad(), deployment_tracing():
        torch.onnx.export(adapter, (image,), str(path), dynamo=False, opset_version=opset_version,
                          input_names=["image"], output_names=output_names,
                          dynamic_axes=dynamic_axes)
    return adapter


def _check_roi_align_opset(model, opset_version, stable):
    """ONNX RoiAlign has the pixel-centre convention of ``ROIAlignV2`` (aligned=True) only from
    opset 16; below it torchvision's symbolic exports the other convention with a warning (boxes
    off by half a pixel): refuse instead."""
    from detectron2.layers import ROIAlign

    aligned = [m for m in model.modules() if isinstance(m, ROIAlign) and m.aligned]
    if aligned and opset_version < 16:
        raise ValueError(
            f"ONNX opset {opset_version} cannot represent this model's ROIAlignV2 pooling "
            f"(aligned=True; ONNX RoiAlign has coordinate_transformation_mode from opset 16): the "
            f"graph would pool boxes shifted by half a pixel. Export with opset 16 or higher "
            f"(detectron2's STABLE_ONNX_OPSET_VERSION = {stable} works for models without RoI "
            f"pooling, e.g. RetinaNet)."
        )


class OnnxRuntimeModel:
    """An exported ONNX detector in onnxruntime: ``model(image)`` -> tuple of torch tensors,
    the outputs of the traced adapter (CPU)."""

    def __init__(self, path, threads=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, image):
        _check_image(image)
        outputs = self.session.run(None, {self.input_name: image.detach().cpu().numpy()})
        return tuple(torch.from_numpy(np.asarray(o)) for o in outputs)


class ExportedDetector:
    """An exported detector (a callable image -> flat outputs: TorchScript module or
    :class:`OnnxRuntimeModel`) behind the eager model's interface for evaluation:
    ``detector(batched_inputs)`` -> the list of dicts the eager model returns (``instances``
    resized to each input's ``height`` / ``width``; Panoptic FPN also ``sem_seg`` and
    ``panoptic_seg``), so :func:`detectron2.evaluation.inference_on_dataset` runs it."""

    def __init__(self, run, adapter, model):
        self.run, self.outputs_schema = run, adapter.outputs_schema
        self.panoptic = None
        if isinstance(model, PanopticFPN):
            self.panoptic = (model.combine_overlap_thresh, model.combine_stuff_area_thresh,
                             model.combine_instances_score_thresh)

    def __call__(self, batched_inputs):
        results = []
        for inputs in batched_inputs:
            image = inputs["image"].float()
            with torch.no_grad():
                outputs = self.outputs_schema(self.run(image))[0]
            image_size = tuple(image.shape[-2:])
            height, width = inputs.get("height", image_size[0]), inputs.get("width", image_size[1])
            instances = detector_postprocess(outputs["instances"], height, width)
            result = {"instances": instances}
            if self.panoptic is not None:
                sem_seg = sem_seg_postprocess(outputs["sem_seg"], image_size, height, width)
                result["sem_seg"] = sem_seg
                result["panoptic_seg"] = combine_semantic_and_instance_outputs(
                    instances, sem_seg.argmax(dim=0), *self.panoptic)
            results.append(result)
        return results


def named_outputs(adapter, flat):
    """``{"instances.pred_boxes": tensor, ...}`` of the flat outputs of ``adapter``'s model."""
    named = {}
    for key, value in adapter.outputs_schema(tuple(flat))[0].items():
        if key == "instances":
            for field, tensor in value.get_fields().items():
                named[f"instances.{field}"] = getattr(tensor, "tensor", tensor)
        else:
            named[key] = value
    return named


def _box_iou(a, b):
    """IoU of every XYXY box of ``a`` (N, 4) with every one of ``b`` (M, 4): (N, M)."""
    a, b = a.double(), b.double()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def match_detections(expected, actual, iou_threshold=0.5):
    """Pair the detections of two outputs of one image by class, box overlap and score, not by
    index: near-tied scores may list the same detections in another order.

    ``expected`` / ``actual``: ``{"pred_boxes": (N, 4) XYXY, "scores": (N,),
    "pred_classes": (N,)}`` tensors (``pred_classes`` optional). Greedily, from the highest
    expected score down, each expected detection takes the unpaired actual detection of its
    class with box IoU >= ``iou_threshold`` that minimises ``(1 - IoU) + |score difference|``.
    Returns ``(pairs, unmatched_expected, unmatched_actual)``: a list of ``(i, j)`` index pairs
    and the indices left without a partner on each side.
    """
    boxes_e, boxes_a = expected["pred_boxes"], actual["pred_boxes"]
    scores_e = expected["scores"].double()
    scores_a = actual["scores"].double()
    n, m = len(scores_e), len(scores_a)
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    iou = _box_iou(boxes_e, boxes_a)
    cost = (1 - iou) + (scores_e[:, None] - scores_a[None, :]).abs()
    allowed = iou >= iou_threshold
    if "pred_classes" in expected and "pred_classes" in actual:
        allowed &= expected["pred_classes"][:, None] == actual["pred_classes"][None, :]
    cost = torch.where(allowed, cost, torch.full_like(cost, float("inf")))
    pairs, taken = [], torch.zeros(m, dtype=torch.bool)
    for i in torch.argsort(scores_e, descending=True, stable=True).tolist():
        row = cost[i].masked_fill(taken, float("inf"))
        j = int(torch.argmin(row))
        if torch.isfinite(row[j]):
            pairs.append((i, j))
            taken[j] = True
    paired = {i for i, _ in pairs}
    return (sorted(pairs), [i for i in range(n) if i not in paired],
            [j for j in range(m) if not taken[j]])


class OutputComparison(dict):
    """``{output name: largest |expected - actual|}`` (detections compared pairwise after
    :func:`match_detections`), with the detections left unpaired in ``unmatched``: a list of
    ``(side, index, class, score, box)``, side "expected" or "actual"; ``matched`` is the number
    of pairs, ``num_expected`` / ``num_actual`` the detections on each side; ``excess``:
    ``{output name: largest |expected - actual| - rtol * |expected|}`` for the ``rtol`` given to
    :func:`compare_outputs` (compare it with an absolute tolerance)."""

    def __init__(self, diffs=(), unmatched=(), matched=0, num_expected=0, num_actual=0,
                 excess=None):
        super().__init__(diffs)
        self.unmatched = list(unmatched)
        self.matched, self.num_expected, self.num_actual = matched, num_expected, num_actual
        self.excess = dict(diffs) if excess is None else dict(excess)

    def within(self, atol):
        """Every output within ``atol + rtol * |expected|`` and every detection paired."""
        return not self.unmatched and all(v <= atol for v in self.excess.values())


def _instance_fields(named):
    return {k.split(".", 1)[1]: v for k, v in named.items() if k.startswith("instances.")}


def _describe(fields, side, i):
    cls = int(fields["pred_classes"][i]) if "pred_classes" in fields else None
    box = [round(float(v), 1) for v in fields["pred_boxes"][i]]
    return (side, i, cls, float(fields["scores"][i]), box)


def compare_outputs(adapter, expected, actual, iou_threshold=0.5, rtol=0.0):
    """The largest ``|expected - actual|`` of each named output, as an :class:`OutputComparison`.

    Detections (``instances.*``) are paired by :func:`match_detections` (class, box IoU >=
    ``iou_threshold``, score) and compared pair by pair, so that the same detections in another
    order (near-tied scores) agree; those without a partner are listed in ``.unmatched``. Other
    outputs (e.g. ``sem_seg``) are compared element-wise; a shape that differs raises
    ``AssertionError``. ``.excess`` holds the largest ``|difference| - rtol * |expected|``.
    """
    expected, actual = named_outputs(adapter, expected), named_outputs(adapter, actual)
    fields_e, fields_a = _instance_fields(expected), _instance_fields(actual)
    diffs, excess, unmatched, pairs = {}, {}, [], []

    def record(name, want, got):
        diff = (got.double() - want.double()).abs()
        diffs[name] = float(diff.max()) if diff.numel() else 0.0
        excess[name] = (float((diff - rtol * want.double().abs()).max()) if diff.numel()
                        else 0.0)

    if "pred_boxes" in fields_e and "scores" in fields_e:
        pairs, lone_e, lone_a = match_detections(fields_e, fields_a, iou_threshold)
        unmatched = ([_describe(fields_e, "expected", i) for i in lone_e]
                     + [_describe(fields_a, "actual", j) for j in lone_a])
        index_e = torch.tensor([i for i, _ in pairs], dtype=torch.long)
        index_a = torch.tensor([j for _, j in pairs], dtype=torch.long)
        for field, want in fields_e.items():
            got = fields_a[field]
            if tuple(got.shape[1:]) != tuple(want.shape[1:]):
                raise AssertionError(
                    f"instances.{field}: the exported model gives detections of shape "
                    f"{tuple(got.shape[1:])}, the eager model {tuple(want.shape[1:])}")
            record(f"instances.{field}", want[index_e], got[index_a])
    for name, want in expected.items():
        if name.startswith("instances.") and "pred_boxes" in fields_e and "scores" in fields_e:
            continue
        got = actual[name]
        if tuple(got.shape) != tuple(want.shape):
            raise AssertionError(f"{name}: the exported model gives shape {tuple(got.shape)}, the "
                                 f"eager model {tuple(want.shape)}")
        record(name, want, got)
    return OutputComparison(diffs, unmatched, len(pairs), len(fields_e.get("scores", ())),
                            len(fields_a.get("scores", ())), excess)
