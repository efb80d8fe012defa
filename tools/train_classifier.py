#!/usr/bin/env python
"""ImageNet-style pretraining of DCDC-ResNets (or any timm model) on an ImageFolder dataset.

Arguments, recipes and examples: :mod:`dcdc.engine.classifier_training`. A wrong argument is one
message, exit status 2.
"""
import sys

from dcdc.engine.classifier_training import main
from dcdc.utils.errors import command_line

if __name__ == "__main__":
    sys.exit(command_line("train_classifier.py", main))
