"""What the paper's table tools run: ``tools/paper_tables.py`` (:func:`paper_tables`),
``tools/analyze_model.py`` (:func:`analyze_model`) and ``tools/param_table.py``
(:func:`param_table`). Each takes the command line (``argv``, default ``sys.argv[1:]``); a wrong
argument is argparse's message and exit status 2. Rows are :data:`dcdc.paper.results.DETECTOR_ROWS`
/ ``CLASSIFIER_ROWS``, counted by :mod:`dcdc.paper.counting`, laid out by :mod:`dcdc.paper.tables`;
a row's model is the one its YAML config (``configs/<stem>.yaml``,
:func:`dcdc.model_zoo.get_config_file`) builds.
"""
import argparse
import logging
import os
import sys

import torch

from ..model_zoo import get_config_file
from .counting import analyze_detectors, classifier_param_table
from .results import BASELINES, DETECTOR_ROWS
from .tables import (
    collect,
    count_row,
    format_classifier_params,
    format_counts,
    format_csv,
    format_markdown,
    unmatched_runs,
)

__all__ = ["paper_tables", "analyze_model", "param_table"]

TABLES = ["V", "VI", "VII"]


def _config_path(stem):
    return get_config_file(stem + ".yaml")


def _add_row_arguments(parser, tables_help, configs_help, no_flops_help, no_count=False):
    """``--tables``, ``--configs``, (``--no-count``), ``--no-flops``, ``--input-size`` and
    ``--threads`` of the detector tools."""
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES,
                        help=tables_help)
    parser.add_argument("--configs", nargs="+", default=None, help=configs_help)
    if no_count:
        parser.add_argument("--no-count", action="store_true",
                            help="do not build the models: our #Params / FLOPs read 'not counted'")
    parser.add_argument("--no-flops", action="store_true", help=no_flops_help)
    parser.add_argument("--input-size", type=int, nargs=2, default=(800, 1280),
                        metavar=("H", "W"), help="fixed input size of the FLOP count")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _setup(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("fvcore").setLevel(logging.ERROR)


def _wanted(parser, configs):
    """The config stems of ``--configs`` (None without it); an error names unknown ones."""
    if not configs:
        return None
    wanted = {os.path.splitext(os.path.basename(c))[0] for c in configs}
    known = [r.config for r in DETECTOR_ROWS]
    unknown = wanted - set(known)
    if unknown:
        parser.error(f"no paper row for {sorted(unknown)}; rows: {known}")
    return wanted


def paper_tables(argv=None):
    """Our COCO numbers beside the paper's, from ``--runs DIR`` (one folder per config stem, each
    with detectron2's ``metrics.json``); prints markdown or CSV, returns the
    :class:`~dcdc.paper.tables.TableRow` list."""
    parser = argparse.ArgumentParser(
        description="Our COCO numbers beside the paper's (Tables V-VII and the HTC rows), from "
        "training folders.")
    parser.add_argument("--runs", required=True, metavar="DIR",
                        help="folder of run folders named by config stem")
    parser.add_argument("--format", default="markdown", choices=("markdown", "csv"))
    _add_row_arguments(parser, "paper tables to print", "only these rows (config stems or paths)",
                       "count #Params only", no_count=True)
    args = parser.parse_args(argv)
    _setup(args)
    rows = [r for r in DETECTOR_ROWS if r.table in args.tables]
    wanted = _wanted(parser, args.configs)
    if wanted is not None:
        rows = [r for r in rows if r.config in wanted]
        if not rows:
            parser.error(f"{sorted(wanted)} are not in --tables {args.tables}.")

    def counts(row):
        print(f"counting {row.config} ...", file=sys.stderr, flush=True)
        return count_row(row, _config_path, flops=not args.no_flops,
                         image_size=tuple(args.input_size))

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


def analyze_model(argv=None):
    """#Params and FLOPs of the paper's detectors beside the paper's; prints a markdown table,
    returns :func:`~dcdc.paper.counting.analyze_detectors`' results."""
    parser = argparse.ArgumentParser(
        description="#Params and FLOPs of the paper's detectors (Tables V-VII), next to the "
        "paper's numbers.")
    _add_row_arguments(parser, "paper tables to reproduce",
                       "only these rows (config names or paths, e.g. mask_rcnn_dcdc_r50)",
                       "count parameters only")
    args = parser.parse_args(argv)
    _setup(args)
    rows = [r for r in DETECTOR_ROWS if r.table in args.tables]
    wanted = _wanted(parser, args.configs)
    if wanted is not None:
        # each wanted row, plus its detector's baseline for the deltas
        rows = [r for r in rows if r.config in wanted or r.config == BASELINES[r.detector] and any(
            w.startswith(BASELINES[r.detector].split("_r50")[0]) for w in wanted)]
    results = analyze_detectors(rows, _config_path, flops=not args.no_flops,
                                image_size=tuple(args.input_size),
                                log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_counts(results))
    return results


def param_table(argv=None):
    """The parameter counts of our classifiers (1000-class ImageNet heads) beside the paper's."""
    argparse.ArgumentParser(
        description="Print the parameter counts of our DCDC-ResNet / RedNet classifiers beside "
        "the paper's.").parse_args(argv)
    print(format_classifier_params(classifier_param_table()))
    return 0
