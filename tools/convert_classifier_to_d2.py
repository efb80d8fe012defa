#!/usr/bin/env python
"""Convert a DCDC-ResNet / RedNet ImageNet classifier checkpoint into detectron2 backbone weights.

    python tools/convert_classifier_to_d2.py dcdc_r50_imagenet.pth pretrained/DCDC-R50.pkl
    python train_net.py --config-file configs/mask_rcnn_dcdc_r50.yaml   # MODEL.WEIGHTS points there

The architecture (depth, operator variant, operator hyperparameters) is inferred from the
checkpoint unless ``--depth`` / ``--operator`` say it. The output is written only when the
checkpoint fills that backbone exactly (otherwise "Not written: ..." and exit status 1); see
:mod:`dcdc.modeling.classifier_to_d2`. A missing or unreadable input is one message, exit
status 2.
"""
import argparse
import sys

from dcdc.modeling import DEPTHS
from dcdc.modeling.classifier_to_d2 import HEAD_PREFIXES, VARIANT_NAMES, ConversionError, convert_checkpoint
from dcdc.utils.errors import run_main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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


if __name__ == "__main__":
    sys.exit(run_main("convert_classifier_to_d2.py", main))
