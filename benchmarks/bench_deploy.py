"""Deployment latency on CPU: eager PyTorch vs the TorchScript model vs onnxruntime.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_deploy              # quickstart + DCDC-R50 Mask R-CNN
    .venv/bin/python -m benchmarks.bench_deploy --rounds 5 --size 800 1216

For each model: one process exports it with ``dcdc.export`` (what ``tools/export_model.py``
does: ``TracingAdapter``, ``torch.jit.trace``, the legacy ONNX exporter at opset 17) into
``--output``, and checks the exported models against eager on the benchmark image (the
largest output difference is printed above the table: a benchmark of a wrong graph is no
benchmark). Then every (model, runtime) case runs in its own process, interleaved for
``--rounds`` rounds; each keeps its fastest round, and the table shows the range of the per-round
ratios. A case times one image of ``--size`` (already resized, as ``DefaultPredictor`` feeds the
model) through the traced interface (the outputs before the final paste into the original
image size, the same computation in all three runtimes), median of ``--repeat`` calls after
``--warmup`` calls (TorchScript's profiling executor optimises the graph in its first calls).

Random weights (nothing is downloaded), except the box classifier: its weights are zeroed and
its bias favours class 0 (probability 0.65 for every proposal), so that, as for a trained model
on a busy image, about a thousand boxes pass the score threshold, NMS keeps up to
``TEST.DETECTIONS_PER_IMAGE`` of them and the mask head runs on those. (Random class scores stay
below the threshold, leaving the heads idle; a threshold of 0 instead sends every class of every
proposal, 80k boxes, to NMS, which torchvision's ``batched_nms`` runs as one quadratic NMS when
traced: 12 s of a 16 s TorchScript call.)
"""
import argparse
import json
import os

import torch

from dcdc.export.cli import DEFAULT_OPSET

from benchmarks.common import (
    format_table, interleaved, machine_line, peak_rss_mb, ratio_cells, run_case, time_call,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {  # --only name: (label, config)
    "quickstart": ("quickstart Panoptic FPN (DCDC-R26 narrow, DCDC neck)",
                   "configs/quickstart_panoptic_fpn_dcdc_shapes.yaml"),
    "maskrcnn": ("Mask R-CNN DCDC-R50-FPN", "configs/mask_rcnn_dcdc_r50.yaml"),
}
RUNTIMES = ("eager", "torchscript", "onnxruntime")
OPTS = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"]


def _model_and_image(args):
    from dcdc.config import get_dcdc_cfg
    from dcdc.export.cli import load_model

    torch.set_num_threads(args["threads"])
    cfg = get_dcdc_cfg(os.path.join(ROOT, args["config"]), OPTS, freeze=True)
    torch.manual_seed(0)  # the same random weights in every process
    model = load_model(cfg)
    cls_score = model.roi_heads.box_predictor.cls_score  # (K + 1) logits, background last
    with torch.no_grad():
        cls_score.weight.zero_()
        cls_score.bias.zero_()
        cls_score.bias[0] = 5.0  # softmax: e^5 / (e^5 + K) = 0.65 for K = 80
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, *args["size"]), generator=gen).float()
    return model, image


def _export_case(args):
    """Export both formats into ``args["folder"]``; the largest difference of each vs eager."""
    from dcdc.export.cli import check, export

    model, image = _model_and_image(args)
    diffs = {}
    for fmt in ("torchscript", "onnx"):
        run, adapter, _ = export(model, image, fmt, args["folder"], args["opset"])
        (_, d), = check(adapter, run, [image])
        diffs[fmt] = max(d.values())
    with torch.no_grad():
        detections = len(adapter.outputs_schema(adapter(image))[0]["instances"])
    return {"diffs": diffs, "detections": detections}


def _latency_case(args):
    from dcdc.export import OnnxRuntimeModel, traceable_model

    model, image = _model_and_image(args)
    runtime = args["runtime"]
    if runtime == "eager":
        run = traceable_model(model, image)
    elif runtime == "torchscript":
        run = torch.jit.load(os.path.join(args["folder"], "model.ts"))
    else:
        run = OnnxRuntimeModel(os.path.join(args["folder"], "model.onnx"), threads=args["threads"])
    del model

    def step():
        with torch.no_grad():
            return run(image)

    for _ in range(args["warmup"]):
        step()
    # the process's peak RSS, not the growth during the timed calls: onnxruntime keeps its
    # memory arena between calls, so only the whole process compares across runtimes
    return {"seconds": time_call(step, args["repeat"], torch.device("cpu")),
            "peak_mb": peak_rss_mb()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch and onnxruntime intra-op threads (default: torch's)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--only", choices=list(MODELS))
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "bench_deploy"),
                        help="folder for the exported models (rewritten on every run)")
    args = parser.parse_args()
    if args.case:
        case = json.loads(args.case)
        print(json.dumps(_export_case(case) if case["kind"] == "export" else _latency_case(case)))
        return

    print(f"{machine_line(torch.device('cpu'))}\n", flush=True)
    models = [m for name, m in MODELS.items() if args.only in (None, name)]
    base = {"size": args.size, "threads": args.threads, "opset": args.opset}
    cases = []
    for label, config in models:
        folder = os.path.join(args.output, os.path.splitext(os.path.basename(config))[0])
        case = {**base, "config": config, "folder": folder}
        exported = run_case("benchmarks.bench_deploy", {**case, "kind": "export"})
        if "error" in exported:
            raise SystemExit(f"exporting {config} failed: {exported['error']}")
        print(f"{label}: exported to {folder}; {exported['detections']} detections; largest "
              f"|exported - eager|: " + ", ".join(f"{k} {v:.2g}" for k, v in
                                                  exported["diffs"].items()), flush=True)
        cases += [(f"{label} | {runtime}", {**case, "kind": "latency", "runtime": runtime,
                                      "repeat": args.repeat, "warmup": args.warmup}, {})
                  for runtime in RUNTIMES]
    rows = dict(interleaved("benchmarks.bench_deploy", cases, args.rounds))

    headers = ["model", "runtime", "s / image", "time vs eager", "per-round range",
               "process peak RSS MiB"]
    out = []
    for label, _ in models:
        ref = rows[f"{label} | eager"]
        for runtime in RUNTIMES:
            r = rows[f"{label} | {runtime}"]
            if "error" in r or "error" in ref:
                out.append([label, runtime, "failed: " + r.get("error", "")[:70], "", "", ""])
                continue
            out.append([label, runtime, f"{r['seconds']:.3f}", *ratio_cells(r, ref),
                        f"{r['peak_mb']:.0f}"])
    h, w = args.size
    print(f"\nCPU latency, one {h}x{w} image, {args.threads} threads, fastest of {args.rounds} "
          f"interleaved rounds (median of {args.repeat} calls each)\n\n"
          f"{format_table(headers, out)}\n", flush=True)


if __name__ == "__main__":
    main()
