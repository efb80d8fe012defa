"""Convert a :func:`dcdc.modeling.build_classifier` checkpoint into detectron2 backbone weights.

The classifiers are detectron2 ``ResNet`` modules, so their parameter names (``stem.*``,
``res2.0.conv2.lsa.span.weight``, ...) are already those of the detectron2 backbone. Conversion
drops the classification head (``linear.*``) and BN's ``num_batches_tracked``, strips wrapper
prefixes (``module.``, ``model.``, ``backbone.``), checks every name and shape against the
backbone it is meant for and writes detectron2's model-zoo ``.pkl`` format (numpy arrays,
``matching_heuristics``), the format of ``detectron2://ImageNetPretrained/*.pkl``.

A file is written only when the checkpoint fills the backbone exactly (no backbone key missing,
no shape mismatch, no tensor left over besides the head), and atomically, so a refused or
interrupted conversion leaves no file behind.
"""
import argparse
import math
import os
import pickle
import re
import sys
import tempfile
from collections import defaultdict

import torch

from ..layers import build_operator
from ..layers.dcdc_conv import gsi_channels
from ..layers.variants import VARIANTS, variant as variant_of
from ..utils.errors import UserFileNotFoundError, UserValueError
from .resnet import DEPTHS, build_classifier

__all__ = ["VARIANT_NAMES", "ConversionError", "load_state_dict", "infer_architecture", "convert",
           "write_d2_weights", "convert_checkpoint", "main"]

# Every classifier of the paper's tables, by the names of dcdc.layers.variants.
VARIANT_NAMES = tuple(v.name for v in VARIANTS)
WRAPPERS = ("state_dict", "model", "model_state", "state_dict_ema")
PREFIXES = ("module.", "model.", "backbone.", "bottom_up.")
HEAD_PREFIXES = ("linear.", "fc.", "head.")
# The operator whose key names identify the variant: the first bottleneck's.
PROBE = "res2.0.conv2."
PROBE_CHANNELS = 64


class ConversionError(UserValueError):
    """The checkpoint cannot become the requested detectron2 backbone; nothing was written.
    (A :class:`~dcdc.utils.errors.UserError`, hence a ``ValueError``.)"""


def load_state_dict(path, unsafe=False):
    """The tensor state dict in ``path``, unwrapped from ``{"state_dict": ...}`` / ``{"model": ...}``
    and stripped of ``module.`` / ``model.`` / ``backbone.`` prefixes."""
    if not os.path.isfile(path):
        raise UserFileNotFoundError(f"{path} does not exist (the classifier checkpoint to "
                                    "convert, e.g. output/classifier/.../model_final.pth).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(
            f"{path} cannot be read with torch.load(weights_only=True) ({first}): it holds "
            "Python objects besides tensors, or is not a PyTorch checkpoint. If you trust the "
            "file, rerun with --unsafe-load."
        ) from None
    except (EOFError, RuntimeError, OSError) as e:  # truncated, not a zip / pickle
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}).") from None
    for key in WRAPPERS:
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict) or not all(torch.is_tensor(v) for v in ckpt.values()):
        raise ConversionError(
            f"{path} is not a state dict of tensors (nor one wrapped in {WRAPPERS}); save the "
            "classifier with torch.save(model.state_dict(), path)."
        )
    out = {}
    for k, v in ckpt.items():
        for prefix in PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _variant_kwargs(name):
    """``(operator, kwargs)`` of build_classifier for a variant of the table."""
    v = variant_of(name)
    return v.operator, ({"global_branch": v.global_branch} if v.name != v.operator else {})


def _probe_keys(variant):
    """The parameter names of ``variant``'s operator (relative to the operator)."""
    operator, kwargs = _variant_kwargs(variant)
    module = build_operator(operator, PROBE_CHANNELS, kernel_size=7, **kwargs)
    return {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}


def _infer_depth(state_dict):
    blocks = defaultdict(set)
    for k in state_dict:
        m = re.match(r"res([2-5])\.(\d+)\.", k)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    counts = tuple(len(blocks[s]) for s in range(2, 6))
    depth = next((d for d, c in DEPTHS.items() if c == counts), None)
    if depth is None:
        raise ConversionError(
            f"blocks per stage res2..res5 = {counts} match no DCDC-ResNet depth {DEPTHS}; is this "
            "a dcdc.modeling classifier checkpoint? Pass --depth."
        )
    return depth


def _infer_variant(state_dict):
    found = {k[len(PROBE):] for k in state_dict
             if k.startswith(PROBE) and not k.endswith("num_batches_tracked")}
    matches = [v.name for v in VARIANTS if _probe_keys(v.name) == found]
    if len(matches) != 1:
        raise ConversionError(
            f"the tensors of {PROBE[:-1]} ({sorted(found)}) match "
            f"{'none' if not matches else ' and '.join(matches)} of the variants "
            f"{VARIANT_NAMES}; pass --operator."
        )
    return matches[0]


def _gsi_scale(state_dict):
    """lambda of m = round(lambda * sqrt(C)): the ratio m / sqrt(C) of some GSI (the narrowest
    first, whose ratio is the roundest) that reproduces the width of every GSI."""
    pairs = sorted({(int(v.shape[1]), int(v.shape[0])) for k, v in state_dict.items()
                    if k.endswith("conv2.gsi.reduce.weight")})
    for c, m in pairs:
        scale = round(m / math.sqrt(c), 6)
        if all(gsi_channels(c2, scale) == m2 for c2, m2 in pairs):
            return scale
    raise ConversionError(
        f"the GSI widths (channels, width) = {pairs} follow no m = round(lambda * sqrt(C)); the "
        "checkpoint is not a dcdc.modeling classifier.")


def infer_architecture(state_dict, depth=None, variant=None):
    """``(depth, operator, operator_kwargs)`` for :func:`build_classifier`, from the key names and
    shapes of ``state_dict``; an explicit ``depth`` / ``variant`` (a name of :data:`VARIANT_NAMES`)
    replaces the inference of that part. ``operator_kwargs`` holds ``global_branch`` for the
    Table III ablations and the hyperparameters the shapes determine."""
    if variant is not None and variant not in VARIANT_NAMES:
        raise ConversionError(f"operator must be one of {VARIANT_NAMES}, got {variant!r}.")
    depth = depth or _infer_depth(state_dict)
    variant = variant or _infer_variant(state_dict)
    operator, kwargs = _variant_kwargs(variant)

    def shape(name):
        key = PROBE + name
        if key not in state_dict:
            raise ConversionError(f"{key} is missing; the checkpoint is not a {variant} classifier.")
        return state_dict[key].shape

    if operator in ("dcdc", "lsa"):
        kwargs["dw_kernel_size"] = shape("lsa.dw_in.weight")[-1]
    if variant_of(variant).global_branch in ("gsi", "conv_small"):
        shape("gsi.reduce.weight")
        if variant == "dcdc":
            m = shape("gsi.reduce.weight")[0]
            kwargs["gsi_kernel_size"] = int(round((shape("gsi.kernel_gen.weight")[0] / m / m) ** 0.5))
        kwargs["gsi_scale"] = _gsi_scale(state_dict)
    return depth, operator, kwargs


def convert(state_dict, depth, operator, operator_kwargs=None):
    """``(weights, report)``: the backbone's tensors of ``state_dict`` as numpy arrays, and
    ``report = {"dropped": [...], "missing": [...], "shape_mismatch": [...],
    "num_batches_tracked": count}``."""
    reference = build_classifier(depth, operator, num_classes=None, **(operator_kwargs or {}))
    expected = {k: v.shape for k, v in reference.state_dict().items()
                if not k.endswith("num_batches_tracked")}
    weights, report = {}, {"dropped": [], "missing": [], "shape_mismatch": [],
                           "num_batches_tracked": 0}
    for k, v in state_dict.items():
        if k.endswith("num_batches_tracked"):  # BN's step counter, unused by detectron2
            report["num_batches_tracked"] += 1
        elif k not in expected:
            report["dropped"].append(k)
        elif tuple(v.shape) != tuple(expected[k]):
            report["shape_mismatch"].append(f"{k}: {tuple(v.shape)} vs {tuple(expected[k])}")
        else:
            weights[k] = v.detach().float().numpy() if v.is_floating_point() else v.numpy()
    report["missing"] = sorted(set(expected) - set(state_dict))
    return weights, report


def refusals(report):
    """Why ``report`` does not describe a complete backbone: one line per problem."""
    lines = [f"MISSING from the checkpoint: {k}" for k in report["missing"]]
    lines += [f"SHAPE MISMATCH (checkpoint vs backbone): {k}" for k in report["shape_mismatch"]]
    lines += [f"NOT IN THE BACKBONE (not a classification head): {k}"
              for k in report["dropped"] if not k.startswith(HEAD_PREFIXES)]
    return lines


def write_d2_weights(weights, path):
    """Write detectron2's model-zoo pickle atomically: a temporary file in the target folder,
    renamed over ``path`` once complete."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pkl", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump({"model": weights, "__author__": "dcdc classifier_to_d2",
                         "matching_heuristics": True}, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def convert_checkpoint(src, dst, depth=None, variant=None, unsafe=False):
    """Convert the classifier checkpoint ``src`` into detectron2 weights ``dst``.

    Returns ``(depth, operator, operator_kwargs, weights, report)``; raises
    :class:`ConversionError` (``dst`` untouched) when the checkpoint does not fill the backbone
    of that architecture exactly.
    """
    state_dict = load_state_dict(src, unsafe=unsafe)
    depth, operator, kwargs = infer_architecture(state_dict, depth, variant)
    weights, report = convert(state_dict, depth, operator, kwargs)
    problems = refusals(report)
    if problems:
        raise ConversionError(
            f"{src} does not fill a {operator} ResNet-{depth} {kwargs or ''} backbone, so "
            f"{dst} was not written:\n  " + "\n  ".join(problems)
            + "\nCheck --depth / --operator (default: inferred from the checkpoint).")
    write_d2_weights(weights, dst)
    return depth, operator, kwargs, weights, report


DESCRIPTION = 'Convert a DCDC-ResNet / RedNet ImageNet classifier checkpoint into detectron2 backbone weights.'


def main(argv=None):
    """``tools/convert_classifier_to_d2.py``: convert one checkpoint, report what was dropped."""
    parser = argparse.ArgumentParser(prog="convert_classifier_to_d2.py", description=DESCRIPTION)
    parser.add_argument("input", help="classifier checkpoint (torch.save of a state dict)")
    parser.add_argument("output", help="detectron2 weights to write, e.g. pretrained/DCDC-R50.pkl")
    parser.add_argument("--depth", type=int, choices=sorted(DEPTHS), help="default: inferred")
    parser.add_argument("--operator", choices=VARIANT_NAMES,
                        help="classifier variant (conv_small / conv_large: the global-branch "
                             "ablations); default: inferred from the key names")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="torch.load(weights_only=False), for checkpoints holding objects")
    args = parser.parse_args(argv)
    try:
        depth, operator, kwargs, weights, report = convert_checkpoint(
            args.input, args.output, args.depth, args.operator, unsafe=args.unsafe_load)
    except ConversionError as e:
        print(f"Not written: {e}", file=sys.stderr)
        return 1
    print(f"{args.input}: {operator} ResNet-{depth} {kwargs or ''}, "
          f"{len(weights)} tensors for the detectron2 backbone")
    if report["num_batches_tracked"]:
        print(f"  dropped {report['num_batches_tracked']} BN num_batches_tracked buffers")
    for k in report["dropped"]:
        assert k.startswith(HEAD_PREFIXES)  # convert_checkpoint refuses any other leftover
        print(f"  dropped, not in the backbone: {k} (classification head)")
    print(f"wrote {args.output}")
    return 0
