#!/usr/bin/env python
"""Convert a DCDC-ResNet / RedNet ImageNet classifier checkpoint into detectron2 backbone weights.

    python tools/convert_classifier_to_d2.py dcdc_r50_imagenet.pth pretrained/DCDC-R50.pkl
    python train_net.py --config-file configs/mask_rcnn_dcdc_r50.yaml   # MODEL.WEIGHTS points there

The architecture (depth, operator variant, operator hyperparameters) is inferred from the
checkpoint unless ``--depth`` / ``--operator`` say it. The output is written only when the
checkpoint fills that backbone exactly (otherwise "Not written: ..." and exit status 1); see
:mod:`dcdc.modeling.classifier_to_d2`. A missing or unreadable input is one message, exit
status 2.
"""
import sys

from dcdc.modeling.classifier_to_d2 import main
from dcdc.utils.errors import run_main

if __name__ == "__main__":
    sys.exit(run_main("convert_classifier_to_d2.py", main))
