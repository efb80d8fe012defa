"""Hybrid Task Cascade (Chen et al., CVPR 2019) on detectron2's Cascade R-CNN.

HTC adds three things to Cascade Mask R-CNN, each switchable under ``MODEL.HTC``:

* interleaved execution (``INTERLEAVED``): each stage's mask branch trains on the boxes that the
  same stage's box branch has just refined, not on the boxes the stage received;
* mask information flow (``MASK_INFO_FLOW``): stage t's mask head adds the mask features of stage
  t-1 (through a 1x1 conv) to its RoI features; in training the earlier mask heads run on stage
  t's RoIs to produce them;
* a semantic segmentation branch (``SEMANTIC_ON``), :class:`FusedSemanticHead`, trained on
  stuff+thing maps; its features are pooled per RoI and added to the box and mask RoI features.

Stage losses are weighted by ``STAGE_LOSS_WEIGHTS`` (1 / 0.5 / 0.25); at test time the box
scores are averaged over the stages (as in Cascade R-CNN) and the mask probabilities of all
stages' mask heads, run in sequence on the final boxes, are averaged.

The settings of the paper's HTC rows are the keyword defaults of :class:`FusedSemanticHead` and
:class:`HybridTaskCascadeROIHeads`, and :data:`SEMANTIC_POOLER_RESOLUTION`: the ``MODEL.HTC``
keys (dcdc/config.py) and the LazyConfig (configs/common/htc.py) read them
(:data:`SEMANTIC_HEAD_DEFAULTS`, :data:`ROI_HEADS_DEFAULTS`).
"""
import inspect

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import META_ARCH_REGISTRY, ROI_HEADS_REGISTRY, ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.meta_arch import GeneralizedRCNN
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import CascadeROIHeads, select_foreground_proposals
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.modeling.roi_heads.mask_head import (
    MaskRCNNConvUpsampleHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from detectron2.structures import Boxes, ImageList, pairwise_iou
from detectron2.utils.events import get_event_storage

__all__ = ["FusedSemanticHead", "HTCMaskHead", "HybridTaskCascadeROIHeads",
           "HybridTaskCascade", "SEMANTIC_HEAD_DEFAULTS", "ROI_HEADS_DEFAULTS",
           "SEMANTIC_POOLER_RESOLUTION"]

# Output size of the RoIAlign that pools the semantic features per RoI.
SEMANTIC_POOLER_RESOLUTION = 14


class FusedSemanticHead(nn.Module):
    """HTC's semantic segmentation branch.

    Each input level goes through a 1x1 conv and is resized to the fusion level; the sum goes
    through ``num_convs`` 3x3 convs. A 1x1 conv gives the semantic feature (fused into RoI
    features) and another one the per-class logits, trained with cross-entropy against the
    labels resized (nearest) to the fusion level.
    """

    def __init__(self, input_shape, *, in_features=("p2", "p3", "p4", "p5", "p6"),
                 fusion_level="p3", num_convs=4, conv_dim=256, norm="", num_classes=133,
                 ignore_value=255, loss_weight=0.2):
        super().__init__()
        if fusion_level not in in_features:
            raise ValueError(f"SEMANTIC_FUSION_LEVEL {fusion_level!r} must be one of "
                             f"SEMANTIC_IN_FEATURES {list(in_features)}.")
        self.in_features, self.fusion_level = list(in_features), fusion_level
        self.ignore_value, self.loss_weight = ignore_value, loss_weight
        self.stride = input_shape[fusion_level].stride

        def conv(cin, cout, k):
            return Conv2d(cin, cout, k, padding=k // 2, bias=not norm,
                          norm=get_norm(norm, cout), activation=nn.ReLU())

        self.lateral_convs = nn.ModuleList(
            conv(input_shape[f].channels, conv_dim, 1) for f in self.in_features)
        self.convs = nn.Sequential(*[conv(conv_dim, conv_dim, 3) for _ in range(num_convs)])
        self.embedding = conv(conv_dim, conv_dim, 1)
        self.predictor = Conv2d(conv_dim, num_classes, 1)
        for layer in [*self.lateral_convs, *self.convs, self.embedding, self.predictor]:
            weight_init.c2_msra_fill(layer)

    @property
    def output_channels(self):
        return self.embedding.out_channels

    def forward(self, features, targets=None):
        """Returns (logits, semantic features, losses); losses is {} without ``targets``."""
        ref = features[self.fusion_level]
        x = 0
        for name, lateral in zip(self.in_features, self.lateral_convs):
            y = lateral(features[name])
            if y.shape[-2:] != ref.shape[-2:]:
                y = F.interpolate(y, size=ref.shape[-2:], mode="bilinear", align_corners=True)
            x = x + y
        x = self.convs(x)
        logits, feats = self.predictor(x), self.embedding(x)
        losses = {}
        if targets is not None:
            labels = F.interpolate(targets[:, None].float(), size=logits.shape[-2:],
                                   mode="nearest")[:, 0].long()
            losses["loss_semantic_seg"] = self.loss_weight * F.cross_entropy(
                logits, labels, ignore_index=self.ignore_value)
        return logits, feats, losses


@ROI_MASK_HEAD_REGISTRY.register()
class HTCMaskHead(MaskRCNNConvUpsampleHead):
    """detectron2's mask head, split into :meth:`mask_features` (the convs) and
    :meth:`mask_logits` (upsample + predictor), with an optional 1x1 conv + ReLU that adds the
    previous stage's mask features (mask information flow)."""

    @configurable
    def __init__(self, input_shape, *, with_info_flow=False, **kwargs):
        super().__init__(input_shape, **kwargs)
        conv_dim = self.conv_norm_relus[-1].out_channels if self.conv_norm_relus else \
            input_shape.channels
        self.info_flow = None
        if with_info_flow:
            self.info_flow = Conv2d(conv_dim, conv_dim, 1, activation=nn.ReLU())
            weight_init.c2_msra_fill(self.info_flow)

    def mask_features(self, x, previous=None):
        if previous is not None:
            if self.info_flow is None:
                raise ValueError("this mask head has no information-flow conv (with_info_flow).")
            x = x + self.info_flow(previous)
        for layer in self.conv_norm_relus:
            x = layer(x)
        return x

    def mask_logits(self, features):
        return self.predictor(self.deconv_relu(self.deconv(features)))

    def layers(self, x):
        return self.mask_logits(self.mask_features(x))


@ROI_HEADS_REGISTRY.register()
class HybridTaskCascadeROIHeads(CascadeROIHeads):
    """Hybrid Task Cascade ROI heads: :class:`CascadeROIHeads` with one :class:`HTCMaskHead` per
    stage, interleaved box / mask execution, mask information flow and semantic feature fusion
    (module docstring). ``forward`` takes the semantic labels as ``gt_sem_seg`` (B x H x W, padded
    like the images) in training when the semantic branch is on; :class:`HybridTaskCascade`
    passes them."""

    @configurable
    def __init__(self, *, mask_heads, stage_loss_weights=(1.0, 0.5, 0.25), interleaved=True,
                 mask_info_flow=True, semantic_head=None, semantic_pooler=None,
                 semantic_fusion=("box", "mask"), **kwargs):
        super().__init__(mask_head=nn.ModuleList(mask_heads) if mask_heads else None, **kwargs)
        n = self.num_cascade_stages
        if len(stage_loss_weights) != n:
            raise ValueError(f"{len(stage_loss_weights)} stage loss weights for {n} stages.")
        if self.mask_on and len(mask_heads) != n:
            raise ValueError(f"{len(mask_heads)} mask heads for {n} cascade stages.")
        unknown = set(semantic_fusion) - {"box", "mask"}
        if unknown:
            raise ValueError(f"SEMANTIC_FUSION takes 'box' and/or 'mask', got {sorted(unknown)}.")
        if (semantic_head is None) != (semantic_pooler is None):
            raise ValueError("semantic_head and semantic_pooler go together.")
        self.stage_loss_weights = list(stage_loss_weights)
        self.interleaved, self.mask_info_flow = interleaved, mask_info_flow
        self.semantic_head, self.semantic_pooler = semantic_head, semantic_pooler
        self.semantic_fusion = tuple(semantic_fusion) if semantic_head is not None else ()

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        h = cfg.MODEL.HTC
        ret.update(stage_loss_weights=list(h.STAGE_LOSS_WEIGHTS), interleaved=h.INTERLEAVED,
                   mask_info_flow=h.MASK_INFO_FLOW, semantic_fusion=tuple(h.SEMANTIC_FUSION))
        if h.SEMANTIC_ON:
            head = FusedSemanticHead(
                input_shape, in_features=h.SEMANTIC_IN_FEATURES,
                fusion_level=h.SEMANTIC_FUSION_LEVEL, num_convs=h.SEMANTIC_NUM_CONVS,
                conv_dim=h.SEMANTIC_CONV_DIM, norm=h.SEMANTIC_NORM,
                num_classes=h.SEMANTIC_NUM_CLASSES, ignore_value=h.SEMANTIC_IGNORE_VALUE,
                loss_weight=h.SEMANTIC_LOSS_WEIGHT)
            ret["semantic_head"] = head
            ret["semantic_pooler"] = ROIPooler(
                output_size=h.SEMANTIC_POOLER_RESOLUTION, scales=(1.0 / head.stride,),
                sampling_ratio=0, pooler_type="ROIAlignV2")
        return ret

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        ret = super()._init_mask_head(cfg, input_shape)
        if not ret:
            return {"mask_heads": []}
        first = ret.pop("mask_head")
        if not isinstance(first, HTCMaskHead):
            raise ValueError("HybridTaskCascadeROIHeads needs MODEL.ROI_MASK_HEAD.NAME "
                             f"'HTCMaskHead', got '{cfg.MODEL.ROI_MASK_HEAD.NAME}'.")
        shape = ShapeSpec(channels=input_shape[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels,
                          height=cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION,
                          width=cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION)
        stages = len(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS)
        # Stage 0 has no earlier mask features to add.
        ret["mask_heads"] = [first] + [
            HTCMaskHead(cfg, shape, with_info_flow=cfg.MODEL.HTC.MASK_INFO_FLOW)
            for _ in range(stages - 1)]
        return ret

    # ---------------------------------------------------------------------------------------
    def forward(self, images, features, proposals, targets=None, gt_sem_seg=None):
        del images
        semantic = None
        losses = {}
        if self.semantic_head is not None:
            if self.training and gt_sem_seg is None:
                raise ValueError(
                    "The HTC semantic branch (MODEL.HTC.SEMANTIC_ON) trains on semantic labels, "
                    "but the batch has none: use a dataset whose records have "
                    "'sem_seg_file_name' (the '*_htc' datasets of dcdc.data), or set "
                    "MODEL.HTC.SEMANTIC_ON False.")
            _, semantic, sem_losses = self.semantic_head(
                features, gt_sem_seg if self.training else None)
            losses.update(sem_losses)
        if self.training:
            proposals = self.label_and_sample_proposals(proposals, targets)
            losses.update(self._forward_box(features, proposals, targets, semantic))
            return proposals, losses
        pred_instances = self._forward_box(features, proposals, semantic=semantic)
        return self._forward_mask(features, pred_instances, semantic=semantic), {}

    def forward_with_given_boxes(self, features, instances):
        assert not self.training
        semantic = None
        if self.semantic_head is not None:
            _, semantic, _ = self.semantic_head(features)
        return self._forward_mask(features, instances, semantic=semantic)

    def _semantic_roi_features(self, semantic, boxes, size):
        x = self.semantic_pooler([semantic], boxes)
        return x if x.shape[-2:] == size else F.adaptive_avg_pool2d(x, size)

    def _run_stage(self, features, proposals, stage, semantic=None):
        boxes = [x.proposal_boxes for x in proposals]
        x = self.box_pooler(features, boxes)
        if "box" in self.semantic_fusion:
            x = x + self._semantic_roi_features(semantic, boxes, x.shape[-2:])
        return self.box_predictor[stage](self.box_head[stage](x))

    def _forward_box(self, features, proposals, targets=None, semantic=None):
        box_features = [features[f] for f in self.box_in_features]
        image_sizes = [x.image_size for x in proposals]
        losses, head_outputs, prev_boxes = {}, [], None
        storage = get_event_storage() if self.training else None
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(prev_boxes, image_sizes)
                if self.training:
                    proposals = self._match_and_label_boxes(proposals, k, targets)
            predictions = self._run_stage(box_features, proposals, k, semantic)
            prev_boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            head_outputs.append((self.box_predictor[k], predictions, proposals))
            if not self.training:
                continue
            with storage.name_scope(f"stage{k}"):
                stage_losses = self.box_predictor[k].losses(predictions, proposals)
            if self.mask_on:
                mask_proposals = proposals
                if self.interleaved:  # the mask branch sees this stage's refined boxes
                    mask_proposals = self._match_and_label_boxes(
                        self._create_proposals_from_boxes(prev_boxes, image_sizes), k, targets,
                        log=False)
                stage_losses.update(self._mask_loss(features, mask_proposals, k, semantic))
            w = self.stage_loss_weights[k]
            losses.update({f"{name}_stage{k}": v * w for name, v in stage_losses.items()})
        if self.training:
            return losses
        scores_per_stage = [p.predict_probs(pr, props) for p, pr, props in head_outputs]
        scores = [sum(s) * (1.0 / self.num_cascade_stages) for s in zip(*scores_per_stage)]
        predictor, predictions, proposals = head_outputs[-1]
        boxes = predictor.predict_boxes(predictions, proposals)
        pred_instances, _ = fast_rcnn_inference(
            boxes, scores, image_sizes, predictor.test_score_thresh, predictor.test_nms_thresh,
            predictor.test_topk_per_image)
        return pred_instances

    def _mask_roi_features(self, features, boxes, semantic):
        x = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        if "mask" in self.semantic_fusion:
            x = x + self._semantic_roi_features(semantic, boxes, x.shape[-2:])
        return x

    def _mask_loss(self, features, proposals, stage, semantic):
        proposals, _ = select_foreground_proposals(proposals, self.num_classes)
        x = self._mask_roi_features(features, [p.proposal_boxes for p in proposals], semantic)
        previous = None
        if self.mask_info_flow:
            for i in range(stage):
                previous = self.mask_head[i].mask_features(x, previous)
        head = self.mask_head[stage]
        logits = head.mask_logits(head.mask_features(x, previous))
        return {"loss_mask": mask_rcnn_loss(logits, proposals, head.vis_period) * head.loss_weight}

    def _forward_mask(self, features, instances, semantic=None):
        if not self.mask_on:
            return instances
        x = self._mask_roi_features(features, [i.pred_boxes for i in instances], semantic)
        previous, probs = None, None
        for head in self.mask_head:
            previous = head.mask_features(x, previous if self.mask_info_flow else None)
            mask_rcnn_inference(head.mask_logits(previous), instances)
            stage_probs = [i.pred_masks for i in instances]
            probs = stage_probs if probs is None else [a + b for a, b in zip(probs, stage_probs)]
        for inst, p in zip(instances, probs):
            inst.pred_masks = p / len(self.mask_head)
        return instances

    @torch.no_grad()
    def _match_and_label_boxes(self, proposals, stage, targets, log=True):
        """Cascade R-CNN's matching with the stage's IoU threshold, also attaching every ``gt_*``
        field of the matched ground truth (the masks, for the per-stage mask losses)."""
        num_fg, num_bg = [], []
        for props, gts in zip(proposals, targets):
            matched_idxs, labels = self.proposal_matchers[stage](
                pairwise_iou(gts.gt_boxes, props.proposal_boxes))
            if len(gts) > 0:
                for name, value in gts.get_fields().items():
                    if name.startswith("gt_"):
                        props.set(name, value[matched_idxs])
                props.gt_classes[labels == 0] = self.num_classes
            else:
                props.gt_classes = torch.full_like(matched_idxs, self.num_classes)
                props.gt_boxes = Boxes(gts.gt_boxes.tensor.new_zeros((len(props), 4)))
            num_fg.append((labels == 1).sum().item())
            num_bg.append(labels.numel() - num_fg[-1])
        if log:
            storage = get_event_storage()
            storage.put_scalar(f"stage{stage}/roi_head/num_fg_samples", sum(num_fg) / len(num_fg))
            storage.put_scalar(f"stage{stage}/roi_head/num_bg_samples", sum(num_bg) / len(num_bg))
        return proposals


def _keyword_defaults(cls, exclude=()):
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and name not in exclude}


# HTC's settings, read from the signatures so that MODEL.HTC (dcdc/config.py) and the LazyConfig
# (configs/common/htc.py) cannot drift from the classes' defaults.
SEMANTIC_HEAD_DEFAULTS = _keyword_defaults(FusedSemanticHead)
ROI_HEADS_DEFAULTS = _keyword_defaults(HybridTaskCascadeROIHeads,
                                       exclude=("semantic_head", "semantic_pooler"))


@META_ARCH_REGISTRY.register()
class HybridTaskCascade(GeneralizedRCNN):
    """:class:`GeneralizedRCNN` that also hands the images' semantic labels (``"sem_seg"`` of
    each input, padded like the images with the ignore value) to the ROI heads in training."""

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        gt_sem_seg = None
        if all("sem_seg" in x for x in batched_inputs):
            head = self.roi_heads.semantic_head
            gt_sem_seg = ImageList.from_tensors(
                [x["sem_seg"].to(self.device) for x in batched_inputs],
                self.backbone.size_divisibility,
                head.ignore_value if head is not None else 255,
                self.backbone.padding_constraints,
            ).tensor
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances,
                                            gt_sem_seg=gt_sem_seg)
        if self.vis_period > 0:
            storage = get_event_storage()
            if storage.iter % self.vis_period == 0:
                self.visualize_training(batched_inputs, proposals)
        return {**detector_losses, **proposal_losses}
