# LazyConfig twin of quickstart_panoptic_fpn_dcdc_shapes_instant.yaml: Panoptic FPN with a narrow
# DCDC-ResNet-26 backbone and DCDC neck, trained from scratch for a few iterations on the 16 + 8
# built-in shapes images (128 px) on a CPU. Not meant to reach any accuracy.
#   python train_net.py --config-file configs/quickstart_panoptic_fpn_dcdc_shapes_instant.py
# Input: RGB images normalized with the ImageNet mean / std (use_dcdc_backbone), as the YAML twin
# (INPUT.FORMAT RGB): one checkpoint draws the same in both. A model from instantiate(cfg.model)
# called directly needs RGB tensors, not detectron2's default BGR.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from .common.dcdc import use_dcdc_backbone
from .common.panoptic_fpn import dataloader, lr_multiplier, model, optimizer, train

use_dcdc_backbone(model, dataloader, depth=26, operator="dcdc", neck="dcdc")

# Widths of the YAML quickstart: half of DCDC-R26's, FPN and heads at 64 channels with GN (the
# from-scratch recipe: FrozenBN without pretrained statistics diverges).
bottom_up = model.backbone.bottom_up
bottom_up.freeze_at = 0
bottom_up.stem.out_channels = 32
bottom_up.stages.update(norm="BN", stem_out_channels=32, res2_out_channels=128)
model.backbone.update(out_channels=64, norm="GN")
model.proposal_generator.head.in_channels = 64
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.update(batch_size_per_image=128, pre_nms_topk=(1000, 500),
                                post_nms_topk=(500, 200))
roi_heads = model.roi_heads
roi_heads.update(num_classes=4, batch_size_per_image=64, positive_fraction=0.5)
roi_heads.box_head.update(input_shape=ShapeSpec(channels=64, height=7, width=7),
                          conv_dims=[64] * 4, fc_dims=[256], conv_norm="GN")
roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)
roi_heads.box_predictor.test_score_thresh = 0.0  # an untrained model still produces boxes
roi_heads.box_predictor.test_topk_per_image = 20
roi_heads.mask_head.update(input_shape=ShapeSpec(channels=64, width=14, height=14),
                           conv_dims=[64] * 5, conv_norm="GN")
model.sem_seg_head.update(num_classes=5, conv_dims=64, norm="GN", loss_weight=0.5)
model.combine_stuff_area_thresh = 256  # COCO's 4096 px is a quarter of a 128 px image

dataloader.train.dataset.names = "shapes_mini_train_panoptic_separated"
dataloader.test.dataset.names = "shapes_mini_val_panoptic_separated"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(128,), max_size=128, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=128,
                                                                max_size=128)]
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0

optimizer.lr = 0.02
train.update(init_checkpoint="", device="cpu", max_iter=4, eval_period=4, log_period=20,
             output_dir="./output/quickstart_instant_lazy", seed=-1)
train.checkpointer.period = 1000
lr_multiplier.scheduler.milestones = [train.max_iter]
lr_multiplier.scheduler.values = [1.0]
lr_multiplier.warmup_length = 2 / train.max_iter
