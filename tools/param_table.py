#!/usr/bin/env python
"""Print the parameter counts of our DCDC-ResNet / RedNet classifiers beside the paper's.

Usage: python tools/param_table.py   (1000-class ImageNet heads, as in Tables I, III, IV)
Counts: :func:`dcdc.paper.counting.classifier_param_table`; the command:
:func:`dcdc.paper.cli.param_table`.
"""
import sys

from dcdc.paper.cli import param_table
from dcdc.utils.errors import command_line

if __name__ == "__main__":
    sys.exit(command_line("param_table.py", param_table))
