#!/usr/bin/env python
"""#Params and FLOPs of the paper's detectors (Tables V-VII), next to the paper's numbers.

    python tools/analyze_model.py                    # every row, markdown table
    python tools/analyze_model.py --tables VII --no-flops
    python tools/analyze_model.py --configs configs/mask_rcnn_dcdc_r50.yaml

The rows are :data:`dcdc.modeling.paper_results.DETECTOR_ROWS`; how the counts are made
comparable with the paper's is in :mod:`dcdc.modeling.analysis`. FLOPs are given without the LSA
aggregation (the paper's convention) and with it.
"""
import argparse
import logging
import os
import sys

import torch

from dcdc.modeling.analysis import analyze_detectors, percent_change
from dcdc.modeling.paper_results import BASELINES, DETECTOR_ROWS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def format_table(results):
    """A markdown table of :func:`dcdc.modeling.analysis.analyze_detectors`' results."""
    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    lines = [
        "| Table | Detector | Backbone | Neck | #Params paper / ours (M) | diff | "
        "FLOPs paper (G) | ours w/o agg. | ours with agg. | ΔParams paper / ours | "
        "ΔFLOPs paper / ours w/o agg. / with agg. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        row = r["row"]
        dp = (f"{r['paper_dparams']:+.0f}% / {r['dparams']:+.0f}%" if "dparams" in r else "")
        df = (f"{r['paper_dflops']:+.0f}% / {r['dflops']:+.0f}% / {r['dflops_with_agg']:+.0f}%"
              if "dflops" in r else "")
        lines.append(
            f"| {row.table} | {row.detector} | {row.backbone} | {row.neck} | "
            f"{row.params_m:.1f} / {r['params']:.2f} | "
            f"{percent_change(r['params'], row.params_m):+.1f}% | {f(row.flops_g, '.1f')} | "
            f"{f(r.get('flops'), '.1f')} | {f(r.get('flops_with_agg'), '.1f')} | {dp} | {df} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=["V", "VI", "VII"],
                        choices=["V", "VI", "VII"], help="paper tables to reproduce")
    parser.add_argument("--configs", nargs="+", default=None,
                        help="only these rows (config names or paths, e.g. mask_rcnn_dcdc_r50)")
    parser.add_argument("--no-flops", action="store_true", help="count parameters only")
    parser.add_argument("--input-size", type=int, nargs=2, default=(800, 1280),
                        metavar=("H", "W"), help="fixed input size of the FLOP count")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    rows = [r for r in DETECTOR_ROWS if r.table in args.tables]
    if args.configs:
        wanted = {os.path.splitext(os.path.basename(c))[0] for c in args.configs}
        known = [r.config for r in DETECTOR_ROWS]
        unknown = wanted - set(known)
        if unknown:
            parser.error(f"no paper row for {sorted(unknown)}; rows: {known}")
        # each wanted row, plus its detector's baseline for the deltas
        rows = [r for r in rows if r.config in wanted or r.config == BASELINES[r.detector] and any(
            w.startswith(BASELINES[r.detector].split("_r50")[0]) for w in wanted)]
    results = analyze_detectors(
        rows, lambda stem: os.path.join(REPO, "configs", stem + ".yaml"),
        flops=not args.no_flops, image_size=tuple(args.input_size),
        log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
