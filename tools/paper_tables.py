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
build (slow: seconds per R50 config); see :mod:`dcdc.utils.paper_tables`.
"""
import argparse
import logging
import os
import sys

import torch

from dcdc.modeling.paper_results import DETECTOR_ROWS
from dcdc.utils.paper_tables import collect, count_row, format_csv, format_markdown, unmatched_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, metavar="DIR",
                        help="folder of run folders named by config stem")
    parser.add_argument("--format", default="markdown", choices=("markdown", "csv"))
    parser.add_argument("--tables", nargs="+", default=["V", "VI", "VII"],
                        choices=["V", "VI", "VII"], help="paper tables to print")
    parser.add_argument("--configs", nargs="+", default=None,
                        help="only these rows (config stems or paths)")
    parser.add_argument("--no-count", action="store_true",
                        help="do not build the models: our #Params / FLOPs read 'not counted'")
    parser.add_argument("--no-flops", action="store_true", help="count #Params only")
    parser.add_argument("--input-size", type=int, nargs=2, default=(800, 1280),
                        metavar=("H", "W"), help="fixed input size of the FLOP count")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    rows = [r for r in DETECTOR_ROWS if r.table in args.tables]
    if args.configs:
        wanted = {os.path.splitext(os.path.basename(c))[0] for c in args.configs}
        unknown = wanted - {r.config for r in DETECTOR_ROWS}
        if unknown:
            parser.error(f"no paper row for {sorted(unknown)}; rows: "
                         f"{[r.config for r in DETECTOR_ROWS]}")
        rows = [r for r in rows if r.config in wanted]
        if not rows:
            parser.error(f"{sorted(wanted)} are not in --tables {args.tables}.")

    def counts(row):
        print(f"counting {row.config} ...", file=sys.stderr, flush=True)
        return count_row(row, lambda stem: os.path.join(REPO, "configs", stem + ".yaml"),
                         flops=not args.no_flops, image_size=tuple(args.input_size))

    try:
        table = collect(args.runs, rows, counts=None if args.no_count else counts)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    for name in unmatched_runs(args.runs):
        print(f"warning: {os.path.join(args.runs, name)} has a metrics.json but no paper row is "
              f"named {name!r}; name run folders by config stem (rows: configs/<stem>.yaml).",
              file=sys.stderr)
    sys.stdout.write(format_csv(table) if args.format == "csv" else format_markdown(table))
    return table


if __name__ == "__main__":
    main()
