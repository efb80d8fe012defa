"""``tools/export_model.py``: export a detector config to TorchScript or ONNX, check it, evaluate it.

detectron2's ``tools/deploy/export_model.py`` flags, for the configs of this project::

    python tools/export_model.py --config-file configs/mask_rcnn_dcdc_r50.yaml \\
        --format onnx --export-method tracing --output output/export \\
        [--sample-image IMAGE] [--opset 17] [--run-eval] MODEL.WEIGHTS model_final.pth

Writes ``model.ts`` (TorchScript; load with ``import dcdc; torch.jit.load(...)``) or
``model.onnx`` (standard ONNX operators, dynamic H and W) under ``--output``. Then runs the
exported model and the eager model on the sample image (``--sample-image``, else the first image
of ``DATASETS.TEST[0]``), resized by the config's test-time resize, and on that image at 3/4 of
its size (the exported model must not depend on the tracing size), and prints the largest
difference of each output. Detections are paired by class, box overlap and score
(:func:`dcdc.export.match_detections`), not by index: near-tied scores may list the same
detections in another order. It exits with status 1 when a difference exceeds
``--atol + --rtol x |eager|`` (rtol 0 by default) or a detection of one model has no
counterpart in the other (each is listed). ``--run-eval``
evaluates the exported and the eager model on ``DATASETS.TEST`` (COCOEvaluator, and for panoptic
datasets COCOPanopticEvaluator and SemSegEvaluator) and prints both.

With ``MODEL.WEIGHTS ""`` the model is randomly initialised from ``SEED`` (when >= 0), to check
the export itself. The tracer's warnings (Python values recorded as constants, expected for
detectron2's models) are counted in one line instead of printed. A wrong argument (a missing or
unreadable file, an ``--output`` that is a file, a config key typo) is one message,
``export_model.py: error: ...``, and exit status 2.

The image is given to the model, eager and exported, in ``INPUT.FORMAT`` channel order (RGB for
the DCDC / RedNet configs), as :class:`detectron2.engine.DefaultPredictor` does.

Only ``--export-method tracing`` exists for these models: detectron2's scripting needs
scriptable models (the DCDC backbones' dispatch on backends and tensor layouts is not), and its
caffe2 export needs Caffe2, which current PyTorch does not ship.
"""
import argparse
import collections
import contextlib
import json
import logging
import os
import sys
import warnings

import torch
import torch.nn.functional as F

from ..utils.errors import UserFileNotFoundError, UserValueError, run_main

__all__ = ["get_parser", "main", "load_model", "sample_input", "check", "report_check",
           "summarized_tracer_warnings"]

logger = logging.getLogger("dcdc.export")

FORMATS = ("torchscript", "onnx")
EXPORT_METHODS = ("tracing",)
DEFAULT_OPSET = 17
DEFAULT_RTOL = 0.0
PROG = "export_model.py"
# unpaired detections listed in full; more are counted
MAX_UNMATCHED_LISTED = 10


def get_parser():
    parser = argparse.ArgumentParser(
        description="Export a DCDC / detectron2 detector to TorchScript or ONNX by tracing, "
                    "check it against the eager model, optionally evaluate it.")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument("--format", default="torchscript",
                        help=f"export format: {' or '.join(FORMATS)}")
    parser.add_argument("--export-method", default="tracing",
                        help="export method; only 'tracing' for these models")
    parser.add_argument("--sample-image", default=None, type=str,
                        help="image to trace and check with (default: the first of DATASETS.TEST)")
    parser.add_argument("--output", required=True, help="output directory for the exported model")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset version (default {DEFAULT_OPSET}; models with RoI "
                             "pooling need >= 16)")
    parser.add_argument("--atol", type=float, default=1e-3,
                        help="allowed |exported - eager| of any output: atol + rtol x |eager| "
                             "(default atol 1e-3)")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help="relative part of the tolerance (default 0), e.g. 1e-5 for "
                             "large images, whose box coordinates of hundreds of pixels carry "
                             "float32 rounding beyond an absolute 1e-3")
    parser.add_argument("--run-eval", action="store_true",
                        help="evaluate the exported and the eager model on DATASETS.TEST")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="Modify config options at the end of the command (KEY VALUE pairs)")
    return parser


def _read_image(path, fmt="BGR"):
    from detectron2.data.detection_utils import read_image

    try:
        return read_image(path, format=fmt)
    except Exception as e:  # PIL.UnidentifiedImageError, OSError (truncated), ...
        raise UserValueError(f"--sample-image '{path}' cannot be read as an image "
                             f"({type(e).__name__}: {' '.join(str(e).split())}).") from None


def _check_args(args):
    if args.format not in FORMATS:
        hint = (" Caffe2 is not part of current PyTorch; export to onnx instead."
                if args.format == "caffe2" else "")
        raise UserValueError(f"--format {args.format!r} is not supported; choose one of "
                             f"{', '.join(FORMATS)}.{hint}")
    if args.export_method not in EXPORT_METHODS:
        raise UserValueError(
            f"--export-method {args.export_method!r} is not supported for these models; use "
            "--export-method tracing (detectron2's scripting needs scriptable models, which the "
            "DCDC backbones are not, and caffe2_tracing needs Caffe2).")
    if not os.path.isfile(args.config_file):
        raise UserFileNotFoundError(f"--config-file '{args.config_file}' does not exist.")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UserValueError(f"--output '{args.output}' is an existing file, not a folder: give "
                             "a folder (it is created if missing) to write model.ts / "
                             "model.onnx into.")
    if args.sample_image is not None:
        if not os.path.isfile(args.sample_image):
            raise UserFileNotFoundError(f"--sample-image '{args.sample_image}' does not exist.")
        _read_image(args.sample_image)  # unreadable: say so before the model is built
    if args.atol < 0 or args.rtol < 0:
        raise UserValueError(f"--atol and --rtol must be >= 0, got {args.atol:g} and "
                             f"{args.rtol:g}.")
    if args.format == "onnx":
        from .onnx_ops import ONNX_MIN_OPSET

        if args.opset < ONNX_MIN_OPSET:
            raise UserValueError(f"--opset {args.opset}: the dcdc operators need ONNX opset >= "
                                 f"{ONNX_MIN_OPSET}.")


def load_model(cfg):
    """The eval-mode model of ``cfg`` with ``cfg.MODEL.WEIGHTS`` loaded (random init when empty,
    seeded by ``cfg.SEED`` when >= 0)."""
    from detectron2.modeling import build_model

    from ..engine.checkpoint import DCDCCheckpointer

    weights = cfg.MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise UserFileNotFoundError(
            f"MODEL.WEIGHTS = {weights!r} does not exist. Give the trained checkpoint to export "
            "(e.g. MODEL.WEIGHTS output/quickstart/model_final.pth), or MODEL.WEIGHTS \"\" to "
            "export a randomly initialised model (to check the export itself).")
    if not weights and cfg.SEED >= 0:
        torch.manual_seed(cfg.SEED)
    model = build_model(cfg)
    if weights:
        DCDCCheckpointer(model).load(weights)
    return model.eval()


def _test_resize(cfg):
    from detectron2.data import transforms as T

    return T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)


def sample_input(cfg, path=None):
    """``{"image": float32 (C, H, W), "height", "width"}``: ``path`` read in
    ``cfg.INPUT.FORMAT`` and resized as at test time (as DefaultPredictor does), or the first
    image of ``cfg.DATASETS.TEST[0]`` as its test loader gives it."""
    if path is not None:
        original = _read_image(path, cfg.INPUT.FORMAT)
        image = _test_resize(cfg).get_transform(original).apply_image(original)
        return {"image": torch.as_tensor(image.astype("float32").transpose(2, 0, 1)),
                "height": original.shape[0], "width": original.shape[1]}
    if not cfg.DATASETS.TEST:
        raise UserValueError("DATASETS.TEST is empty: give --sample-image IMAGE.")
    from detectron2.data import build_detection_test_loader

    from ..engine.checks import check_datasets

    check_datasets(cfg.DATASETS.TEST[:1])
    inputs = next(iter(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])))[0]
    return {**inputs, "image": inputs["image"].float()}


def _other_size(image):
    """``image`` at 3/4 of its size: a check that the exported graph does not keep the tracing size."""
    h, w = image.shape[-2:]
    size = (max(32, h * 3 // 4), max(32, w * 3 // 4))
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


def export(model, image, fmt, output, opset=DEFAULT_OPSET):
    """Export to ``output`` (a folder); return ``(run, adapter, path)`` where ``run(image)`` gives
    the exported model's flat outputs."""
    from .detector import OnnxRuntimeModel, export_onnx_detector, export_torchscript

    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        raise UserValueError(f"Cannot create the --output folder '{output}': {e}.") from None
    if fmt == "torchscript":
        path = os.path.join(output, "model.ts")
        _, adapter = export_torchscript(model, image, path)
        run = torch.jit.load(path)  # what a deployment loads, not the in-memory trace
    else:
        path = os.path.join(output, "model.onnx")
        try:
            adapter = export_onnx_detector(model, image, path, opset)
        except ValueError as e:  # an opset too old for the model's RoI pooling
            raise UserValueError(str(e)) from None
        run = OnnxRuntimeModel(path)
    logger.info("Exported %s to %s", fmt, path)
    logger.info("Inputs schema: %s", adapter.inputs_schema)
    logger.info("Outputs schema: %s", adapter.outputs_schema)
    return run, adapter, path


def check(adapter, run, images, rtol=DEFAULT_RTOL):
    """``[(image shape, comparison)]`` over ``images``: ``comparison`` is
    :func:`dcdc.export.compare_outputs`' ``{output: largest |exported - eager|}`` (detections
    paired by class, box overlap and score), with the unpaired detections in ``.unmatched`` and
    the largest ``|difference| - rtol x |eager|`` in ``.excess``."""
    from .detector import compare_outputs

    rows = []
    for image in images:
        with torch.no_grad():
            rows.append((tuple(image.shape),
                         compare_outputs(adapter, adapter(image), run(image), rtol=rtol)))
    return rows


def report_check(rows, atol, rtol=DEFAULT_RTOL, out=None):
    """Print the result of :func:`check`; returns whether every output is within
    ``atol + rtol x |eager|`` and every detection has a counterpart."""
    out = out or sys.stdout
    worst, lone, ok = 0.0, 0, True
    for shape, diffs in rows:
        line = ", ".join(f"{k} {v:.3g}" for k, v in diffs.items())
        pairs = ""
        if diffs.num_expected or diffs.num_actual:
            pairs = (f"{diffs.matched} detections paired by class, box overlap and score "
                     f"(eager {diffs.num_expected}, exported {diffs.num_actual}); ")
        print(f"exported vs eager on a {shape[1]}x{shape[2]} image: {pairs}largest |difference| "
              f"{line}", file=out)
        unmatched = diffs.unmatched
        for side, i, cls, score, box in unmatched[:MAX_UNMATCHED_LISTED]:
            model = "eager" if side == "expected" else "exported"
            other = "exported" if side == "expected" else "eager"
            print(f"  {model} detection {i} (class {cls}, score {score:.4g}, box {box}) has no "
                  f"{other} counterpart", file=out)
        if len(unmatched) > MAX_UNMATCHED_LISTED:
            print(f"  ... and {len(unmatched) - MAX_UNMATCHED_LISTED} more unpaired detections",
                  file=out)
        lone += len(unmatched)
        worst = max([worst, *diffs.values()])
        ok = ok and diffs.within(atol)
    print(f"largest difference over all outputs: {worst:.3g} (tolerance atol {atol:g} + rtol "
          f"{rtol:g} x |eager|: {'within' if ok else 'EXCEEDED'})"
          + (f"; {lone} detections without a counterpart" if lone else ""), file=out)
    return ok


@contextlib.contextmanager
def summarized_tracer_warnings():
    """Count, instead of printing, the warnings of tracing that tell the user nothing: the
    tracer's ``TracerWarning`` (a Python value recorded as a constant: expected for detectron2's
    post-processing, and what the check after the export is for) and torch's "torch.jit.* is
    deprecated" ``FutureWarning``; other warnings are shown as usual. Yields a
    ``collections.Counter`` of the hidden ones by category name."""
    counts = collections.Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        yield counts
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning) or (
                issubclass(w.category, FutureWarning) and "is deprecated" in str(w.message)
                and "torch.jit" in str(w.message)):
            counts[w.category.__name__] += 1
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def evaluate(cfg, model, exported, output):
    """COCO (and panoptic / semantic) metrics of ``exported`` and of the eager ``model`` on every
    ``cfg.DATASETS.TEST``: ``{dataset: {"exported": ..., "eager": ...}}``."""
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import inference_on_dataset, print_csv_format

    from ..engine.checks import check_datasets
    from ..engine.defaults import build_evaluator

    check_datasets(cfg.DATASETS.TEST)
    results = {}
    for name in cfg.DATASETS.TEST:
        results[name] = {}
        for which, runner in (("exported", exported), ("eager", model)):
            evaluator = build_evaluator(cfg, name, os.path.join(output, "inference", which))
            loader = build_detection_test_loader(cfg, name)
            metrics = inference_on_dataset(runner, loader, evaluator)
            logger.info("%s model on %s:", which, name)
            print_csv_format(metrics)
            results[name][which] = metrics
    return results


def _largest_metric_difference(results):
    worst = 0.0
    for per_model in results.values():
        exported, eager = per_model["exported"], per_model["eager"]
        for task, metrics in eager.items():
            for key, value in metrics.items():
                other = exported.get(task, {}).get(key)
                if isinstance(value, float) and isinstance(other, float):
                    if value == value or other == other:  # skip NaN pairs
                        worst = max(worst, abs(value - other))
    return worst


def main(argv=None):
    """Run export_model.py with the command-line arguments ``argv``; returns the exit status
    (0, 1 when the exported model differs from eager, 2 for a user error)."""
    return run_main(PROG, _main, argv)


def _main(argv=None):
    args = get_parser().parse_args(argv)
    _check_args(args)
    from detectron2.utils.logger import setup_logger

    from ..config import get_dcdc_cfg
    from .detector import ExportedDetector

    setup_logger(name="detectron2")
    setup_logger(name="dcdc")
    cfg = get_dcdc_cfg(args.config_file, args.opts or [], freeze=True)
    model = load_model(cfg)
    inputs = sample_input(cfg, args.sample_image)
    image = inputs["image"]
    with summarized_tracer_warnings() as hidden:
        run, adapter, path = export(model, image, args.format, args.output, args.opset)
        rows = check(adapter, run, [image, _other_size(image)], args.rtol)
    if hidden:
        print(f"({', '.join(f'{n} {name}s' for name, n in hidden.items())} of tracing not shown: "
              "Python values recorded as constants, expected for detectron2's models; the "
              "comparison with eager below is the check that matters)")

    status = 0
    if not report_check(rows, args.atol, args.rtol):
        print(f"the exported model differs from the eager model (by more than --atol "
              f"{args.atol:g} + --rtol {args.rtol:g} x |eager|, or detections without a "
              "counterpart)", file=sys.stderr)
        status = 1
    if args.run_eval:
        results = evaluate(cfg, model, ExportedDetector(run, adapter, model), args.output)
        with open(os.path.join(args.output, "eval.json"), "w") as f:
            json.dump(results, f, indent=1, default=float)
        gap = _largest_metric_difference(results)
        print(f"largest metric difference exported vs eager on {', '.join(cfg.DATASETS.TEST)}: "
              f"{gap:.3g}")
    return status


if __name__ == "__main__":
    sys.exit(main())
