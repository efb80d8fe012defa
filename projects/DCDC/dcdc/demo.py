"""``demo.py``: draw a trained detector's predictions on images, a video or a webcam, with the
interface of detectron2's demo/demo.py.

::

    python demo.py --config-file CONFIG (--input FILE_OR_GLOB ... | --video-input VIDEO | --webcam)
                   [--output PATH] [--confidence-threshold 0.5] [--scale 1.0] [OVERRIDES ...]

* ``CONFIG`` is a YAML config (detectron2 CfgNode; the model is built by detectron2's
  ``DefaultPredictor`` from ``MODEL.WEIGHTS``) or a LazyConfig ``.py`` file (the model is
  ``instantiate(cfg.model)`` with ``train.init_checkpoint`` loaded), as train_net.py takes them.
* ``OVERRIDES`` come last, as for train_net.py: ``KEY VALUE`` pairs for YAML configs
  (``MODEL.WEIGHTS model_final.pth``), ``key=value`` for LazyConfigs
  (``train.init_checkpoint=model_final.pth``); ``--opts OVERRIDES`` is the same.
* ``--output``: for images a folder (one ``<name>.png`` per input) or, for one input, a file name
  (.png, .jpg, ...); for a video or the webcam a video file name (.mp4 / .mkv: MPEG-4 Part 2
  ``mp4v``; .avi: Motion JPEG, codecs that the opencv-python wheels can write) or a folder (then
  ``<folder>/<video name>.mp4``). Without ``--output`` the pictures are shown in a window (Esc
  quits), which needs a display and an OpenCV with GUI support.
* A config asking for CUDA on a machine without it runs on the CPU, with a warning.
* Several models side by side (paper Fig. 7): ``--model NAME=CONFIG[:WEIGHTS]``, repeated, instead
  of ``--config-file``. For images, the ground truth comes first when the image is in a dataset
  registered in detectron2's ``DatasetCatalog`` (found by file name among the models' test and
  train datasets). Overrides apply to every model.

An input image that cannot be read is reported by name and skipped; the others are still
processed (the exit status is then 1). Wrong arguments (a missing config or weights file, an
``--output`` that cannot hold the results, no camera, no display, ...) stop before any model is
built with one message saying what is wrong and how to fix it, and exit status 2.
"""
import argparse
import glob
import inspect
import logging
import os
import pickle
import re
import sys
import time

import cv2
import torch
import tqdm
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import detectron2.data.transforms as T
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine.defaults import DefaultPredictor
from detectron2.utils.logger import setup_logger
from detectron2.utils.registry import locate
from detectron2.utils.video_visualizer import VideoVisualizer

from .config import get_dcdc_cfg
from .engine.checkpoint import DCDCCheckpointer
from .engine.checks import lazy_dataset_names, load_lazy_config
from .utils.errors import UserError, report_user_error
from .utils.visualization import (
    draw_ground_truth,
    draw_predictions,
    draw_video_predictions,
    ground_truth_index,
    parse_model_spec,
    side_by_side,
)

__all__ = ["DemoError", "LazyPredictor", "Model", "get_parser", "parse_args", "load_model",
           "expand_inputs", "check_image_output", "image_output_path", "video_output_path",
           "display_problem", "run_on_images", "run_on_video", "main"]

logger = logging.getLogger("dcdc.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# fourcc per video file extension: codecs that the opencv-python(-headless) wheels' FFmpeg can
# encode (their FFmpeg has no H.264 encoder, so not detectron2's first choice, x264).
VIDEO_CODECS = {".mp4": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
DEFAULT_VIDEO_EXTENSION = ".mp4"
WINDOW_NAME = "DCDC detections"

# A trailing override's first token: a YAML key (MODEL.WEIGHTS) or a LazyConfig key=value.
_YAML_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")
_LAZY_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")


class DemoError(UserError):
    """A wrong argument or input: reported as one message (no traceback), exit status 2."""


class Model:
    """One model of the demo: ``predictor(bgr_image) -> outputs dict``, its metadata, and the
    dataset names of its config (for the ground truth)."""

    def __init__(self, name, predictor, metadata, dataset_names):
        self.name = name
        self.predictor = predictor
        self.metadata = metadata
        self.dataset_names = dataset_names


def get_parser():
    parser = argparse.ArgumentParser(
        prog="demo.py",
        description="Draw a DCDC / detectron2 detector's predictions on images, a video or a "
                    "webcam (detectron2's demo/demo.py interface).",
        epilog="Overrides come last: KEY VALUE pairs for a YAML config (MODEL.WEIGHTS x.pth), "
               "key=value for a LazyConfig .py (train.init_checkpoint=x.pth); after --input, "
               "whose file list they would otherwise extend, they start at the first KEY.")
    parser.add_argument("--config-file", metavar="FILE",
                        help="path to a YAML config or a LazyConfig .py file (one model)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=CONFIG[:WEIGHTS]",
                        help="a model to draw beside the others (and the ground truth, for "
                        "images); repeat it, instead of --config-file. Overrides apply to every "
                        "model.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="IMAGE",
                        help="image files or glob patterns, e.g. 'directory/*.jpg'")
    source.add_argument("--video-input", metavar="VIDEO", help="a video file to draw on")
    source.add_argument("--webcam", action="store_true", help="take frames from camera 0")
    parser.add_argument("--output", metavar="PATH",
                        help="a folder, or a file name (an image for one --input, a .mp4 / .mkv "
                        "/ .avi video for --video-input and --webcam); without it the results "
                        "are shown in a window")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, metavar="SCORE",
                        help="minimum score for instance predictions to be shown")
    parser.add_argument("--scale", type=float, default=1.0, metavar="S",
                        help="drawing scale of each image panel (videos keep the input size)")
    parser.add_argument("--opts", dest="flag_opts", default=[], nargs=argparse.REMAINDER,
                        metavar="OVERRIDE",
                        help="config overrides (the same as trailing overrides)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="OVERRIDES",
                        help="config overrides: KEY VALUE pairs for a YAML config, key=value "
                        "for a LazyConfig")
    return parser


def _is_override_start(token):
    return bool(_YAML_KEY.match(token) or _LAZY_OVERRIDE.match(token)) and \
        not os.path.exists(token)


def parse_args(argv=None, parser=None):
    """Parsed arguments; ``args.opts`` holds the trailing overrides and those after ``--opts``
    (``--input``'s file list is cut at the first override key it swallowed)."""
    parser = parser or get_parser()
    args = parser.parse_args(argv)
    opts = list(args.opts)
    if opts[:1] == ["--"]:
        opts = opts[1:]
    if "--opts" in opts:  # trailing overrides, then --opts and more overrides
        opts.remove("--opts")
    if args.input:
        cut = next((i for i, t in enumerate(args.input) if _is_override_start(t)), None)
        if cut is not None:
            args.input, opts = args.input[:cut], args.input[cut:] + opts
        if not args.input:
            parser.error("argument --input: expected at least one image before the overrides")
    args.opts = opts + list(args.flag_opts)
    del args.flag_opts
    return args


# --------------------------------------------------------------------------- configs and models
def _check_weights(path, key, config_file, override):
    """Raise unless the local checkpoint ``path`` exists (URLs are left to detectron2);
    ``override % path`` is how to give one on the command line."""
    if path and "://" not in path and not os.path.isfile(path):
        example, empty = override % "output/quickstart/model_final.pth", override % '""'
        raise DemoError(
            f"{key} '{path}' (of {config_file}) does not exist. Give the trained model at the end "
            f"of the command, e.g. {example} (or --model NAME=CONFIG:WEIGHTS), or {empty} to draw "
            "an untrained model's predictions.")


def _cpu_if_no_cuda(device, key):
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"{key} is '{device}' but CUDA is not available here: running on the CPU "
                       f"({key} cpu) instead.")
        return "cpu"
    return device


def _yaml_model(name, config_file, weights, opts, threshold):
    cfg = get_dcdc_cfg(config_file, opts)  # a bad override or key is a UserError there
    if weights is not None:
        cfg.MODEL.WEIGHTS = weights
    _check_weights(cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS", config_file, "MODEL.WEIGHTS %s")
    if not cfg.MODEL.WEIGHTS:
        logger.warning(f"MODEL.WEIGHTS of {config_file} is empty: drawing the predictions of an "
                       "untrained model.")
    cfg.MODEL.DEVICE = _cpu_if_no_cuda(cfg.MODEL.DEVICE, "MODEL.DEVICE")
    # One threshold for every kind of head, as in detectron2's demo.
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = threshold
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = threshold
    cfg.freeze()
    predictor = _load_weights(lambda: DefaultPredictor(cfg), cfg.MODEL.WEIGHTS)
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    return Model(name, predictor, metadata, names)


def _load_weights(build, weights):
    """``build()``, with a checkpoint that cannot be read or fetched reported as a DemoError."""
    try:
        return build()
    except (OSError, EOFError, pickle.UnpicklingError) as e:
        raise DemoError(f"Cannot load the weights '{weights}' ({type(e).__name__}: {e}).") \
            from None


class LazyPredictor:
    """detectron2's ``DefaultPredictor`` for a LazyConfig: ``instantiate(cfg.model)`` in eval mode
    on ``cfg.train.device`` with ``cfg.train.init_checkpoint`` loaded, the test-time
    augmentations of ``cfg.dataloader.test.mapper``; called on a BGR image, it returns the
    model's outputs for it."""

    def __init__(self, cfg):
        self.cfg = cfg
        try:
            self.model = instantiate(cfg.model)
        except TypeError as e:  # e.g. an override naming an argument that the model lacks
            if "unexpected keyword argument" not in str(e):
                raise
            raise DemoError(f"Cannot build the model: {e}. Check the config's and the "
                            "overrides' keys.") from None
        self.model.to(cfg.train.device)
        self.model.eval()
        # detectron2's DetectionCheckpointer, refusing weights of another architecture; the
        # training RNG states stored with the weights are left alone.
        checkpointer = DCDCCheckpointer(self.model)
        checkpointer.checkpointables.pop("rng", None)
        checkpointer.load(cfg.train.init_checkpoint)
        augs = OmegaConf.select(cfg, "dataloader.test.mapper.augmentations", default=None)
        augs = [instantiate(a) for a in augs] if augs else []
        self.aug = augs[0] if len(augs) == 1 else T.AugmentationList(augs)
        self.input_format = getattr(self.model, "input_format", None) or OmegaConf.select(
            cfg, "dataloader.test.mapper.image_format", default="BGR")

    def __call__(self, original_image):
        with torch.no_grad():
            if self.input_format == "RGB":
                original_image = original_image[:, :, ::-1]
            height, width = original_image.shape[:2]
            aug_input = T.AugInput(original_image)
            self.aug(aug_input)
            image = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
            image = image.to(self.cfg.train.device)
            return self.model([{"image": image, "height": height, "width": width}])[0]


def _set_lazy_score_threshold(node, threshold):
    """Set every score threshold of the model's LazyCalls (``test_score_thresh`` of box
    predictors / RetinaNet, ``combine_instances_score_thresh`` of PanopticFPN) to ``threshold``."""
    if isinstance(node, ListConfig):
        for item in node:
            _set_lazy_score_threshold(item, threshold)
        return
    if not isinstance(node, DictConfig):
        return
    target = node.get("_target_", None)
    params = {}
    if target is not None:
        try:
            params = inspect.signature(locate(target) if isinstance(target, str)
                                       else target).parameters
        except (TypeError, ValueError, ImportError):
            params = {}
    for key in ("test_score_thresh", "combine_instances_score_thresh"):
        if key in node or key in params:
            node[key] = threshold
    for key in node:
        if key != "_target_":
            try:
                child = node[key]
            except OmegaConfBaseException:  # a missing value or an unresolvable interpolation
                continue
            _set_lazy_score_threshold(child, threshold)


def _lazy_model(name, config_file, weights, opts, threshold):
    cfg = load_lazy_config(config_file, opts)  # a bad override or key is a UserError there
    if weights is not None:
        cfg.train.init_checkpoint = weights
    _check_weights(cfg.train.init_checkpoint, "train.init_checkpoint", config_file,
                   "train.init_checkpoint=%s")
    if not cfg.train.init_checkpoint:
        logger.warning(f"train.init_checkpoint of {config_file} is empty: drawing the predictions "
                       "of an untrained model.")
    cfg.train.device = _cpu_if_no_cuda(cfg.train.get("device", "cuda"), "train.device")
    _set_lazy_score_threshold(cfg.model, threshold)
    try:
        predictor = _load_weights(lambda: LazyPredictor(cfg), cfg.train.init_checkpoint)
    except ValueError as e:  # the checkpoint does not fit the model (check_state_fits)
        raise DemoError(str(e)) from None
    test = lazy_dataset_names(cfg, "dataloader.test.dataset.names")
    names = test + lazy_dataset_names(cfg, "dataloader.train.dataset.names")
    return Model(name, predictor, MetadataCatalog.get(test[0] if test else "__unused"), names)


def _config_loader(config_file, what):
    if not os.path.isfile(config_file):
        raise DemoError(f"{what} '{config_file}' does not exist (configs are in configs/, e.g. "
                        "configs/quickstart_panoptic_fpn_dcdc_shapes.yaml).")
    if config_file.endswith(".py"):
        return _lazy_model
    if config_file.endswith((".yaml", ".yml")):
        return _yaml_model
    raise DemoError(f"{what} must be a .yaml (detectron2 CfgNode) or .py (LazyConfig) file, got "
                    f"'{config_file}'.")


def load_model(name, config_file, weights, opts, threshold, what="--config-file"):
    """The :class:`Model` of a YAML or LazyConfig file, with ``weights`` (if not None) instead of
    the config's, ``opts`` applied, all score thresholds at ``threshold``, on the CPU where the
    config asks for CUDA and there is none."""
    return _config_loader(config_file, what)(name, config_file, weights, opts, threshold)


def _model_specs(args):
    """``[(name, config, weights), ...]`` of ``--config-file`` or the ``--model`` arguments,
    checked before anything is built."""
    if bool(args.config_file) == bool(args.model):
        raise DemoError("Give either --config-file (one model) or one or more --model "
                        "NAME=CONFIG[:WEIGHTS], not both and not neither.")
    if args.config_file:
        specs = [(None, args.config_file, None)]
    else:
        try:
            specs = [parse_model_spec(s) for s in args.model]
        except ValueError as e:
            raise DemoError(str(e)) from None
        names = [n for n, _, _ in specs]
        if len(set(names)) != len(names) or not all(names):
            raise DemoError(f"--model names must be distinct and not empty, got {names}.")
    for name, config_file, weights in specs:
        what = "--config-file" if name is None else f"The config of --model {name}"
        _config_loader(config_file, what)
        if weights is not None and "://" not in weights and not os.path.isfile(weights):
            raise DemoError(f"The weights '{weights}' of --model {name} do not exist.")
    return specs


# --------------------------------------------------------------------------------- input, output
def expand_inputs(patterns):
    """Files named or matched by ``patterns`` (globs), in order; a pattern matching nothing is kept
    as a path so that the caller reports it as unreadable."""
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        paths.extend(matches if matches else [pattern])
    return paths


def _extension(path):
    return os.path.splitext(path)[1].lower()


def check_image_output(output, num_inputs):
    """Raise unless ``output`` can hold the pictures of ``num_inputs`` images."""
    if os.path.isdir(output):
        return
    ext = _extension(output)
    if os.path.exists(output) and ext not in IMAGE_EXTENSIONS:
        raise DemoError(f"--output '{output}' is an existing file, not a folder: give a folder "
                        "for the drawn images (or, for one input, an image file name).")
    if ext in IMAGE_EXTENSIONS and num_inputs > 1:
        raise DemoError(f"--output '{output}' is a file name but {num_inputs} input images were "
                        "given: give a folder, e.g. --output output/demo (one <name>.png each).")
    if ext in VIDEO_CODECS:
        raise DemoError(f"--output '{output}' is a video file name; for --input images give a "
                        f"folder or an image file name ({', '.join(IMAGE_EXTENSIONS)}).")


def image_output_path(output, input_path, num_inputs):
    """``output`` itself for one input and an image file name, else ``<output>/<name>.png``
    (folders created)."""
    if not os.path.isdir(output) and num_inputs == 1 and _extension(output) in IMAGE_EXTENSIONS:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        return output
    os.makedirs(output, exist_ok=True)
    return os.path.join(output, os.path.splitext(os.path.basename(input_path))[0] + ".png")


def video_output_path(output, source_name):
    """``output`` for a video file name (.mp4, .mkv, .avi), else ``<output>/<source_name>.mp4``."""
    ext = _extension(output)
    if not os.path.isdir(output) and (ext or os.path.exists(output)):
        if ext not in VIDEO_CODECS:
            raise DemoError(f"--output '{output}' is not a video file name: give a .mp4, .mkv or "
                            ".avi file, or a folder (for <folder>/<video name>.mp4).")
        return output
    return os.path.join(output, os.path.splitext(source_name)[0] + DEFAULT_VIDEO_EXTENSION)


def display_problem():
    """Why ``cv2.imshow`` cannot show a window here, or None."""
    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if gui and gui.group(1).upper() == "NONE":
        return ("this OpenCV has no GUI support (cv2.imshow is unavailable, e.g. "
                "opencv-python-headless)")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display (DISPLAY is not set)"
    return None


def _quiet_opencv(open_fn):
    """``open_fn()`` with OpenCV's own warnings (e.g. of V4L2 probing cameras) silenced."""
    level = cv2.getLogLevel() if hasattr(cv2, "getLogLevel") else None
    if level is not None:
        cv2.setLogLevel(0)
    try:
        return open_fn()
    finally:
        if level is not None:
            cv2.setLogLevel(level)


def open_video(path):
    if not os.path.isfile(path):
        raise DemoError(f"--video-input '{path}' does not exist.")
    video = _quiet_opencv(lambda: cv2.VideoCapture(path))
    if not video.isOpened():
        raise DemoError(f"--video-input '{path}' cannot be opened as a video by OpenCV.")
    return video


def open_webcam(index=0):
    camera = _quiet_opencv(lambda: cv2.VideoCapture(index))
    if not camera.isOpened():
        raise DemoError(f"--webcam: no camera could be opened (OpenCV's VideoCapture({index}) "
                        "failed; is a camera connected, e.g. /dev/video0, and may this user read "
                        "it?). Use --video-input VIDEO or --input IMAGES instead.")
    return camera


class VideoOutput:
    """A ``cv2.VideoWriter`` opened on the first frame (whose size it takes)."""

    def __init__(self, path, fps):
        self.path = path
        self.fps = fps if fps and fps > 0 and fps == fps else 30.0
        self.writer = None

    def check(self):
        """Raise unless a video with this name can be written (before the models are built)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise DemoError(f"Cannot create the folder of --output '{self.path}': {e}.") from None
        name, ext = os.path.splitext(os.path.basename(self.path))
        probe = os.path.join(folder, f".{name}.probe-{os.getpid()}{ext}")
        try:
            self._open((16, 16), probe).release()
        finally:
            if os.path.exists(probe):
                os.remove(probe)

    def _open(self, size, path=None):
        path = path or self.path
        codec = VIDEO_CODECS[_extension(path)]
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), self.fps, size, True)
        if not writer.isOpened():
            raise DemoError(f"OpenCV cannot write the video '{self.path}' (codec {codec}); try "
                            f"another extension of --output ({', '.join(VIDEO_CODECS)}).")
        return writer

    def write(self, frame_bgr):
        # the encoders drop an odd last row / column: pad to even sizes instead
        pad_h, pad_w = frame_bgr.shape[0] % 2, frame_bgr.shape[1] % 2
        if pad_h or pad_w:
            frame_bgr = cv2.copyMakeBorder(frame_bgr, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        if self.writer is None:
            self.writer = self._open((frame_bgr.shape[1], frame_bgr.shape[0]))
        self.writer.write(frame_bgr)

    def release(self):
        if self.writer is not None:
            self.writer.release()


# ----------------------------------------------------------------------------------------- runs
def _close_window():
    try:
        cv2.destroyAllWindows()
    except cv2.error:
        pass


def _show(image_bgr, wait_ms):
    """Show in a window; False when Esc was pressed."""
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
        cv2.imshow(WINDOW_NAME, image_bgr)
        return cv2.waitKey(wait_ms) != 27
    except cv2.error as e:
        raise DemoError(f"Cannot show the results in a window ({' '.join(str(e).split())}). "
                        "Give --output PATH to write them to files instead.") from None


def run_on_images(args, models):
    inputs = expand_inputs(args.input)
    ground_truth = (ground_truth_index([d for m in models for d in m.dataset_names])
                    if args.model else {})
    failed = []
    for path in tqdm.tqdm(inputs, desc="demo", unit="img", disable=len(inputs) < 2):
        try:
            image = read_image(path, format="BGR")
        except Exception as e:  # missing, truncated, not an image: name it and go on
            logger.error(f"Cannot read image '{path}' ({type(e).__name__}: {e}); skipping it.")
            failed.append(path)
            continue
        start = time.time()
        rgb = image[:, :, ::-1]
        panels, counts = [], []
        if os.path.abspath(path) in ground_truth:
            dataset, record = ground_truth[os.path.abspath(path)]
            panels.append(("ground truth", draw_ground_truth(
                rgb, record, MetadataCatalog.get(dataset), args.scale)))
        for model in models:
            predictions = model.predictor(image)
            counts.append(len(predictions["instances"]) if "instances" in predictions else 0)
            panels.append((model.name, draw_predictions(rgb, predictions, model.metadata,
                                                        args.scale).get_image()))
        drawn = panels[0][1] if args.config_file else side_by_side(panels)
        summary = (f"{path}: {', '.join(map(str, counts))} instances in "
                   f"{time.time() - start:.2f}s")
        if args.output:
            out = image_output_path(args.output, path, len(inputs))
            cv2.imwrite(out, drawn[:, :, ::-1])
            logger.info(f"{summary} -> {out}")
        else:
            logger.info(summary)
            if not _show(drawn[:, :, ::-1], 0):
                break
    if not args.output:
        _close_window()
    if failed:
        logger.error(f"{len(failed)} of {len(inputs)} inputs could not be read: {failed}")
        return 1
    return 0


def _frames(capture):
    while capture.isOpened():
        ok, frame = capture.read()
        if not ok:
            break
        yield frame


def run_on_video(args, models, capture, output, total, source):
    """Draw every frame of ``capture`` with one ``VideoVisualizer`` per model (side by side for
    several), into ``output`` (a :class:`VideoOutput`) or a window; returns the exit status."""
    visualizers = [VideoVisualizer(m.metadata) for m in models]
    count, start = 0, time.time()
    try:
        frames = tqdm.tqdm(_frames(capture), total=total if total and total > 0 else None,
                           desc=source, unit="frame")
        for frame in frames:
            rgb = frame[:, :, ::-1]
            panels = [(m.name, draw_video_predictions(v, rgb, m.predictor(frame)).get_image())
                      for m, v in zip(models, visualizers)]
            drawn = panels[0][1] if len(panels) == 1 else side_by_side(panels)
            drawn = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
            count += 1
            if output is not None:
                output.write(drawn)
            elif not _show(drawn, 1):
                break
    except KeyboardInterrupt:
        logger.info(f"Stopped (Ctrl-C) after {count} frames.")
    finally:
        capture.release()
        if output is not None:
            output.release()
        else:
            _close_window()
    if count == 0:
        logger.error(f"No frame could be read from {source}.")
        return 1
    where = f" -> {output.path}" if output is not None else ""
    logger.info(f"{source}: {count} frames in {time.time() - start:.1f}s{where}")
    return 0


def _check_display(args):
    problem = display_problem()
    if not args.output and problem:
        raise DemoError(f"No --output was given, so the results would be shown in a window, but "
                        f"{problem}. Give --output PATH to write them to files instead.")


def main(argv=None):
    """Run the demo with the command-line arguments ``argv``; returns the exit status."""
    parser = get_parser()
    args = parse_args(argv, parser)
    setup_logger(name="fvcore")
    setup_logger(name="dcdc")
    logger.info("Arguments: " + str(args))
    try:
        return _main(args)
    except UserError as e:  # DemoError, and the package's checks (dcdc.utils.errors)
        return report_user_error("demo.py", e)


def _load_models(args, specs):
    return [load_model(name, config_file, weights, args.opts, args.confidence_threshold,
                       "--config-file" if name is None else f"The config of --model {name}")
            for name, config_file, weights in specs]


def _main(args):
    # Everything that can be checked cheaply is checked before any model is built.
    specs = _model_specs(args)
    _check_display(args)
    if args.input:
        if args.output:
            check_image_output(args.output, len(expand_inputs(args.input)))
        return run_on_images(args, _load_models(args, specs))

    source = os.path.basename(args.video_input) if args.video_input else "webcam"
    path = video_output_path(args.output, source) if args.output else None
    if path and args.video_input and os.path.abspath(path) == os.path.abspath(args.video_input):
        raise DemoError(f"--output '{path}' is the input video itself: give another name.")
    capture = open_video(args.video_input) if args.video_input else open_webcam()
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if args.video_input else None
        output = None
        if path:
            output = VideoOutput(path, capture.get(cv2.CAP_PROP_FPS))
            output.check()
        models = _load_models(args, specs)
    except BaseException:
        capture.release()
        raise
    return run_on_video(args, models, capture, output, total, source)
