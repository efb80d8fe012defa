"""Pictures shared by demo.py (:mod:`dcdc.demo`), ``make demo`` (:mod:`dcdc.engine.quickstart`)
and tools/visualize_kernels.py.

* :func:`draw_predictions` / :func:`draw_ground_truth`: a model's output or a dataset dict drawn
  by detectron2's ``Visualizer`` (panoptic > instances > semantic); :func:`draw_video_predictions`
  a model's output on a video frame, by detectron2's ``VideoVisualizer``.
* :func:`parse_model_spec`, :func:`ground_truth_index`, :func:`side_by_side`: several models on
  one image (paper Fig. 7): ``NAME=CONFIG[:WEIGHTS]`` arguments, the registered dataset dict of
  an image file, and labelled panels placed side by side.
* :func:`kernel_figure`: the LSA and GSI kernels of one DCDC operator for one image (paper
  Fig. 5). For the chosen block of a model's DCDC-ResNet backbone, the operator's input is
  captured with a forward pre-hook while the backbone runs on the image, then:

  - LSA (local spatial-adaptive): ``LSA.kernels(x)`` gives one K x K kernel per output pixel and
    kernel group; the kernels at sampled positions are drawn (averaged over the groups, or one
    group) next to the image with the positions marked. Different contents give different kernels.
  - GSI (global shift-invariant): ``GSI.dynamic_kernels(GSI.reduce(x))`` is one m x m x k x k
    kernel for the whole image; it is drawn as an m x m matrix (summed over the k x k taps).

  :func:`visualize_kernels` is tools/visualize_kernels.py's program around it.
"""
import argparse
import json
import logging
import os
import re

import cv2
import matplotlib.pyplot as plt
import numpy as np
import torch

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling.backbone import ResNet
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..layers import DCDCConv2d

__all__ = ["draw_predictions", "draw_video_predictions", "draw_ground_truth",
           "ground_truth_panoptic", "label",
           "parse_model_spec", "ground_truth_index", "side_by_side",
           "find_resnet", "find_operator", "operator_kernels", "sample_positions", "render",
           "kernel_figure", "save_figure", "visualize_kernels"]


def draw_predictions(image_rgb, predictions, metadata, scale=1.0):
    """Draw a model's output dict (panoptic_seg > instances > sem_seg) on an RGB image."""
    visualizer = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    if "panoptic_seg" in predictions:
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        return visualizer.draw_panoptic_seg_predictions(panoptic_seg.to("cpu"), segments_info)
    if "instances" in predictions:
        return visualizer.draw_instance_predictions(predictions["instances"].to("cpu"))
    if "sem_seg" in predictions:
        return visualizer.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to("cpu"))
    raise ValueError(f"Nothing to draw in the predictions (keys {sorted(predictions)}).")


def draw_video_predictions(video_visualizer, frame_rgb, predictions):
    """Draw a model's output dict on one RGB video frame with detectron2's ``VideoVisualizer``
    (which keeps an instance's colour from frame to frame), as detectron2's demo/predictor.py."""
    if "panoptic_seg" in predictions:
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        return video_visualizer.draw_panoptic_seg_predictions(frame_rgb, panoptic_seg.to("cpu"),
                                                              segments_info)
    if "instances" in predictions:
        return video_visualizer.draw_instance_predictions(frame_rgb,
                                                          predictions["instances"].to("cpu"))
    if "sem_seg" in predictions:
        return video_visualizer.draw_sem_seg(frame_rgb,
                                             predictions["sem_seg"].argmax(dim=0).to("cpu"))
    raise ValueError(f"Nothing to draw in the predictions (keys {sorted(predictions)}).")


def ground_truth_panoptic(metadata, dataset_dict):
    """(segment-id map, segments_info in model ids) of an image from the panoptic PNG + JSON."""
    from panopticapi.utils import rgb2id

    cache = metadata.get("_dcdc_panoptic_by_file", None)
    if cache is None:
        with open(metadata.panoptic_json) as f:
            anns = json.load(f)["annotations"]
        cache = {os.path.splitext(a["file_name"])[0]: a for a in anns}
        metadata.set(_dcdc_panoptic_by_file=cache)
    stem = os.path.splitext(os.path.basename(dataset_dict["file_name"]))[0]
    ann = cache[stem]
    png = read_image(os.path.join(metadata.panoptic_root, ann["file_name"]), format="RGB")
    seg = rgb2id(png)
    infos = []
    for s in ann["segments_info"]:
        isthing = s["category_id"] in metadata.thing_dataset_id_to_contiguous_id
        mapping = (metadata.thing_dataset_id_to_contiguous_id if isthing
                   else metadata.stuff_dataset_id_to_contiguous_id)
        infos.append({"id": s["id"], "category_id": mapping[s["category_id"]], "isthing": isthing})
    return torch.as_tensor(seg.astype(np.int64)), infos


def draw_ground_truth(image_rgb, dataset_dict, metadata, scale):
    visualizer = Visualizer(image_rgb, metadata, scale=scale)
    if metadata.get("panoptic_json", None):
        seg, infos = ground_truth_panoptic(metadata, dataset_dict)
        return visualizer.draw_panoptic_seg(seg, infos).get_image()
    return visualizer.draw_dataset_dict(dataset_dict).get_image()


def label(image, text):
    """The image with a white title band on top."""
    band = np.full((22, image.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


_MODEL_SPEC = re.compile(r"^(?P<name>[^=]+)=(?P<config>.+?\.(?:yaml|yml|py))(?::(?P<weights>.+))?$")


def parse_model_spec(spec):
    """``NAME=CONFIG[:WEIGHTS]`` -> ``(name, config, weights or None)``; the config must end in
    .yaml / .yml / .py (what tells its end from the weights')."""
    m = _MODEL_SPEC.match(spec)
    if m is None:
        raise ValueError(f"--model {spec!r} is not NAME=CONFIG[:WEIGHTS], e.g. "
                         "dcdc=output/run/config.yaml:output/run/model_final.pth (the config "
                         "ends in .yaml, .yml or .py).")
    return m.group("name").strip(), m.group("config"), m.group("weights")


def ground_truth_index(dataset_names):
    """``{absolute file_name: (dataset name, dataset dict)}`` over registered datasets; a dataset
    whose files cannot be loaded is left out (logged), since ground truth is drawn only when
    available. The first dataset listing a file wins."""
    index = {}
    for name in dict.fromkeys(dataset_names):
        try:
            dicts = DatasetCatalog.get(name)
        except Exception as e:  # not registered, or its files are missing: no ground truth
            logging.getLogger(__name__).info(
                f"No ground truth from dataset {name!r} ({type(e).__name__}: {e}).")
            continue
        for d in dicts:
            index.setdefault(os.path.abspath(d["file_name"]), (name, d))
    return index


def side_by_side(panels, gap=6):
    """``[(title, RGB image), ...]`` -> one RGB image: titled panels left to right, white gaps;
    shorter panels are padded at the bottom."""
    if not panels:
        raise ValueError("side_by_side needs at least one panel.")
    titled = [label(np.ascontiguousarray(image), title) for title, image in panels]
    height = max(t.shape[0] for t in titled)
    row = []
    for i, t in enumerate(titled):
        if i:
            row.append(np.full((height, gap, 3), 255, np.uint8))
        pad = np.full((height - t.shape[0], t.shape[1], 3), 255, np.uint8)
        row.append(np.concatenate([t, pad], axis=0))
    return np.concatenate(row, axis=1)


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
                        "the model must use MODEL.DCDC.OPERATOR 'dcdc', 'lsa' or 'involution'.")
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
    if op.gsi is not None and op.gsi.dynamic:
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


def kernel_figure(predictor, image_bgr, input_format, stage="res3", block=0, num_positions=8,
                  group=None, seed=0):
    """The Fig. 5 picture (a matplotlib figure) of block ``block`` of ``stage`` of a
    ``DefaultPredictor``'s model on one BGR image."""
    op = find_operator(find_resnet(predictor.model.backbone), stage, block)
    rgb, lsa, gsi = operator_kernels(predictor.model, predictor.aug, image_bgr, op, input_format)
    if group is not None and not 0 <= group < lsa.shape[0]:
        raise ValueError(f"--group must be in [0, {lsa.shape[0] - 1}], got {group}.")
    out_h, out_w = lsa.shape[-2:]
    stride = max(1, round(rgb.shape[0] / out_h))
    positions = sample_positions(np.random.default_rng(seed), out_h, out_w, num_positions,
                                 -(-rgb.shape[0] // stride), -(-rgb.shape[1] // stride))
    title = (f"{stage}[{block}] operator: {op.channels} channels, "
             f"{lsa.shape[0]} LSA groups, K={op.lsa.kernel_size}, output stride {stride}")
    return render(rgb, lsa, gsi, positions, stride, op.lsa.kernel_size, title, group)


def save_figure(fig, path):
    """Save a matplotlib figure as a PNG (folders created) and close it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def kernels_parser():
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


def visualize_kernels(argv=None):
    """``tools/visualize_kernels.py``: draw one operator's LSA / GSI kernels for one image."""
    from detectron2.engine.defaults import DefaultPredictor
    from detectron2.utils.logger import setup_logger

    from ..config import get_dcdc_cfg
    from .errors import UserFileNotFoundError, UserValueError

    args = kernels_parser().parse_args(argv)
    setup_logger(name="dcdc")
    cfg = get_dcdc_cfg(args.config_file, args.opts, freeze=True)
    if not cfg.MODEL.WEIGHTS:
        logging.getLogger("dcdc.visualize_kernels").warning("MODEL.WEIGHTS is empty: drawing the kernels of an untrained model.")
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
    logging.getLogger("dcdc.visualize_kernels").info(f"Wrote {args.output}")
    return 0
