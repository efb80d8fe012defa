#!/usr/bin/env python
"""The main job behind ``make demo``: data -> train -> evaluate -> pictures, on a CPU, in minutes.

Generates the built-in shapes data, trains the quickstart config with ``train_net.py`` and writes
``curves.png``, ``predictions/``, ``predictions.png``, ``kernels_<stage>.png`` and
``summary.json`` next to detectron2's ``metrics.json`` (:mod:`dcdc.engine.quickstart`). Example::

    python tools/run_demo.py                                   # what `make demo` runs
    python tools/run_demo.py --output-dir output/tiny SOLVER.MAX_ITER 20   # config overrides last
"""
import os
import sys

from dcdc.engine.quickstart import main
from dcdc.utils.errors import run_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    sys.exit(run_main("run_demo.py", main, None, REPO))
