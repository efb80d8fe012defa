#!/usr/bin/env python
"""ImageNet-style pretraining of DCDC-ResNets (or any timm model) on an ImageFolder dataset.

Arguments, recipes and examples: :mod:`dcdc.utils.classifier_training`.
"""
from dcdc.utils.classifier_training import main

if __name__ == "__main__":
    main()
