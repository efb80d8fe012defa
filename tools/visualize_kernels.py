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
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detectron2.config import get_cfg  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.engine.defaults import DefaultPredictor  # noqa: E402
from detectron2.modeling.backbone import ResNet  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import dcdc  # noqa: F401,E402  registers the DCDC backbones and the built-in datasets
from dcdc import add_dcdc_config  # noqa: E402
from dcdc.layers import DCDCConv2d  # noqa: E402

logger = logging.getLogger("dcdc.visualize_kernels")


def find_resnet(backbone):
    """The DCDC-ResNet inside a backbone (the FPN's ``bottom_up`` or the backbone itself)."""
    module = getattr(backbone, "bottom_up", backbone)
    if not isinstance(module, ResNet):
        raise TypeError(f"Expected a detectron2 ResNet (DCDC-ResNet) backbone, got "
                        f"{type(module).__name__}.")
    return module


def find_operator(resnet, stage, block):
    """``resnet.<stage>[block].conv2``, checked to be a DCDC operator with an LSA branch."""
    names = [n for n, _ in resnet.named_children() if n.startswith("res")]
    if stage == "stem":
        op = resnet.stem.conv2
    else:
        if stage not in names:
            raise ValueError(f"--stage must be 'stem' or one of {names}, got {stage!r}.")
        blocks = getattr(resnet, stage)
        if not 0 <= block < len(blocks):
            raise ValueError(f"{stage} has {len(blocks)} blocks; --block must be in "
                             f"[0, {len(blocks) - 1}], got {block}.")
        op = blocks[block].conv2
    if not isinstance(op, DCDCConv2d):
        raise TypeError(f"{stage}[{block}].conv2 is a {type(op).__name__}, not a DCDC operator: "
                        "the model must use MODEL.DCDC.OPERATOR 'dcdc', 'lsa' or 'rednet'.")
    return op


@torch.no_grad()
def operator_kernels(model, aug, image_bgr, op, input_format="BGR"):
    """Run the backbone on one image; return (resized RGB image, LSA kernels, GSI kernel or None).

    LSA kernels: (G, K*K, H', W'); GSI kernel: (m, m, k, k).
    """
    image = image_bgr if input_format == "BGR" else image_bgr[:, :, ::-1]
    resized = aug.get_transform(image).apply_image(image)
    tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
    images = model.preprocess_image([{"image": tensor.to(model.device)}])
    captured = {}
    handle = op.register_forward_pre_hook(lambda m, inputs: captured.setdefault("x", inputs[0]))
    try:
        model.backbone(images.tensor)
    finally:
        handle.remove()
    x = captured["x"]
    lsa = op.lsa.kernels(x)[0].cpu()
    gsi = None
    if op.gsi is not None and hasattr(op.gsi, "dynamic_kernels") and op.gsi.dynamic:
        gsi = op.gsi.dynamic_kernels(op.gsi.reduce(x))[0].cpu()
    rgb = resized if input_format == "RGB" else resized[:, :, ::-1]
    return rgb, lsa, gsi


def sample_positions(rng, out_h, out_w, num, valid_h, valid_w):
    """``num`` distinct (row, col) positions on the operator's output grid, inside the image."""
    valid_h, valid_w = max(1, min(out_h, valid_h)), max(1, min(out_w, valid_w))
    flat = rng.choice(valid_h * valid_w, size=min(num, valid_h * valid_w), replace=False)
    return [(int(i // valid_w), int(i % valid_w)) for i in flat]


def render(rgb, lsa, gsi, positions, stride, kernel_size, title, group=None):
    """A matplotlib figure: image with numbered positions, one LSA kernel per position, GSI."""
    num = len(positions)
    cols = min(4, num)
    rows = -(-num // cols)
    fig = plt.figure(figsize=(3.0 * (2 + cols), 3.0 * max(rows, 2)))
    grid = fig.add_gridspec(max(rows, 2), 2 + cols)
    ax = fig.add_subplot(grid[:, :2] if gsi is None else grid[: max(rows, 2) // 2 or 1, :2])
    ax.imshow(rgb)
    for n, (r, c) in enumerate(positions):
        y, x = (r + 0.5) * stride, (c + 0.5) * stride
        ax.plot(x, y, "o", ms=9, mfc="yellow", mec="black")
        ax.text(x, y, str(n), ha="center", va="center", fontsize=7, color="black")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    if gsi is not None:
        gax = fig.add_subplot(grid[max(rows, 2) // 2 or 1:, :2])
        mat = gsi.sum(dim=(2, 3)).numpy()
        im = gax.imshow(mat, cmap="coolwarm", vmin=-np.abs(mat).max(), vmax=np.abs(mat).max())
        gax.set_title(f"GSI kernel ({mat.shape[0]}x{mat.shape[1]}, out x in), one per image",
                      fontsize=9)
        gax.set_xlabel("input channel")
        gax.set_ylabel("output channel")
        fig.colorbar(im, ax=gax, fraction=0.046)
    for n, (r, c) in enumerate(positions):
        kax = fig.add_subplot(grid[n // cols, 2 + n % cols])
        k = lsa[:, :, r, c] if group is None else lsa[group : group + 1, :, r, c]
        k = k.mean(dim=0).view(kernel_size, kernel_size).numpy()
        vmax = np.abs(k).max() or 1.0
        kax.imshow(k, cmap="coolwarm", vmin=-vmax, vmax=vmax)
        kax.set_title(f"LSA kernel at {n} (row {r}, col {c})", fontsize=8)
        kax.set_xticks([])
        kax.set_yticks([])
    fig.tight_layout()
    return fig


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
    cfg = get_cfg()
    add_dcdc_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: drawing the kernels of an untrained model.")
    try:
        image = read_image(args.input, format="BGR")
    except Exception as e:
        raise SystemExit(f"Cannot read image '{args.input}': {type(e).__name__}: {e}")
    predictor = DefaultPredictor(cfg)
    op = find_operator(find_resnet(predictor.model.backbone), args.stage, args.block)
    rgb, lsa, gsi = operator_kernels(predictor.model, predictor.aug, image, op, cfg.INPUT.FORMAT)
    if args.group is not None and not 0 <= args.group < lsa.shape[0]:
        raise SystemExit(f"--group must be in [0, {lsa.shape[0] - 1}], got {args.group}.")
    out_h, out_w = lsa.shape[-2:]
    stride = max(1, round(rgb.shape[0] / out_h))
    positions = sample_positions(np.random.default_rng(args.seed), out_h, out_w,
                                 args.num_positions, -(-rgb.shape[0] // stride),
                                 -(-rgb.shape[1] // stride))
    title = (f"{args.stage}[{args.block}] operator: {op.channels} channels, "
             f"{lsa.shape[0]} LSA groups, K={op.lsa.kernel_size}, output stride {stride}")
    fig = render(rgb, lsa, gsi, positions, stride, op.lsa.kernel_size, title, args.group)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=100)
    plt.close(fig)
    logger.info(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
