#!/usr/bin/env python
"""Draw the LSA and GSI kernels of one DCDC operator for one image (paper Fig. 5).

For the chosen block (``--stage res3 --block 0``) of a trained model's DCDC-ResNet backbone, the
operator's input is captured with a forward pre-hook while the backbone runs on the image, then:

* LSA (local spatial-adaptive): ``LSA.kernels(x)`` gives one K x K kernel per output pixel and
  kernel group; the kernels at ``--num-positions`` sampled positions are drawn (averaged over the
  groups, or one group with ``--group``) next to the image with the positions marked. Different
  contents give different kernels.
* GSI (global shift-invariant): ``GSI.dynamic_kernels(GSI.reduce(x))`` is one m x m x k x k
  kernel for the whole image; it is drawn as an m x m matrix (summed over the k x k taps).

Example::

    python tools/visualize_kernels.py --config-file configs/quickstart_panoptic_fpn_dcdc_shapes.yaml \\
        --input datasets/shapes/val/000001.jpg --output output/kernels.png --stage res3 \\
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth
"""
import argparse
import logging
import os
import sys

import matplotlib

matplotlib.use("Agg")

from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.engine.defaults import DefaultPredictor  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import dcdc  # noqa: F401,E402  registers the DCDC backbones and the built-in datasets
from dcdc.config import get_dcdc_cfg  # noqa: E402
from dcdc.utils.errors import UserFileNotFoundError, UserValueError, run_main  # noqa: E402
from dcdc.utils.visualization import kernel_figure, save_figure  # noqa: E402

logger = logging.getLogger("dcdc.visualize_kernels")


def get_parser():
    parser = argparse.ArgumentParser(description="Draw LSA / GSI kernels of a DCDC operator")
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", required=True, help="an image file")
    parser.add_argument("--output", required=True, help="output PNG file")
    parser.add_argument("--stage", default="res3", help="'stem', 'res2', 'res3', 'res4' or 'res5'")
    parser.add_argument("--block", type=int, default=0, help="block index within the stage")
    parser.add_argument("--num-positions", type=int, default=8)
    parser.add_argument("--group", type=int, default=None,
                        help="draw one kernel group instead of the mean over groups")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled positions")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                        help="config overrides, e.g. MODEL.WEIGHTS output/model_final.pth")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="dcdc")
    cfg = get_dcdc_cfg(args.config_file, args.opts, freeze=True)
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: drawing the kernels of an untrained model.")
    elif "://" not in cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise UserFileNotFoundError(
            f"MODEL.WEIGHTS '{cfg.MODEL.WEIGHTS}' does not exist. Give the trained model with "
            "--opts MODEL.WEIGHTS output/quickstart/model_final.pth (or MODEL.WEIGHTS \"\" for "
            "an untrained model's kernels).")
    try:
        image = read_image(args.input, format="BGR")
    except Exception as e:
        raise UserValueError(f"Cannot read image '{args.input}': {type(e).__name__}: "
                             f"{' '.join(str(e).split())}") from None
    try:
        fig = kernel_figure(DefaultPredictor(cfg), image, cfg.INPUT.FORMAT, args.stage, args.block,
                            args.num_positions, args.group, args.seed)
    except (TypeError, ValueError) as e:
        raise UserValueError(str(e)) from None
    save_figure(fig, args.output)
    logger.info(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("visualize_kernels.py", main))
