"""demo.py's command line (dcdc.demo.main, in this process: no model is trained or loaded except
for the CUDA fallback, on a randomly initialised quickstart model): overrides given last or after
--opts, mutually exclusive inputs, and every user error as one message, exit status 2, no
traceback. The runs on a trained model are in test_demo_quickstart.py."""
import logging
import os

import cv2
import numpy as np
import pytest
import torch

from dcdc import demo
from helpers import REPO

INSTANT = str(REPO / "configs" / "quickstart_panoptic_fpn_dcdc_shapes_instant.yaml")
INSTANT_LAZY = str(REPO / "configs" / "quickstart_panoptic_fpn_dcdc_shapes_instant.py")


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch):
    """detectron2's setup_logger would stop the "dcdc" loggers propagating for the rest of the
    session (other tests read them with caplog)."""
    monkeypatch.setattr(demo, "setup_logger", lambda *a, **k: None)


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(2):
        image = np.full((64, 80, 3), 200, np.uint8)
        cv2.rectangle(image, (10 + 5 * i, 10), (50, 40), (0, 0, 255), -1)
        paths.append(str(tmp_path / f"in{i}.png"))
        cv2.imwrite(paths[-1], image)
    return paths


def _error(capsys, argv):
    """The one-line message of a user error, after checking the exit status."""
    status = demo.main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("demo.py: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv,expected", [
    (["--input", "a.jpg", "b.jpg", "MODEL.WEIGHTS", "w.pth"],
     (["a.jpg", "b.jpg"], ["MODEL.WEIGHTS", "w.pth"])),
    (["--input", "a.jpg", "--output", "o", "MODEL.WEIGHTS", "w.pth", "--opts", "MODEL.DEVICE",
      "cpu"], (["a.jpg"], ["MODEL.WEIGHTS", "w.pth", "MODEL.DEVICE", "cpu"])),
    (["--input", "a.jpg", "--opts", "MODEL.WEIGHTS", "w.pth"],
     (["a.jpg"], ["MODEL.WEIGHTS", "w.pth"])),
    (["--input", "a.jpg", "--", "MODEL.WEIGHTS", "w.pth"], (["a.jpg"], ["MODEL.WEIGHTS", "w.pth"])),
    (["--input", "a.jpg", "train.init_checkpoint=w.pth"],
     (["a.jpg"], ["train.init_checkpoint=w.pth"])),
    (["--video-input", "v.mp4", "train.init_checkpoint=w.pth"],
     (None, ["train.init_checkpoint=w.pth"])),
])
def test_overrides_last_or_after_opts(argv, expected):
    args = demo.parse_args(["--config-file", "c.yaml", *argv])
    assert (args.input, args.opts) == expected


def test_one_of_input_video_webcam(capsys):
    for argv in (["--config-file", INSTANT],
                 ["--config-file", INSTANT, "--input", "a.jpg", "--video-input", "v.mp4"],
                 ["--config-file", INSTANT, "--video-input", "v.mp4", "--webcam"]):
        with pytest.raises(SystemExit) as e:
            demo.parse_args(argv)
        assert e.value.code == 2
    assert "one of the arguments --input --video-input --webcam is required" in \
        capsys.readouterr().err


def test_user_errors_are_one_message(capsys, images, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    msg = _error(capsys, ["--config-file", "configs/nope.yaml", "--input", images[0],
                          "--output", out])
    assert "--config-file 'configs/nope.yaml' does not exist" in msg
    msg = _error(capsys, ["--config-file", INSTANT, "--input", images[0], "--output", out,
                          "MODEL.WEIGHTS", "missing/model_final.pth"])
    assert "MODEL.WEIGHTS 'missing/model_final.pth'" in msg and "does not exist" in msg
    msg = _error(capsys, ["--config-file", INSTANT_LAZY, "--input", images[0], "--output", out,
                          "train.init_checkpoint=missing/model_final.pth"])
    assert "train.init_checkpoint 'missing/model_final.pth'" in msg and "does not exist" in msg
    msg = _error(capsys, ["--config-file", INSTANT, "--input", *images,
                          "--output", str(tmp_path / "one.png")])
    assert "is a file name but 2 input images were given: give a folder" in msg
    assert not os.path.exists(tmp_path / "one.png")
    msg = _error(capsys, ["--config-file", INSTANT, "--input", str(tmp_path / "in*.png"),
                          "--output", str(tmp_path / "one.png")])  # a glob matching two files
    assert "2 input images" in msg
    msg = _error(capsys, ["--model", f"a={INSTANT}:missing.pth", "--input", images[0],
                          "--output", out])
    assert "The weights 'missing.pth' of --model a do not exist" in msg
    msg = _error(capsys, ["--config-file", INSTANT, "--video-input", str(tmp_path / "no.mp4"),
                          "--output", out])
    assert "--video-input" in msg and "does not exist" in msg
    msg = _error(capsys, ["--config-file", INSTANT, "--input", images[0], "--output", out,
                          "MODEL.NOT_A_KEY", "1"])
    assert "MODEL.NOT_A_KEY" in msg
    # no --output: a window, which needs a display
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    msg = _error(capsys, ["--config-file", INSTANT, "--input", images[0]])
    assert "No --output was given" in msg and "Give --output" in msg
    assert not os.path.exists(out)


def test_webcam_without_camera(capsys, tmp_path):
    camera = cv2.VideoCapture(0)
    if camera.isOpened():
        camera.release()
        pytest.skip("this machine has a camera")
    msg = _error(capsys, ["--config-file", INSTANT, "--webcam",
                          "--output", str(tmp_path / "cam.mp4")])
    assert "--webcam: no camera could be opened" in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available: nothing to fall back")
def test_cuda_config_falls_back_to_cpu(images, tmp_path, caplog):
    out = tmp_path / "drawn.png"
    with caplog.at_level(logging.WARNING, logger="dcdc.demo"):
        status = demo.main(["--config-file", INSTANT, "--input", images[0], "--output", str(out),
                            "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cuda"])
    assert status == 0
    warnings = [r.getMessage() for r in caplog.records if "CUDA is not available" in r.getMessage()]
    assert warnings == ["MODEL.DEVICE is 'cuda' but CUDA is not available here: running on the "
                        "CPU (MODEL.DEVICE cpu) instead."]
    drawn = cv2.imread(str(out))
    assert drawn is not None and drawn.shape == (64, 80, 3)
