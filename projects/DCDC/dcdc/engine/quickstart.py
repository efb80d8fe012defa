"""The main job behind ``make demo`` (``tools/run_demo.py``): data -> train -> evaluate ->
pictures, on a CPU, in minutes.

1. generates the built-in "shapes" data (real COCO files) under ``$DETECTRON2_DATASETS`` if missing
   (:func:`dcdc.data.prepare_data`);
2. trains the quickstart config from scratch with ``python train_net.py --config-file ...``
   (detectron2's DefaultTrainer; its log, with ETA, streams to the terminal), evaluating every
   ``TEST.EVAL_PERIOD`` iterations with detectron2's COCOEvaluator / COCOPanopticEvaluator /
   SemSegEvaluator;
3. writes, next to detectron2's own ``metrics.json``, ``model_final.pth`` and ``inference/``:
   ``curves.png`` (losses and AP / PQ against iterations), ``predictions/*.png`` (ground truth |
   prediction, drawn by detectron2's Visualizer), ``predictions.png`` (a grid of them),
   ``kernels_<stage>.png`` (paper Fig. 5, see tools/visualize_kernels.py) and ``summary.json``.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import time

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.engine.defaults import DefaultPredictor  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from ..config import get_dcdc_cfg  # noqa: E402
from ..data import prepare_data  # noqa: E402
from ..utils.errors import UserFileNotFoundError, UserValueError  # noqa: E402
from ..utils.visualization import (  # noqa: E402
    draw_ground_truth,
    draw_predictions,
    kernel_figure,
    label,
    save_figure,
)
from .metrics import last_evaluation, read_metrics  # noqa: E402

__all__ = ["TARGETS", "train", "plot_curves", "visualize_predictions", "get_parser", "main"]

logger = logging.getLogger("dcdc.run_demo")

# The config `make demo` trains, relative to the repository.
DEFAULT_CONFIG = os.path.join("configs", "quickstart_panoptic_fpn_dcdc_shapes.yaml")
# Final-evaluation keys reported, with the quickstart's targets: what the README promises a
# CPU run of `make demo` reaches.
TARGETS = {"bbox/AP": 50.0, "segm/AP": 50.0, "panoptic_seg/PQ": 40.0}


def train(repo, config_file, output_dir, opts, threads):
    """``python <repo>/train_net.py --config-file ... OUTPUT_DIR ...`` in a child process, log
    streamed."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    cmd = [sys.executable, os.path.join(repo, "train_net.py"), "--config-file", config_file,
           "OUTPUT_DIR", output_dir, *opts]
    logger.info("Running: " + " ".join(cmd) + f"  (OMP_NUM_THREADS={env['OMP_NUM_THREADS']})")
    result = subprocess.run(cmd, env=env, cwd=repo)
    if result.returncode != 0:
        raise SystemExit(f"train_net.py failed with exit status {result.returncode}; see the log "
                         f"above and {os.path.join(output_dir, 'log.txt')}.")


def _records_and_final_evaluation(output_dir):
    """The records of ``<output_dir>/metrics.json`` and its last evaluation."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        raise UserFileNotFoundError(
            f"{path} is missing: did training run (see log.txt)? --skip-train reuses a "
            "finished run in --output-dir; without it, run_demo.py trains first.")
    records = read_metrics(path)
    final = last_evaluation(records)
    if final is None:
        raise UserValueError("metrics.json holds no evaluation; set TEST.EVAL_PERIOD > 0.")
    return records, final


def plot_curves(records, path):
    """Training losses (left) and the evaluation metrics (right) against the iteration."""
    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(12, 4.5))
    train = [r for r in records if "total_loss" in r]
    loss_keys = sorted({k for r in train for k in r if k.startswith("loss_")} | {"total_loss"})
    for key in loss_keys:
        its = [r["iteration"] for r in train if key in r]
        ax_loss.plot(its, [r[key] for r in train if key in r], label=key,
                     lw=2 if key == "total_loss" else 1, marker="." if len(its) < 5 else None)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_title("training losses (detectron2 metrics.json)")
    ax_loss.legend(fontsize=7)
    ax_loss.grid(alpha=0.3)
    metric_keys = [k for k in ("bbox/AP", "segm/AP", "panoptic_seg/PQ", "panoptic_seg/PQ_th",
                               "panoptic_seg/PQ_st", "sem_seg/mIoU")
                   if any(k in r for r in records)]
    for key in metric_keys:
        pts = [(r["iteration"], r[key]) for r in records if key in r]
        ax_eval.plot(*zip(*pts), marker="o", label=key)
    for key, target in TARGETS.items():
        if key in metric_keys:
            ax_eval.axhline(target, ls=":", color="gray", lw=0.8)
    ax_eval.set_xlabel("iteration")
    ax_eval.set_ylim(0, 100)
    ax_eval.set_title("validation metrics (detectron2 evaluators)")
    ax_eval.legend(fontsize=7)
    ax_eval.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def visualize_predictions(cfg, output_dir, num_images, scale=3.0):
    """Ground truth | prediction for the first ``num_images`` test images; returns the paths."""
    dataset_name = cfg.DATASETS.TEST[0]
    metadata = MetadataCatalog.get(dataset_name)
    predictor = DefaultPredictor(cfg)
    out_dir = os.path.join(output_dir, "predictions")
    os.makedirs(out_dir, exist_ok=True)

    rows, paths = [], []
    for d in DatasetCatalog.get(dataset_name)[:num_images]:
        image = read_image(d["file_name"], format="BGR")
        gt = draw_ground_truth(image[:, :, ::-1], d, metadata, scale)
        pred = draw_predictions(image[:, :, ::-1], predictor(image), metadata, scale).get_image()
        pair = np.concatenate([label(gt, "ground truth"), np.full((gt.shape[0] + 22, 6, 3), 255,
                                                                  np.uint8),
                               label(pred, "prediction")], axis=1)
        path = os.path.join(out_dir, os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png")
        cv2.imwrite(path, pair[:, :, ::-1])
        rows.append(pair)
        paths.append(path)
    if rows:
        grid = np.concatenate(rows[:4], axis=0)
        cv2.imwrite(os.path.join(output_dir, "predictions.png"), grid[:, :, ::-1])
    return paths


def get_parser(repo):
    parser = argparse.ArgumentParser(description="The main job behind ``make demo``: data -> "
                                     "train -> evaluate -> pictures, on a CPU, in minutes.")
    parser.add_argument("--config-file", default=os.path.join(repo, DEFAULT_CONFIG))
    parser.add_argument("--output-dir", default=None,
                        help="default: the config's OUTPUT_DIR (output/quickstart)")
    parser.add_argument("--num-vis", type=int, default=8, help="validation images to draw")
    parser.add_argument("--kernel-stage", default="res3", help="stage for the kernel picture")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS for training (unless set in the environment). One "
                        "thread per process is fastest on a small shared CPU: OpenMP barriers "
                        "stall when another job takes a core.")
    parser.add_argument("--skip-train", action="store_true",
                        help="reuse the trained model and metrics.json in --output-dir")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser


def main(argv, repo):
    """``tools/run_demo.py``: ``repo`` is the repository (its ``train_net.py`` trains, its
    ``configs/`` hold the default config)."""
    args = get_parser(repo).parse_args(argv)
    setup_logger(name="dcdc")
    start = time.time()
    load_start = os.getloadavg()
    cfg = get_dcdc_cfg(args.config_file, args.opts)
    output_dir = os.path.abspath(args.output_dir or cfg.OUTPUT_DIR)
    os.makedirs(output_dir, exist_ok=True)
    logger.info(f"{os.cpu_count()} CPUs, load average {load_start[0]:.1f}; output in {output_dir}")

    data_start = time.time()
    root = prepare_data(cfg)
    if root is not None:
        logger.info(f"Data ready under {os.path.abspath(root)} ({time.time() - data_start:.1f}s).")
    if not args.skip_train:
        train(repo, args.config_file, output_dir, args.opts, args.threads)
    train_done = time.time()

    records, final = _records_and_final_evaluation(output_dir)
    plot_curves(records, os.path.join(output_dir, "curves.png"))

    torch.set_num_threads(max(1, args.threads))
    cfg.MODEL.WEIGHTS = os.path.join(output_dir, "model_final.pth")
    if not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise UserFileNotFoundError(f"{cfg.MODEL.WEIGHTS} is missing: training did not finish "
                                    "(run without --skip-train).")
    cfg.freeze()
    vis = visualize_predictions(cfg, output_dir, args.num_vis)

    kernel_png = os.path.join(output_dir, f"kernels_{args.kernel_stage}.png")
    first_image = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]["file_name"]
    save_figure(kernel_figure(DefaultPredictor(cfg), read_image(first_image, format="BGR"),
                              cfg.INPUT.FORMAT, stage=args.kernel_stage), kernel_png)

    wall = time.time() - start
    results = {k: round(float(v), 2) for k, v in final.items()
               if k.split("/")[0] in ("bbox", "segm", "panoptic_seg", "sem_seg")}
    summary = {
        "config_file": os.path.relpath(os.path.abspath(args.config_file), repo),
        "iteration": final.get("iteration"),
        "final_evaluation": results,
        "targets": {k: {"target": t, "reached": results.get(k, -1) >= t}
                    for k, t in TARGETS.items() if k in results},
        "wall_time_s": {"total": round(wall, 1), "data_and_training": round(train_done - start, 1),
                        "pictures": round(time.time() - train_done, 1)},
        "cpus": os.cpu_count(),
        "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "files": sorted(os.path.relpath(p, output_dir) for p in
                        [os.path.join(output_dir, f) for f in ("metrics.json", "model_final.pth",
                                                               "curves.png", "predictions.png")]
                        + vis + [kernel_png]),
    }
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    logger.info("Final evaluation: " + ", ".join(
        f"{k} {v:.1f}" + (f" (target {TARGETS[k]:.0f}: {'reached' if v >= TARGETS[k] else 'NOT reached'})"
                          if k in TARGETS else "")
        for k, v in results.items() if k in TARGETS or k.endswith("mIoU")))
    logger.info(f"Total wall time {wall / 60:.1f} min. Pictures: {output_dir}/curves.png, "
                f"{output_dir}/predictions.png, {output_dir}/predictions/, {kernel_png}; "
                f"summary: {output_dir}/summary.json")
    return 0

