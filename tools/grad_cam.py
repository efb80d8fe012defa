#!/usr/bin/env python
"""Grad-CAM class activation maps of classifiers side by side (paper Fig. 6), as one PNG.

Arguments and examples: :mod:`dcdc.utils.grad_cam`. A wrong argument is one message, exit
status 2.
"""
import sys

from dcdc.utils.errors import command_line
from dcdc.utils.grad_cam import main

if __name__ == "__main__":
    sys.exit(command_line("grad_cam.py", main))
