#!/usr/bin/env python
"""Grad-CAM class activation maps of classifiers side by side (paper Fig. 6), as one PNG.

Arguments and examples: :mod:`dcdc.utils.grad_cam`.
"""
from dcdc.utils.grad_cam import main

if __name__ == "__main__":
    main()
