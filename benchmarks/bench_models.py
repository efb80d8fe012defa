"""Model-level benchmarks: what the fast LSA aggregation buys end to end.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_models                 # both benchmarks, CPU
    .venv/bin/python -m benchmarks.bench_models --only backbone --device cuda
    .venv/bin/python -m benchmarks.bench_models --device cuda --backbone-train --amp

* ``backbone``: inference (eval, no grad) of the classification trunks
  ``dcdc.modeling.build_classifier(50, operator=...)`` at 1x3x800x1216 (``--backbone-train``: a
  training step, forward + backward, at batch 2): ResNet-50 in the same
  deep-stem layout (``operator="conv"``), DCDC-ResNet-50, RedNet-50, and DCDC-ResNet-50 without
  the native / Triton kernels (``DCDC_BACKEND=torch``: the PyTorch composite of the dcdc ops,
  as on an install without a compiler).
* ``maskrcnn``: one Mask R-CNN FPN training iteration (forward, backward, SGD step) at batch 2,
  512x512 images with 4 random instances each, ``configs/mask_rcnn_r50.yaml`` (detectron2's
  R50) vs ``configs/mask_rcnn_dcdc_r50.yaml``, random init (``MODEL.WEIGHTS ""``), with the
  heads given identical work (anchors as proposals, see ``_maskrcnn_case``).

``--amp`` runs both under ``torch.autocast(device, dtype=torch.bfloat16)`` (detectron2's
``SOLVER.AMP.ENABLED``); the dcdc ops then run in bf16.

Each case runs in its own process (see ``benchmarks/common.py``): median time of ``--repeat``
calls after a warm-up, the minor page faults per call and the extra peak memory of those calls.
On a VM where a page fault is expensive, the faults on fresh tensor memory take about a third
of a CPU forward, the same work for both models, and their number changes from process to
process with the heap's layout; ``--keep-freed-memory`` runs every case with glibc malloc
keeping freed memory, which leaves the arithmetic. The cases of a table run
interleaved for ``--rounds`` rounds and each keeps its fastest round, so a load change on a
shared machine does not land on one model only. Ratios are against the first row of each table,
measured in the same run.
"""
import argparse
import json
import os

import torch

from benchmarks.common import (KEEP_FREED_MEMORY, format_table, interleaved, machine_line, measure,
                               ratio_cells)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKBONES = [  # (label, operator, env)
    ("ResNet-50 (operator=conv)", "conv", {}),
    ("DCDC-ResNet-50", "dcdc", {}),
    ("DCDC-ResNet-50, DCDC_BACKEND=torch", "dcdc", {"DCDC_BACKEND": "torch"}),
    ("RedNet-50", "involution", {}),
]
DETECTORS = [
    ("Mask R-CNN R50-FPN", "configs/mask_rcnn_r50.yaml"),
    ("Mask R-CNN DCDC-R50-FPN", "configs/mask_rcnn_dcdc_r50.yaml"),
]


def _backbone_case(args):
    from dcdc.modeling.resnet import build_classifier

    device = torch.device(args["device"])
    torch.manual_seed(0)
    model = build_classifier(50, operator=args["operator"], num_classes=None).to(device)
    model.train(args["train"])
    x = torch.randn(args["batch"], 3, *args["size"], device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args["amp"]):
            if not args["train"]:
                with torch.no_grad():
                    return model(x)
            out = model(x)
        model.zero_grad(set_to_none=True)
        outs = out.values() if isinstance(out, dict) else [out]
        sum(o.float().square().mean() for o in outs).backward()

    return measure(step, device, args["repeat"])


def _maskrcnn_case(args):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    from dcdc import add_dcdc_config

    cfg = get_cfg()
    add_dcdc_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, args["config"]))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = args["device"]
    device = torch.device(args["device"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    # The same work in the heads for every backbone. A randomly initialised RPN's proposals
    # depend on the backbone: R50's left only the appended ground truth (4-9 ROIs per image,
    # NaN losses by the fourth step) while DCDC-R50's heads sampled 512, so the rows timed
    # different head work (up to 1 s per iteration). With the RPN's objectness and delta convs
    # zeroed, the proposals are the anchors in a fixed order for any backbone; lr 0 keeps them
    # so (the SGD step still runs in full), and the ROI sampler draws from a re-seeded RNG each
    # step. Every op still runs forward and backward.
    rpn_head = model.proposal_generator.rpn_head
    with torch.no_grad():
        for conv in (rpn_head.objectness_logits, rpn_head.anchor_deltas):
            conv.weight.zero_()
            conv.bias.zero_()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0,
                                momentum=0.9)
    size = args["size"]
    gen = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(args["batch"]):
        image = torch.randint(0, 256, (3, size, size), generator=gen).float()
        xy = torch.rand(4, 2, generator=gen) * size * 0.6
        wh = 32 + torch.rand(4, 2, generator=gen) * size * 0.3
        boxes = torch.cat([xy, xy + wh], dim=1)
        masks = torch.zeros(4, size, size, dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.round().long().tolist()):
            m[y0:y1, x0:x1] = True
        inst = Instances((size, size), gt_boxes=Boxes(boxes),
                         gt_classes=torch.randint(0, 80, (4,), generator=gen),
                         gt_masks=BitMasks(masks))
        batch.append({"image": image, "instances": inst, "height": size, "width": size})

    def step():
        torch.manual_seed(0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args["amp"]):
            losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    with EventStorage(0):  # detectron2's training-time logging, as in its trainers
        return measure(step, device, args["repeat"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["backbone", "maskrcnn"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backbone-train", action="store_true",
                        help="time a backbone training step at batch 2 instead of inference")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="run every case with glibc malloc keeping freed memory (no page "
                        "faults after the warm-up; see benchmarks/common.py)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds; each case keeps its fastest (a slow process on "
                        "a shared machine moved one ratio by up to 20%%)")
    args = parser.parse_args()
    if args.case:
        case = json.loads(args.case)
        fn = _backbone_case if case["kind"] == "backbone" else _maskrcnn_case
        print(json.dumps(fn(case)))
        return

    device = torch.device(args.device)
    print(f"{machine_line(device)}\n")
    precision = "bf16 autocast" if args.amp else "fp32"
    if args.keep_freed_memory:
        precision += ", malloc keeps freed memory"
    malloc_env = KEEP_FREED_MEMORY if args.keep_freed_memory else {}
    headers = ["model", "s", "time vs first row", "per-round range", "page faults / call",
               "extra peak MiB", "memory vs first row"]
    tables = []
    if args.only in (None, "backbone"):
        batch = 2 if args.backbone_train else 1
        cases = [(label, {"kind": "backbone", "operator": operator, "size": [800, 1216],
                          "batch": batch, "train": args.backbone_train, "amp": args.amp,
                          "device": args.device, "repeat": args.repeat}, {**malloc_env, **env})
                 for label, operator, env in BACKBONES]
        rows = interleaved("benchmarks.bench_models", cases, args.rounds)
        what = "training step" if args.backbone_train else "inference"
        tables.append((f"Backbone {what}, batch {batch}, 800x1216, {precision}", rows))
    if args.only in (None, "maskrcnn"):
        cases = [(label, {"kind": "maskrcnn", "config": config, "size": 512, "batch": 2,
                          "amp": args.amp, "device": args.device, "repeat": args.repeat},
                  malloc_env)
                 for label, config in DETECTORS]
        rows = interleaved("benchmarks.bench_models", cases, args.rounds)
        tables.append((f"Mask R-CNN training iteration, batch 2, 512x512, {precision}", rows))
    for title, rows in tables:
        ref = rows[0][1]
        out = []
        for label, r in rows:
            if "error" in r:
                out.append([label, "failed: " + r["error"][:70], "", "", "", "", ""])
                continue
            out.append([label, f"{r['seconds']:.2f}", *ratio_cells(r, ref), f"{r['faults']:.0f}",
                        f"{r['extra_mb']:.0f}", f"{r['extra_mb'] / ref['extra_mb']:.2f}x"])
        print(f"{title}\n\n{format_table(headers, out)}\n", flush=True)


if __name__ == "__main__":
    main()
