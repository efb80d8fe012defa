#!/usr/bin/env python
"""Our COCO numbers beside the paper's (Tables V-VII and the HTC rows), from training folders.

    python tools/paper_tables.py --runs output/coco                 # markdown, every row
    python tools/paper_tables.py --runs output/coco --format csv > tables.csv
    python tools/paper_tables.py --runs output/coco --tables VII --no-flops
    python tools/paper_tables.py --runs output/coco --no-count      # metrics only, fast

``--runs DIR`` holds one folder per config, named by its stem (``DIR/mask_rcnn_dcdc_r50/``,
what ``train_net.py --config-file configs/mask_rcnn_dcdc_r50.yaml OUTPUT_DIR DIR/mask_rcnn_dcdc_r50``
writes), each with detectron2's ``metrics.json``; its last evaluation is used. Rows without a run
show the paper's values and "not run". #Params and FLOPs are counted on the models the configs
build (slow: seconds per R50 config). Arguments: :func:`dcdc.paper.cli.paper_tables`; the tables:
:mod:`dcdc.paper.tables`.
"""
import sys

from dcdc.paper.cli import paper_tables
from dcdc.utils.errors import command_line

if __name__ == "__main__":
    sys.exit(command_line("paper_tables.py", paper_tables))
