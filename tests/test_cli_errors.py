"""User errors in the entry points (train_net.py, tools/*.py; demo.py: test_demo_cli.py): each is
one line, ``<prog>: error: <what was wrong and how to fix it>``, exit status 2, no traceback, with
advice for the mode (evaluation / training) and the config system (YAML keys / LazyConfig keys).

The scripts run as users run them (``runpy`` with ``__name__ == "__main__"``), all in one
subprocess: one start-up of torch and detectron2 for every case."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import REPO

INSTANT = str(REPO / "configs" / "quickstart_panoptic_fpn_dcdc_shapes_instant.yaml")
INSTANT_LAZY = str(REPO / "configs" / "quickstart_panoptic_fpn_dcdc_shapes_instant.py")
R50_LAZY = str(REPO / "configs" / "mask_rcnn_dcdc_r50.py")
R50_YAML = str(REPO / "configs" / "mask_rcnn_dcdc_r50.yaml")
SHAPES_LAZY = ["dataloader.train.dataset.names=shapes_mini_train",
               "dataloader.test.dataset.names=shapes_mini_val"]
SHAPES_YAML = ["DATASETS.TRAIN", "('shapes_mini_train',)", "DATASETS.TEST", "('shapes_mini_val',)"]
NUM_CASES = 24  # len(_cases(...)), checked by test_every_case_is_tested

# Runs each [script, argv] in this process as `python script argv` would; writes
# [{"code": exit status, "stderr": ...}] as JSON to sys.argv[2].
DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback, warnings
warnings.simplefilter("ignore")  # library warnings at import time are not the tools' messages
import dcdc, detectron2.engine  # noqa: F401  imported before the first case's capture
cases, output, results = json.loads(sys.argv[1]), sys.argv[2], []
for script, argv in cases:
    err = io.StringIO()
    sys.argv = [script, *argv]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = "raised"
    results.append({"code": code, "stderr": err.getvalue()})
with open(output, "w") as f:
    json.dump(results, f)
"""


def _cases(tmp):
    image = str(tmp / "image.png")
    cv2.imwrite(image, np.full((48, 64, 3), 120, np.uint8))
    os.makedirs(tmp / "images", exist_ok=True)
    cv2.imwrite(str(tmp / "images" / "a.png"), np.full((48, 64, 3), 120, np.uint8))
    (tmp / "corrupt.jpg").write_bytes(b"this is not a JPEG")
    (tmp / "a_file").write_text("")
    os.makedirs(tmp / "empty", exist_ok=True)
    train_net, tools = str(REPO / "train_net.py"), REPO / "tools"

    def tool(name):
        return str(tools / name)

    # (script, argv, expected in the message, not expected in the message)
    return [
        # train_net.py: evaluation advice for --eval-only, YAML or LazyConfig keys
        (train_net, ["--config-file", INSTANT, "--eval-only", "MODEL.WEIGHTS", "missing.pth"],
         ["MODEL.WEIGHTS 'missing.pth' does not exist", "--eval-only evaluates a trained model",
          "MODEL.WEIGHTS output/model_final.pth"], ["convert_classifier", "train.", "FrozenBN"]),
        (train_net, ["--config-file", INSTANT_LAZY, "--eval-only",
                     "train.init_checkpoint=missing.pth"],
         ["train.init_checkpoint 'missing.pth' does not exist",
          "train.init_checkpoint=output/model_final.pth"], ["MODEL.", "convert_classifier"]),
        # training advice: convert the ImageNet weights, or from scratch in that system's keys
        (train_net, ["--config-file", R50_LAZY, *SHAPES_LAZY],
         ["train.init_checkpoint 'pretrained/DCDC-R50.pkl' does not exist",
          "tools/convert_classifier_to_d2.py CLASSIFIER.pth pretrained/DCDC-R50.pkl",
          'train.init_checkpoint=""', "model.backbone.bottom_up.stages.norm=BN",
          "model.backbone.bottom_up.freeze_at=0"], ["MODEL.", "--eval-only"]),
        (train_net, ["--config-file", R50_YAML, *SHAPES_YAML],
         ["MODEL.WEIGHTS 'pretrained/DCDC-R50.pkl' does not exist", 'MODEL.WEIGHTS ""',
          "MODEL.RESNETS.NORM BN", "MODEL.BACKBONE.FREEZE_AT 0"], ["train.", "model."]),
        (train_net, ["--config-file", "configs/nope.py"],
         ["Config file 'configs/nope.py' does not exist"], []),
        (train_net, ["--config-file", INSTANT, "MODEL.DCDC.OPRATOR", "lsa"],
         ["MODEL.DCDC.OPRATOR", "Did you mean MODEL.DCDC.OPERATOR"], []),
        (train_net, ["--config-file", INSTANT_LAZY, "MODEL.WEIGHTS", "x.pth"],
         ["Overrides of a LazyConfig are key=value"], []),
        (train_net, ["--config-file", INSTANT, "SOLVER.MAX_ITER", "many"],
         ["Cannot apply the overrides", "Type mismatch"], []),
        # tools/export_model.py
        (tool("export_model.py"), ["--config-file", INSTANT, "--output", str(tmp / "a_file")],
         ["--output", "is an existing file, not a folder"], []),
        (tool("export_model.py"), ["--config-file", INSTANT, "--output", str(tmp / "export"),
                                   "--sample-image", str(tmp / "corrupt.jpg")],
         ["--sample-image", "cannot be read as an image"], []),
        (tool("export_model.py"), ["--config-file", INSTANT, "--output", str(tmp / "export"),
                                   "SOLVER.MAX_ITR", "3"],
         ["Did you mean SOLVER.MAX_ITER"], []),
        # tools/visualize_kernels.py
        (tool("visualize_kernels.py"), ["--config-file", INSTANT, "--input", image, "--output",
                                        str(tmp / "k.png"), "--opts", "MODEL.WEIGHTS", "no.pth"],
         ["MODEL.WEIGHTS 'no.pth' does not exist"], []),
        (tool("visualize_kernels.py"), ["--config-file", INSTANT, "--input",
                                        str(tmp / "corrupt.jpg"), "--output", str(tmp / "k.png")],
         ["Cannot read image"], []),
        (tool("visualize_kernels.py"), ["--config-file", "nope.yaml", "--input", image,
                                        "--output", str(tmp / "k.png")],
         ["Config file 'nope.yaml' does not exist"], []),
        # tools/grad_cam.py, tools/train_classifier.py, tools/convert_classifier_to_d2.py
        (tool("grad_cam.py"), ["--model", "dcdc_resnt26", "--images", str(tmp / "images")],
         ["'dcdc_resnt26' is not a timm model", "did you mean dcdc_resnet26"], []),
        (tool("grad_cam.py"), ["--model", "dcdc_resnet26=no.pth", "--images", str(tmp / "images")],
         ["checkpoint no.pth of --model dcdc_resnet26=no.pth not found"], []),
        (tool("train_classifier.py"), ["--model", "dcdc_resnt26", "--output", str(tmp / "cls")],
         ["'dcdc_resnt26' is not a timm model"], []),
        (tool("train_classifier.py"), ["--data-dir", str(tmp / "empty"), "--output",
                                       str(tmp / "cls")],
         ["--data-dir must hold ImageFolder splits"], []),
        (tool("train_classifier.py"), ["--resume", "no.pth", "--eval-only"],
         ["--resume 'no.pth' does not exist"], []),
        (tool("convert_classifier_to_d2.py"), ["no.pth", str(tmp / "out.pkl")],
         ["no.pth does not exist"], []),
        # tools/run_demo.py, tools/compare_operators.py
        (tool("run_demo.py"), ["--config-file", "nope.yaml"],
         ["Config file 'nope.yaml' does not exist"], []),
        (tool("run_demo.py"), ["--config-file", INSTANT, "--skip-train", "--output-dir",
                               str(tmp / "empty")],
         ["metrics.json is missing", "--skip-train"], []),
        (tool("compare_operators.py"), ["--config-file", INSTANT, "--dry-run", "--max-iter", "2",
                                        "--output-dir", str(tmp / "compare")],
         ["--max-iter must be at least 4"], []),
        (tool("compare_operators.py"), ["--config-file", INSTANT, "--dry-run", "SOLVER.MAX_ITR",
                                        "3", "--output-dir", str(tmp / "compare")],
         ["Did you mean SOLVER.MAX_ITER"], []),
    ]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_errors")
    cases = _cases(tmp)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "DETECTRON2_DATASETS": str(tmp / "datasets")}
    out = tmp / "results.json"
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([c[:2] for c in cases]),
                           str(out)], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return list(zip(cases, json.loads(out.read_text())))


@pytest.mark.parametrize("index", range(NUM_CASES))
def test_user_error_is_one_line_exit_2_no_traceback(results, index):
    (script, argv, expected, unexpected), result = results[index]
    prog = os.path.basename(script)
    err = result["stderr"]
    where = f"{prog} {' '.join(argv)}:\n{err[-3000:]}"
    assert result["code"] == 2, where
    assert "Traceback" not in err, where
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), where
    for text in expected:
        assert text in lines[0], (text, where)
    for text in unexpected:
        assert text not in lines[0], (text, where)


def test_every_case_is_tested(results):
    assert len(results) == NUM_CASES
