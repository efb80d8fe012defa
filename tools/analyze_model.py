#!/usr/bin/env python
"""#Params and FLOPs of the paper's detectors (Tables V-VII), next to the paper's numbers.

    python tools/analyze_model.py                    # every row, markdown table
    python tools/analyze_model.py --tables VII --no-flops
    python tools/analyze_model.py --configs configs/mask_rcnn_dcdc_r50.yaml

The rows are :data:`dcdc.paper.results.DETECTOR_ROWS`; how the counts are made comparable with
the paper's is in :mod:`dcdc.paper.counting`. FLOPs are given without the LSA aggregation (the
paper's convention) and with it. Arguments: :func:`dcdc.paper.cli.analyze_model`.
"""
import sys

from dcdc.paper.cli import analyze_model
from dcdc.utils.errors import command_line

if __name__ == "__main__":
    sys.exit(command_line("analyze_model.py", analyze_model))
