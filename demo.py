#!/usr/bin/env python
"""Draw a trained DCDC detector's predictions on images, a video or a webcam, with detectron2's
demo/demo.py interface (panoptic models as panoptic segmentation, instance models as boxes +
masks, semantic models as label maps, by detectron2's ``Visualizer`` / ``VideoVisualizer``).
YAML configs and LazyConfig ``.py`` files, overrides last as for train_net.py. Examples::

    python demo.py --config-file configs/quickstart_panoptic_fpn_dcdc_shapes.yaml \\
        --input 'datasets/shapes/val/*.jpg' --output output/demo \\
        MODEL.WEIGHTS output/quickstart/model_final.pth
    python demo.py --config-file configs/quickstart_panoptic_fpn_dcdc_shapes_instant.py \\
        --video-input clip.mp4 --output output/demo \\
        train.init_checkpoint=output/quickstart_instant_lazy/model_final.pth
    python demo.py --config-file configs/mask_rcnn_dcdc_r50.yaml --webcam \\
        MODEL.WEIGHTS model_final.pth                       # shown in a window, Esc quits

Several models side by side (paper Fig. 7): repeat ``--model NAME=CONFIG[:WEIGHTS]``. Each
output picture is then the ground truth (when the image is in a dataset registered in
detectron2's ``DatasetCatalog``) and every model's predictions, left to right::

    python demo.py --model conv=output/compare/conv_seed1/config.yaml:output/compare/conv_seed1/model_final.pth \\
        --model dcdc=output/compare/dcdc_seed1/config.yaml:output/compare/dcdc_seed1/model_final.pth \\
        --input datasets/shapes/val/00000[1-4].jpg --output output/fig7 --scale 2

An input image that cannot be read is reported by name and skipped; the others are still
processed (the exit status is then 1). Arguments and details: :mod:`dcdc.demo`.
"""
import sys

from dcdc.demo import main

if __name__ == "__main__":
    sys.exit(main())
