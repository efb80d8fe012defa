#!/usr/bin/env python
"""Convert a DCDC-ResNet / RedNet ImageNet classifier checkpoint into detectron2 backbone weights.

    python tools/convert_classifier_to_d2.py dcdc_r50_imagenet.pth pretrained/DCDC-R50.pkl
    python train_net.py --config-file configs/mask_rcnn_dcdc_r50.yaml   # MODEL.WEIGHTS points there

The classifiers of :func:`dcdc.modeling.build_classifier` are detectron2 ``ResNet`` modules, so
their parameter names (``stem.*``, ``res2.0.conv2.lsa.span.weight``, ...) are already those of
the detectron2 backbone; this tool drops the classification head (``linear.*``) and BN's
``num_batches_tracked``, strips wrapper prefixes (``module.``, ``model.``, ``backbone.``), checks
every name and shape against the backbone it is meant for, and writes detectron2's model-zoo
``.pkl`` format (numpy arrays, ``matching_heuristics``), the format of
``detectron2://ImageNetPretrained/*.pkl``: ``DetectionCheckpointer`` loads it into any DCDC
backbone, with or without FPN, and logs the keys it did not use.

Every key it drops and every backbone key it cannot fill is reported; a backbone key missing from
the checkpoint or a shape mismatch is an error unless ``--allow-missing``.
"""
import argparse
import os
import pickle
import re
import sys
from collections import defaultdict

import torch

from dcdc.modeling import DEPTHS, build_classifier

WRAPPERS = ("state_dict", "model", "model_state", "state_dict_ema")
PREFIXES = ("module.", "model.", "backbone.", "bottom_up.")
HEAD_PREFIXES = ("linear.", "fc.", "head.")


def load_state_dict(path, unsafe=False):
    """The tensor state dict in ``path``, unwrapped from ``{"state_dict": ...}`` / ``{"model": ...}``
    and stripped of ``module.`` / ``model.`` / ``backbone.`` prefixes."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as e:
        raise RuntimeError(
            f"{path} holds Python objects besides tensors ({e}); if you trust the file, rerun "
            "with --unsafe-load."
        ) from None
    for key in WRAPPERS:
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict) or not all(torch.is_tensor(v) for v in ckpt.values()):
        raise ValueError(
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


def infer_architecture(state_dict):
    """``(depth, operator, operator_kwargs)`` of a DCDC-ResNet classifier from its key names and
    shapes (depth from the block counts, operator from the branch names)."""
    blocks = defaultdict(set)
    for k in state_dict:
        m = re.match(r"res([2-5])\.(\d+)\.", k)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    counts = tuple(len(blocks[s]) for s in range(2, 6))
    depth = next((d for d, c in DEPTHS.items() if c == counts), None)
    if depth is None:
        raise ValueError(
            f"blocks per stage res2..res5 = {counts} match no DCDC-ResNet depth {DEPTHS}; is this "
            "a dcdc.modeling classifier checkpoint? Pass --depth to override."
        )
    kwargs = {}
    if "res2.0.conv2.weight" in state_dict:
        operator = "conv"
    elif "res2.0.conv2.gsi.kernel_gen.weight" in state_dict:
        operator = "dcdc"
        m_out = state_dict["res2.0.conv2.gsi.kernel_gen.weight"].shape[0]
        width = state_dict["res2.0.conv2.gsi.reduce.weight"].shape[0]
        kwargs["gsi_kernel_size"] = int(round((m_out / width / width) ** 0.5))
        channels = state_dict["res2.0.conv2.gsi.reduce.weight"].shape[1]
        # m = round(lambda * sqrt(C)) on res2's C = 64 channels gives lambda to 1/8.
        kwargs["gsi_scale"] = width / channels ** 0.5
    elif "res2.0.conv2.lsa.dw_in.weight" in state_dict:
        operator = "lsa"
    elif "res2.0.conv2.lsa.span.weight" in state_dict:
        operator = "rednet"
    else:
        raise ValueError("cannot tell the operator from the keys of res2.0.conv2; pass --operator.")
    if operator in ("dcdc", "lsa"):
        kwargs["dw_kernel_size"] = state_dict["res2.0.conv2.lsa.dw_in.weight"].shape[-1]
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="classifier checkpoint (torch.save of a state dict)")
    parser.add_argument("output", help="detectron2 weights to write, e.g. pretrained/DCDC-R50.pkl")
    parser.add_argument("--depth", type=int, choices=sorted(DEPTHS), help="default: inferred")
    parser.add_argument("--operator", choices=["dcdc", "lsa", "rednet", "conv"],
                        help="default: inferred from the key names")
    parser.add_argument("--allow-missing", action="store_true",
                        help="write the file even if backbone keys are missing or mismatched")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="torch.load(weights_only=False), for checkpoints holding objects")
    args = parser.parse_args(argv)

    state_dict = load_state_dict(args.input, unsafe=args.unsafe_load)
    depth, operator, kwargs = infer_architecture(state_dict)
    depth, operator = args.depth or depth, args.operator or operator
    weights, report = convert(state_dict, depth, operator, kwargs)

    print(f"{args.input}: {operator} ResNet-{depth} {kwargs or ''}, "
          f"{len(weights)} tensors for the detectron2 backbone")
    if report["num_batches_tracked"]:
        print(f"  dropped {report['num_batches_tracked']} BN num_batches_tracked buffers")
    for k in report["dropped"]:
        note = " (classification head)" if k.startswith(HEAD_PREFIXES) else ""
        print(f"  dropped, not in the backbone: {k}{note}")
    for k in report["missing"]:
        print(f"  MISSING from the checkpoint: {k}")
    for k in report["shape_mismatch"]:
        print(f"  SHAPE MISMATCH (checkpoint vs backbone): {k}")
    if (report["missing"] or report["shape_mismatch"]) and not args.allow_missing:
        print("Not written: the checkpoint does not fill the backbone (see above); check "
              "--depth / --operator, or pass --allow-missing.", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "wb") as f:
        pickle.dump({"model": weights, "__author__": "dcdc convert_classifier_to_d2",
                     "matching_heuristics": True}, f)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
