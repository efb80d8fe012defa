#!/usr/bin/env python
"""Run a trained DCDC detector on images and draw its predictions (detectron2's demo/demo.py).

Panoptic models are drawn as panoptic segmentation, instance models as boxes + masks, semantic
models as label maps, all with detectron2's ``Visualizer``. Examples::

    python demo.py --config-file configs/quickstart_panoptic_fpn_dcdc_shapes.yaml \\
        --input datasets/shapes/val/*.jpg --output output/demo \\
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth

Several models side by side (paper Fig. 7): repeat ``--model NAME=CONFIG[:WEIGHTS]``. Each
output picture is then the ground truth (when the image is in a dataset registered in
detectron2's ``DatasetCatalog``, found by file name among the models' ``DATASETS.TEST`` and
``DATASETS.TRAIN``) and every model's predictions, left to right::

    python demo.py --model conv=output/compare/conv_seed1/config.yaml:output/compare/conv_seed1/model_final.pth \\
        --model dcdc=output/compare/dcdc_seed1/config.yaml:output/compare/dcdc_seed1/model_final.pth \\
        --input datasets/shapes/val/00000[1-4].jpg --output output/fig7 --scale 2

An input that cannot be read is reported by name and skipped; the others are still processed
(the exit status is then 1).
"""
import argparse
import glob
import logging
import os
import sys
import time

import cv2
import tqdm

from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine.defaults import DefaultPredictor
from detectron2.utils.logger import setup_logger

import dcdc  # noqa: F401  registers the DCDC backbones and the built-in "shapes" datasets
from dcdc.config import get_dcdc_cfg
from dcdc.utils.visualization import (
    draw_ground_truth,
    draw_predictions,
    ground_truth_index,
    parse_model_spec,
    side_by_side,
)

logger = logging.getLogger("dcdc.demo")


def setup_cfg(args, config_file=None, weights=None):
    cfg = get_dcdc_cfg(config_file or args.config_file, args.opts)
    if weights is not None:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"Weights {weights} of --model {config_file} do not exist.")
        cfg.MODEL.WEIGHTS = weights
    # One threshold for every kind of head, as in detectron2's demo.
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = args.confidence_threshold
    cfg.freeze()
    return cfg


def expand_inputs(patterns):
    """Files named or matched by ``patterns`` (globs), in order; a pattern matching nothing is kept
    as a path so that the caller reports it as unreadable."""
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        paths.extend(matches if matches else [pattern])
    return paths


def output_path(output, input_path, num_inputs):
    """``output`` is a folder when several inputs are given or it has no image extension."""
    is_file = num_inputs == 1 and os.path.splitext(output)[1].lower() in (".jpg", ".jpeg", ".png")
    if is_file:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        return output
    os.makedirs(output, exist_ok=True)
    name = os.path.splitext(os.path.basename(input_path))[0] + ".png"
    return os.path.join(output, name)


def get_parser():
    parser = argparse.ArgumentParser(description="DCDC detectron2 demo")
    parser.add_argument("--config-file", metavar="FILE", help="path to config file (one model)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=CONFIG[:WEIGHTS]",
                        help="a model to draw beside the others and the ground truth; repeat it "
                        "(instead of --config-file). --opts apply to every model.")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image files or glob patterns, e.g. 'directory/*.jpg'")
    parser.add_argument("--output", required=True,
                        help="a folder for the drawn images, or a file name for a single input")
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="minimum score for instance predictions to be shown")
    parser.add_argument("--scale", type=float, default=1.0, help="drawing scale of each panel")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS x.pth")
    return parser


def load_models(args, parser):
    """``[(name, predictor, metadata, dataset names), ...]`` of ``--config-file`` or of every
    ``--model``."""
    if bool(args.config_file) == bool(args.model):
        parser.error("give either --config-file (one model) or one or more --model "
                     "NAME=CONFIG[:WEIGHTS], not both and not neither.")
    specs = [(None, args.config_file, None)]
    if args.model:
        try:
            specs = [parse_model_spec(s) for s in args.model]
        except ValueError as e:
            parser.error(str(e))
        names = [n for n, _, _ in specs]
        if len(set(names)) != len(names) or not all(names):
            parser.error(f"--model names must be distinct and not empty, got {names}.")
    models = []
    for name, config_file, weights in specs:
        cfg = setup_cfg(args, config_file, weights)
        if not cfg.MODEL.WEIGHTS:
            logger.warning(f"MODEL.WEIGHTS of {config_file} is empty: drawing the predictions of "
                           "an untrained model. Pass --opts MODEL.WEIGHTS path/to/model_final.pth"
                           " (or --model NAME=CONFIG:WEIGHTS).")
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
        models.append((name, DefaultPredictor(cfg), metadata,
                       list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)))
    return models


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="dcdc")
    logger.info("Arguments: " + str(args))
    models = load_models(args, parser)
    ground_truth = (ground_truth_index([d for *_, names in models for d in names])
                    if args.model else {})

    inputs = expand_inputs(args.input)
    failed = []
    for path in tqdm.tqdm(inputs, desc="demo", unit="img", disable=len(inputs) < 2):
        try:
            image = read_image(path, format="BGR")
        except Exception as e:  # missing, truncated, not an image: name it and go on
            logger.error(f"Cannot read image '{path}' ({type(e).__name__}: {e}); skipping it.")
            failed.append(path)
            continue
        start = time.time()
        rgb = image[:, :, ::-1]
        panels, counts = [], []
        if os.path.abspath(path) in ground_truth:
            dataset, record = ground_truth[os.path.abspath(path)]
            panels.append(("ground truth", draw_ground_truth(
                rgb, record, MetadataCatalog.get(dataset), args.scale)))
        for name, predictor, metadata, _ in models:
            predictions = predictor(image)
            counts.append(len(predictions["instances"]) if "instances" in predictions else 0)
            panels.append((name, draw_predictions(rgb, predictions, metadata,
                                                  args.scale).get_image()))
        drawn = panels[0][1] if args.config_file else side_by_side(panels)
        out = output_path(args.output, path, len(inputs))
        cv2.imwrite(out, drawn[:, :, ::-1])
        logger.info(f"{path}: {', '.join(map(str, counts))} instances in "
                    f"{time.time() - start:.2f}s -> {out}")
    if failed:
        logger.error(f"{len(failed)} of {len(inputs)} inputs could not be read: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
