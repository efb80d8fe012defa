#!/usr/bin/env python
"""Run a trained DCDC detector on images and draw its predictions (detectron2's demo/demo.py).

Panoptic models are drawn as panoptic segmentation, instance models as boxes + masks, semantic
models as label maps, all with detectron2's ``Visualizer``. Examples::

    python demo.py --config-file configs/quickstart_panoptic_fpn_dcdc_shapes.yaml \\
        --input datasets/shapes/val/*.jpg --output output/demo \\
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth

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
from dcdc.utils.visualization import draw_predictions

logger = logging.getLogger("dcdc.demo")


def setup_cfg(args):
    cfg = get_dcdc_cfg(args.config_file, args.opts)
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
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image files or glob patterns, e.g. 'directory/*.jpg'")
    parser.add_argument("--output", required=True,
                        help="a folder for the drawn images, or a file name for a single input")
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="minimum score for instance predictions to be shown")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS x.pth")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="dcdc")
    logger.info("Arguments: " + str(args))
    cfg = setup_cfg(args)
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: drawing the predictions of an untrained model. "
                       "Pass --opts MODEL.WEIGHTS path/to/model_final.pth.")
    predictor = DefaultPredictor(cfg)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")

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
        predictions = predictor(image)
        drawn = draw_predictions(image[:, :, ::-1], predictions, metadata)
        out = output_path(args.output, path, len(inputs))
        cv2.imwrite(out, drawn.get_image()[:, :, ::-1])
        num = len(predictions["instances"]) if "instances" in predictions else 0
        logger.info(f"{path}: {num} instances in {time.time() - start:.2f}s -> {out}")
    if failed:
        logger.error(f"{len(failed)} of {len(inputs)} inputs could not be read: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
