"""The main job end to end on the mini shapes splits: a few iterations of train_net.py ->
detectron2's evaluators -> curves, ground truth | prediction pictures, kernel picture; then
demo.py (images with the YAML config, a video with the LazyConfig twin) and
tools/visualize_kernels.py on the trained checkpoint."""
import json
import os
import subprocess
import sys

import pytest

from dcdc.engine.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(REPO, "configs", "quickstart_panoptic_fpn_dcdc_shapes_instant.yaml")
INSTANT_LAZY = os.path.join(REPO, "configs", "quickstart_panoptic_fpn_dcdc_shapes_instant.py")


def _run(args, env, timeout=240):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "DETECTRON2_DATASETS": str(tmp_path_factory.mktemp("datasets")),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("quickstart"))
    proc = _run(["tools/run_demo.py", "--config-file", INSTANT, "--output-dir", out,
                 "--num-vis", "2", "SOLVER.MAX_ITER", "3", "TEST.EVAL_PERIOD", "3"], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_run_demo_writes_everything(trained, env):
    out, proc = trained
    for name in ("metrics.json", "model_final.pth", "curves.png", "predictions.png",
                 "kernels_res3.png", "summary.json", "log.txt"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert sorted(os.listdir(os.path.join(out, "predictions"))) == ["000001.png", "000002.png"]
    # detectron2's evaluators ran on the panoptic val split and their results reached metrics.json
    records = read_metrics(os.path.join(out, "metrics.json"))
    final = [r for r in records if "panoptic_seg/PQ" in r][-1]
    assert final["iteration"] == 3  # the final evaluation, after the last of 3 iterations
    for key in ("bbox/AP", "segm/AP", "panoptic_seg/PQ", "sem_seg/mIoU"):
        assert key in final and final[key] == final[key], key  # present and not NaN
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert set(summary["targets"]) == {"bbox/AP", "segm/AP", "panoptic_seg/PQ"}
    assert summary["final_evaluation"]["panoptic_seg/PQ"] == round(final["panoptic_seg/PQ"], 2)
    # the data came from the generator, under the temporary DETECTRON2_DATASETS
    assert os.path.isfile(os.path.join(env["DETECTRON2_DATASETS"], "shapes", "annotations",
                                       "panoptic_mini_val.json"))
    assert "Final evaluation: bbox/AP" in proc.stdout + proc.stderr


def test_demo_draws_and_skips_unreadable(trained, env, tmp_path):
    out, _ = trained
    images = os.path.join(env["DETECTRON2_DATASETS"], "shapes", "mini_val")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG")
    dest = tmp_path / "drawn"
    proc = _run(["demo.py", "--config-file", INSTANT,
                 "--input", os.path.join(images, "00000[12].jpg"), str(bad),
                 "--output", str(dest), "--confidence-threshold", "0.3",
                 "--opts", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")], env)
    assert proc.returncode == 1, proc.stderr[-3000:]  # one input failed, the others were drawn
    assert sorted(os.listdir(dest)) == ["000001.png", "000002.png"]
    assert "broken.jpg" in proc.stdout + proc.stderr
    import cv2

    drawn = cv2.imread(str(dest / "000001.png"))
    assert drawn is not None and drawn.shape[:2] == (128, 128)


def test_demo_single_file_output(trained, env, tmp_path):
    out, _ = trained
    image = os.path.join(env["DETECTRON2_DATASETS"], "shapes", "mini_val", "000003.jpg")
    dest = tmp_path / "one.png"
    proc = _run(["demo.py", "--config-file", INSTANT, "--input", image, "--output", str(dest),
                 "--opts", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert dest.stat().st_size > 0


def _video_frames(path):
    import cv2

    video = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    video.release()
    return frames


def test_demo_video_with_lazy_config(trained, env, tmp_path):
    """--video-input, a LazyConfig with its weights as a trailing override, and train.device cuda
    (falling back to the CPU here): the output video has every frame, at the input's size, drawn
    on."""
    import cv2
    import numpy as np
    import torch

    out, _ = trained
    image = cv2.imread(os.path.join(env["DETECTRON2_DATASETS"], "shapes", "mini_val",
                                    "000001.jpg"))
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0,
                             (image.shape[1], image.shape[0]))
    for i in range(6):
        writer.write(np.roll(image, 6 * i, axis=1))
    writer.release()
    inputs = _video_frames(clip)
    assert len(inputs) == 6
    dest = tmp_path / "drawn"
    proc = _run(["demo.py", "--config-file", INSTANT_LAZY, "--video-input", str(clip),
                 "--output", str(dest), "--confidence-threshold", "0",
                 f"train.init_checkpoint={os.path.join(out, 'model_final.pth')}",
                 "train.device=cuda"], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    if not torch.cuda.is_available():
        assert "train.device is 'cuda' but CUDA is not available" in proc.stdout + proc.stderr
    assert "Some model parameters or buffers are not found" not in proc.stdout + proc.stderr
    assert os.listdir(dest) == ["clip.mp4"]  # <output folder>/<video name>.mp4
    drawn = _video_frames(dest / "clip.mp4")
    assert len(drawn) == 6 and drawn[0].shape == image.shape
    for before, after in zip(inputs, drawn):
        # the segments' colours cover much of each frame (re-encoding alone changes no pixel by
        # more than 40 levels)
        changed = np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 40
        assert changed.mean() > 0.2, changed.mean()


def test_demo_missing_weights_is_one_message(env, tmp_path):
    """A user error from the entry point: one line on stderr, exit status 2, no traceback (the
    other user errors are checked in-process in test_demo_cli.py)."""
    proc = _run(["demo.py", "--config-file", INSTANT, "--input", "x.jpg", "--output",
                 str(tmp_path), "MODEL.WEIGHTS", "missing/model_final.pth"], env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "demo.py: error: MODEL.WEIGHTS 'missing/model_final.pth' (of " + INSTANT + ") does not "
        "exist. Give the trained model at the end of the command, e.g. MODEL.WEIGHTS "
        "output/quickstart/model_final.pth (or --model NAME=CONFIG:WEIGHTS), or MODEL.WEIGHTS \"\" "
        "to draw an untrained model's predictions.")


def test_visualize_kernels_png(trained, env, tmp_path):
    out, _ = trained
    image = os.path.join(env["DETECTRON2_DATASETS"], "shapes", "mini_val", "000001.jpg")
    dest = tmp_path / "k.png"
    args = ["tools/visualize_kernels.py", "--config-file", INSTANT, "--input", image,
            "--output", str(dest), "--stage", "res2", "--num-positions", "3", "--group", "0",
            "--opts", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")]
    proc = _run(args, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import cv2

    assert cv2.imread(str(dest)) is not None
    bad_args = list(args)
    bad_args[bad_args.index("--stage") + 1] = "res9"
    bad = _run(bad_args, env)
    assert bad.returncode != 0 and "--stage must be" in bad.stderr
