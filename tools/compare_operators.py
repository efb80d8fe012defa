#!/usr/bin/env python
"""Operators side by side on the built-in data (``make compare``): a miniature Table III / V.

Each spatial operator (3x3 conv, involution, LSA only, DCDC) x seeds 1-5, trained with one recipe
per task: the quickstart Panoptic FPN at its full schedule (``detection``) and the narrow
DCDC-ResNet-26 layout classifying the shapes crops (``classification``). The grids run from a
git worktree of one commit (``<output-dir>/code``), resumably (finished runs are skipped, an
interrupted one continues); each writes ``results.md`` (mean ± std and paired differences with
95% intervals), ``summary.json`` and ``compare.png`` under ``<output-dir>/<task>/``.
Protocol and runner: :mod:`dcdc.paper.comparison`. Examples::

    python tools/compare_operators.py                       # what `make compare` runs
    python tools/compare_operators.py --dry-run             # the plan and the commands only
    python tools/compare_operators.py --tasks detection --operators conv dcdc --seeds 1 \\
        --max-iter 20 --in-place --output-dir output/compare_tiny SOLVER.IMS_PER_BATCH 2
"""
import os
import sys

from detectron2.utils.logger import setup_logger

from dcdc.paper.comparison import main
from dcdc.utils.errors import run_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    setup_logger(name="dcdc")
    sys.exit(run_main("compare_operators.py", main, None, REPO,
                      os.path.join(REPO, "configs", "quickstart_panoptic_fpn_dcdc_shapes.yaml")))
