"""Grad-CAM class activation maps of classifiers side by side (paper Fig. 6), as one PNG.

Each ``--model`` is ``NAME[=CHECKPOINT]``: ``NAME`` is a timm model (``dcdc_resnet26``,
``rednet26``, timm's own ``resnet26`` ...) or a torchvision one as ``tv:resnet50``; ``CHECKPOINT``
is a file written by ``tools/train_classifier.py`` (timm format, EMA weights used if present) or a
plain state_dict. Nothing is downloaded: a model without a checkpoint keeps its random weights
(a warning says so; its map then means nothing). The number of classes, the input size and
the class names (``classes.json`` beside the checkpoint) are read from the checkpoint.

The maps come from the ``grad-cam`` package (``pytorch_grad_cam.GradCAM``) on the output of the
last residual block (``--target-layer`` to change it), for the image's class when it lies in a
``<class>/`` folder of the checkpoint's classes, else for the predicted class. Example, after
training both models on the built-in data::

    python tools/grad_cam.py \\
        --model dcdc_resnet26=output/classifier/dcdc_resnet26_shapes/model_best.pth.tar \\
        --model resnet26=output/classifier/resnet26_shapes/model_best.pth.tar \\
        --images datasets/shapes_cls/val --output output/grad_cam.png

Rows are images; columns are the input, then one map per model titled with its prediction.
"""
import argparse
import json
import logging
import os
import warnings

import cv2
import numpy as np
import torch
from PIL import Image

from .errors import UserFileNotFoundError, UserValueError

logger = logging.getLogger("dcdc.grad_cam")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class LoadedModel:
    """A classifier ready for Grad-CAM: module, eval transform inputs, class names, CAM layer."""

    def __init__(self, name, module, input_size, crop_pct, interpolation, mean, std, classes,
                 target_layer, checkpoint):
        self.name, self.module, self.classes = name, module, classes
        self.target_layer = target_layer
        self.input_size, self.crop_pct, self.interpolation = input_size, crop_pct, interpolation
        self.mean, self.std, self.checkpoint = mean, std, checkpoint

    @property
    def title(self):
        return self.name if self.checkpoint else f"{self.name} (random weights)"


def _classifier_weight(state_dict):
    """The final linear layer's weight: the last 2-D tensor whose name ends in 'weight'."""
    candidates = [k for k, v in state_dict.items() if k.endswith("weight") and v.dim() == 2]
    if not candidates:
        raise UserValueError("no linear classifier weight found in the checkpoint")
    return state_dict[candidates[-1]]


def _close(name, names):
    import difflib

    close = difflib.get_close_matches(name, names, n=3)
    return f"; did you mean {', '.join(close)}?" if close else "."


def _last_block(model, feature_module):
    module = model.get_submodule(feature_module)
    return module[-1] if isinstance(module, torch.nn.Sequential) and len(module) else module


def load_model(spec, num_classes=None, target_layer=None, img_size=None):
    """Build and load one ``NAME[=CHECKPOINT]`` model (see the module docstring)."""
    import timm
    from timm.data import resolve_data_config
    from timm.models import load_state_dict

    import dcdc.modeling.timm_models  # noqa: F401  (registers dcdc_resnet*, rednet*, ...)

    name, _, checkpoint = spec.partition("=")
    state_dict, ckpt_args, classes = None, {}, None
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise UserFileNotFoundError(f"checkpoint {checkpoint} of --model {spec} not found")
        try:
            raw = torch.load(checkpoint, map_location="cpu", weights_only=False)
            if isinstance(raw, dict) and "args" in raw:  # timm checkpoints: training arguments
                ckpt_args = vars(raw["args"])
            elif isinstance(raw, dict):  # model_final.pth of tools/train_classifier.py
                ckpt_args = raw.get("data_config", {})
            state_dict = load_state_dict(checkpoint, use_ema=True)
        except Exception as e:  # not a torch checkpoint: UnpicklingError, EOFError, ...
            raise UserValueError(
                f"checkpoint {checkpoint} of --model {spec} cannot be read as a PyTorch "
                f"checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:200]}).") from None
        num_classes = num_classes or _classifier_weight(state_dict).shape[0]
        classes_file = os.path.join(os.path.dirname(checkpoint), "classes.json")
        if os.path.isfile(classes_file):
            with open(classes_file) as f:
                class_to_idx = json.load(f)
            classes = [c for c, _ in sorted(class_to_idx.items(), key=lambda kv: kv[1])]
    num_classes = num_classes or 1000

    if name.startswith("tv:"):
        import torchvision

        if name[3:] not in torchvision.models.list_models():
            raise UserValueError(
                f"--model {spec}: torchvision has no model {name[3:]!r}"
                + _close(name[3:], torchvision.models.list_models()))
        module = torchvision.models.get_model(name[3:], weights=None, num_classes=num_classes)
        cfg = dict(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bilinear",
                   mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        default_layer = "layer4"
    else:
        if not timm.is_model(name):
            raise UserValueError(
                f"--model {spec}: {name!r} is not a timm model (ours: dcdc_resnet26/38/50/101, "
                "lsa_resnet*, rednet*; torchvision ones as tv:NAME)"
                + _close(name, timm.list_models()))
        module = timm.create_model(name, num_classes=num_classes)
        cfg = resolve_data_config({}, model=module)
        default_layer = module.feature_info[-1]["module"]
    if state_dict is not None:
        try:
            module.load_state_dict(state_dict)
        except RuntimeError as e:  # missing / unexpected keys, other shapes
            first = str(e).strip().splitlines()
            raise UserValueError(
                f"checkpoint {checkpoint} does not fit --model {name}: "
                f"{first[0] if first else e} Give the model name it was trained as.") from None
    else:
        warnings.warn(f"--model {name} has no checkpoint: random weights, its map is meaningless.")
    size = img_size or ckpt_args.get("img_size") or cfg["input_size"][-1]
    crop_pct = ckpt_args.get("crop_pct") or cfg["crop_pct"]
    try:
        layer = (module.get_submodule(target_layer) if target_layer
                 else _last_block(module, default_layer))
    except AttributeError:
        raise UserValueError(f"--target-layer {target_layer!r} is not a module of {name}.") \
            from None
    if classes is None or len(classes) != num_classes:
        classes = [str(i) for i in range(num_classes)]
    return LoadedModel(name, module.eval(), (3, size, size), crop_pct, cfg["interpolation"],
                       cfg["mean"], cfg["std"], classes, layer, checkpoint)


def list_images(paths, per_class=1):
    """Image files from ``paths``; a folder of class folders gives ``per_class`` images of each."""
    images = []
    for path in paths:
        if os.path.isfile(path):
            images.append(path)
            continue
        if not os.path.isdir(path):
            raise UserFileNotFoundError(f"--images: {path} is neither an image nor a folder")
        subdirs = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
        folders = [os.path.join(path, d) for d in subdirs] or [path]
        for folder in folders:
            files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
            images += [os.path.join(folder, f) for f in files[:per_class if subdirs else None]]
    if not images:
        raise UserValueError(f"no images found in {paths}")
    return images


def compute_cams(model, image_paths):
    """For each image: (input RGB float image as the model saw it, CAM in [0, 1], class, prob).

    The target class is the image's folder name when it is one of the model's classes
    (e.g. ``val/star/x.png``), else the predicted class.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from timm.data import create_transform

    # Same resize + centre crop as evaluation, without normalisation, to show the input.
    geometry = create_transform(model.input_size, crop_pct=model.crop_pct,
                                interpolation=model.interpolation, mean=(0.0,) * 3, std=(1.0,) * 3)
    mean = torch.tensor(model.mean).view(3, 1, 1)
    std = torch.tensor(model.std).view(3, 1, 1)
    rgb = torch.stack([geometry(Image.open(p).convert("RGB")) for p in image_paths])
    inputs = (rgb - mean) / std
    with torch.no_grad():
        probs = model.module(inputs).softmax(-1)
    targets = []
    for path, p in zip(image_paths, probs):
        label = os.path.basename(os.path.dirname(path))
        targets.append(model.classes.index(label) if label in model.classes else int(p.argmax()))
    with GradCAM(model=model.module, target_layers=[model.target_layer]) as cam:
        maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(t) for t in targets])
    return [dict(image=rgb[i].permute(1, 2, 0).numpy(), cam=maps[i],
                 target=model.classes[targets[i]], pred=model.classes[int(probs[i].argmax())],
                 prob=float(probs[i].max()))
            for i in range(len(image_paths))]


def draw(models, image_paths, results, output, cell=160):
    """One PNG: a row per image, the input then each model's map with its prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rows, cols = len(image_paths), len(models) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell / 80, rows * cell / 80 + 0.4),
                             squeeze=False, dpi=80)
    for r, path in enumerate(image_paths):
        first = results[0][r]
        axes[r][0].imshow(cv2.resize(first["image"], (cell, cell), interpolation=cv2.INTER_NEAREST))
        axes[r][0].set_title(f"{os.path.basename(path)}\nCAM of: {first['target']}", fontsize=8)
        for c, (model, res) in enumerate(zip(models, results), start=1):
            overlay = show_cam_on_image(res[r]["image"].astype(np.float32), res[r]["cam"],
                                        use_rgb=True)
            axes[r][c].imshow(cv2.resize(overlay, (cell, cell), interpolation=cv2.INTER_LINEAR))
            axes[r][c].set_title(f"{model.title}\npred {res[r]['pred']} ({res[r]['prob']:.2f})",
                                 fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output)
    plt.close(fig)
    return output


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="NAME[=CHECKPOINT]",
                   help="repeat for side-by-side columns; tv:NAME for torchvision models")
    p.add_argument("--images", nargs="+", required=True,
                   help="image files, or folders (of class folders: --per-class images of each)")
    p.add_argument("--per-class", type=int, default=1)
    p.add_argument("--output", default="output/grad_cam.png")
    p.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--num-classes", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--target-layer", default=None,
                   help="dotted module name for every model (default: the last residual block)")
    return p


def main(argv=None):
    """Draw the maps of ``argv``; returns the PNG's path. A wrong argument (a missing or
    unreadable checkpoint, an unknown model name, no images) raises
    :class:`~dcdc.utils.errors.UserError`, which ``tools/grad_cam.py`` reports as one message."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    image_paths = list_images(args.images, args.per_class)  # cheap: checked first
    models = [load_model(spec, args.num_classes, args.target_layer, args.img_size)
              for spec in args.model]
    results = [compute_cams(m, image_paths) for m in models]
    out = draw(models, image_paths, results, args.output)
    logger.info(f"wrote {out} ({len(image_paths)} images x {len(models)} models)")
    return out

