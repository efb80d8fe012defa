#!/usr/bin/env python
"""A miniature Table III / V on the shapes data: the quickstart Panoptic FPN trained with each
spatial operator (3x3 conv, involution, LSA only, DCDC), same neck, same schedule, several seeds.

What ``make compare`` runs. For each seed, then each operator, ``train_net.py`` trains in
``<output-dir>/<operator>_seed<N>/`` (a finished run is skipped, an interrupted one resumes from
its last checkpoint, so a killed grid continues where it stopped). Then it prints the table
(#Params, FLOPs, box AP, mask AP, PQ as mean ± std over seeds, wall time), writes it to
``results.md`` and ``summary.json``, draws ``compare.png``, and runs ``demo.py --model ...`` with
the first seed of every operator on a few val images (``pictures/``: ground truth | each model).
How the runs are set up is in :mod:`dcdc.utils.operator_comparison`. Examples::

    python tools/compare_operators.py                       # what `make compare` runs
    python tools/compare_operators.py --dry-run             # the plan and the commands only
    python tools/compare_operators.py --operators conv dcdc --seeds 1 --max-iter 20 \\
        --output-dir output/compare_tiny SOLVER.IMS_PER_BATCH 2   # config overrides last
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import time

from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

import dcdc  # noqa: F401  registers the DCDC backbones and the built-in "shapes" datasets
from dcdc.config import get_dcdc_cfg
from dcdc.data import ensure_shapes, shapes_split_of
from dcdc.data.shapes import datasets_root
from dcdc.layers.dcdc_conv import OPERATORS
from dcdc.utils.errors import UserValueError, run_main
from dcdc.utils.operator_comparison import (
    DISPLAY_ORDER,
    Run,
    format_markdown,
    measure_model,
    plot_comparison,
    scaled_schedule,
    summarize,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "quickstart_panoptic_fpn_dcdc_shapes.yaml")
logger = logging.getLogger("dcdc.compare_operators")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--output-dir", default=os.path.join(REPO, "output", "compare"))
    parser.add_argument("--operators", nargs="+", default=list(DISPLAY_ORDER), choices=OPERATORS,
                        help="MODEL.DCDC.OPERATOR values to compare")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2], help="SEED values")
    parser.add_argument("--max-iter", type=int, default=400,
                        help="iterations of every run (the config's LR steps and warm-up scaled "
                        "to it); one evaluation at the end")
    parser.add_argument("--neck", default="conv", choices=("conv", "dcdc", "involution"),
                        help="MODEL.DCDC.NECK of every variant ('conv': detectron2's FPN, so that "
                        "the 'conv' row is a plain ResNet-FPN and only the backbone operator "
                        "differs, as in Table V's convolution-neck rows)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of each training (unless set in the environment)")
    parser.add_argument("--num-vis", type=int, default=4,
                        help="val images drawn by demo.py with every operator's first seed "
                        "(0: no pictures)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the runs and their commands, train nothing")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser


def prepare_data(cfg):
    """Generate the built-in shapes splits the config uses (nothing for other datasets)."""
    specs = [shapes_split_of(n) for n in tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST)]
    specs = [s for s in specs if s is not None]
    if specs:
        ensure_shapes(os.path.join(datasets_root(), "shapes"), specs)


def draw_pictures(runs, cfg, output_dir, num_images):
    """``demo.py --model <operator>=<config.yaml>:<model_final.pth> ...`` on the first
    ``num_images`` test images: one picture per image, ground truth | each operator."""
    files = [d["file_name"] for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:num_images]]
    models = []
    for r in runs:
        models += ["--model", f"{r.operator}={os.path.join(r.output_dir, 'config.yaml')}:"
                   f"{os.path.join(r.output_dir, 'model_final.pth')}"]
    out = os.path.join(output_dir, "pictures")
    cmd = [sys.executable, os.path.join(REPO, "demo.py"), *models, "--input", *files,
           "--output", out, "--scale", "2"]
    logger.info("Pictures: " + " ".join(cmd))
    result = subprocess.run(cmd, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"demo.py failed with exit status {result.returncode}.")
    return out


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="dcdc")
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.operators)) != len(args.operators):
        raise UserValueError("--seeds and --operators must not repeat a value.")
    start = time.time()
    cfg = get_dcdc_cfg(args.config_file, args.opts)
    base_opts = [*scaled_schedule(cfg, args.max_iter), "MODEL.DCDC.NECK", args.neck, *args.opts]
    operators = [op for op in DISPLAY_ORDER if op in args.operators]
    # seed-major: an interrupted grid has every operator's first seed before any second one
    runs = [Run(args.output_dir, os.path.join(REPO, "train_net.py"), args.config_file, op, seed,
                base_opts, args.max_iter) for seed in args.seeds for op in operators]
    for r in runs:
        try:
            r.check_folder()
        except RuntimeError as e:
            raise UserValueError(str(e)) from None
    logger.info(f"{len(runs)} runs ({', '.join(operators)} x seeds {args.seeds}), "
                f"{args.max_iter} iterations each, neck '{args.neck}', in {args.output_dir}; "
                f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}.")
    if args.dry_run:
        for r in runs:
            state = "finished, skipped" if r.finished() else "to train"
            print(f"{r.name}: {state}: train_net.py --resume --config-file {r.config_file} "
                  f"OUTPUT_DIR {r.output_dir} {' '.join(r.opts)}")
        return 0

    prepare_data(cfg)
    trained_now = []
    for i, r in enumerate(runs, 1):
        if r.finished():
            logger.info(f"[{i}/{len(runs)}] {r.name}: finished before, skipped.")
            continue
        logger.info(f"[{i}/{len(runs)}] {r.name}: training {args.max_iter} iterations "
                    f"(log: {r.output_dir}/train_net.log) ...")
        r.train(args.threads, log=logger.info)
        wall, _ = r.wall_time()
        trained_now.append(wall)
        left = sum(1 for q in runs[i:] if not q.finished())
        eval_ = r.evaluation()
        logger.info(f"[{i}/{len(runs)}] {r.name}: done in {wall / 60:.1f} min: " + ", ".join(
            f"{k} {eval_[k]:.1f}" for k in ("bbox/AP", "segm/AP", "panoptic_seg/PQ")
            if k in eval_) + (f"; {left} runs left, about {left * sum(trained_now) / len(trained_now) / 60:.0f} min"
                              if left else ""))

    logger.info("Counting #Params and FLOPs of each variant ...")
    measures = {op: measure_model(args.config_file, base_opts, op) for op in operators}
    rows = summarize(runs, measures)
    table = format_markdown(rows)
    total_train = sum(r.wall_time()[0] for r in runs)
    resumed = [r.name for r in runs if r.wall_time()[1] > 1]
    note = (f"{len(runs)} runs x {args.max_iter} iterations (batch {cfg.SOLVER.IMS_PER_BATCH}, "
            f"{cfg.INPUT.MIN_SIZE_TEST} px), neck '{args.neck}', seeds {args.seeds}; "
            f"train_net.py wall time {total_train / 60:.1f} min in all"
            + (f" (resumed after an interruption: {', '.join(resumed)})" if resumed else "")
            + f"; GFLOPs at {cfg.INPUT.MIN_SIZE_TEST}x{cfg.INPUT.MIN_SIZE_TEST}.")
    figure = os.path.join(args.output_dir, "compare.png")
    plot_comparison(rows, figure, "Panoptic FPN on shapes, one operator per run\n" + note)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(table + "\n\n" + note + "\n")
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump({"rows": rows, "note": note, "max_iter": args.max_iter, "neck": args.neck,
                   "seeds": args.seeds, "base_opts": base_opts,
                   "train_wall_s": round(total_train, 1)}, f, indent=2)
    print(table + "\n\n" + note, flush=True)
    logger.info(f"Table: {args.output_dir}/results.md, figure: {figure}, "
                f"summary: {args.output_dir}/summary.json")
    if args.num_vis > 0:
        first = [r for r in runs if r.seed == args.seeds[0]]
        logger.info(f"Pictures in {draw_pictures(first, cfg, args.output_dir, args.num_vis)}")
    logger.info(f"Total wall time of this command {(time.time() - start) / 60:.1f} min.")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("compare_operators.py", main))
