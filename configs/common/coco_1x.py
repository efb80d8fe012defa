"""The paper's 1x detection schedule and COCO data, shared by every LazyConfig.

SGD lr 0.02 (RetinaNet 0.01), momentum 0.9, weight decay 1e-4, batch 16, 90k iterations
(~12 COCO epochs) with x0.1 steps at 60k and 80k, 500 linear warm-up iterations from 0.001,
single-scale training at short side 800 / long side 1333, on coco_2017_train / coco_2017_val.
"""
from fvcore.common.param_scheduler import MultiStepParamScheduler

import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(800,), max_size=1333, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]

optimizer = model_zoo.get_config("common/optim.py").SGD  # lr 0.02, momentum 0.9, wd 1e-4

train = model_zoo.get_config("common/train.py").train
train.max_iter = 90000

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[60000, 80000, train.max_iter]
    ),
    warmup_length=500 / train.max_iter,
    warmup_method="linear",
    warmup_factor=0.001,
)
