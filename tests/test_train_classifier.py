"""tools/train_classifier.py (dcdc.engine.classifier_training, dcdc.data.classification): the built-in data cutter, top-k evaluation, train + resume, DDP."""
import csv
import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("timm")
from dcdc.data.classification import cut_coco_objects  # noqa: E402
from dcdc.engine import classifier_training as tc  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "train_classifier.py")



def _write_coco(root):
    """Two 80x80 images: a red square, a blue disc at the border, a crowd box and a sliver."""
    os.makedirs(os.path.join(root, "img"))
    a = np.full((80, 80, 3), 255, np.uint8)
    a[10:40, 20:50] = (0, 0, 255)  # BGR red square, box (20, 10, 30, 30)
    b = np.full((80, 80, 3), 255, np.uint8)
    cv2.circle(b, (70, 40), 10, (255, 0, 0), -1)  # blue disc touching the right border
    cv2.imwrite(os.path.join(root, "img", "a.png"), a)
    cv2.imwrite(os.path.join(root, "img", "b.png"), b)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 80, "width": 80},
                   {"id": 2, "file_name": "b.png", "height": 80, "width": 80}],
        "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "circle"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [20, 10, 30, 30],
             "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [60, 30, 20, 20],
             "area": 314, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 30, 30],
             "area": 900, "iscrowd": 1},
            {"id": 4, "image_id": 1, "category_id": 3, "bbox": [0, 70, 40, 4],
             "area": 160, "iscrowd": 0},
        ],
    }
    with open(os.path.join(root, "instances.json"), "w") as f:
        json.dump(coco, f)
    return os.path.join(root, "instances.json"), os.path.join(root, "img")


def test_cut_coco_objects(tmp_path):
    instances, images = _write_coco(str(tmp_path))
    out = str(tmp_path / "cls")
    counts = cut_coco_objects(instances, images, out, size=32, context=1.25)
    assert counts == {"square": 1, "circle": 1}  # the crowd box and the 4 px sliver are skipped
    square = cv2.imread(os.path.join(out, "square", "000001_0000001.png"))
    circle = cv2.imread(os.path.join(out, "circle", "000002_0000002.png"))
    assert square.shape == circle.shape == (32, 32, 3)
    # Centred on the object, with 1.25x context: red middle, white corners.
    assert tuple(square[16, 16]) == (0, 0, 255) and tuple(square[1, 1]) == (255, 255, 255)
    assert tuple(circle[16, 16]) == (255, 0, 0)
    # The disc touches the right border: the crop is padded by replicating the edge column.
    assert tuple(circle[16, 30]) == (255, 0, 0)


def test_cut_the_generated_shapes_files(tmp_path):
    shapes = pytest.importorskip("dcdc.data.shapes")
    root = str(tmp_path / "shapes")
    spec = shapes.ShapesSplit("train", num_images=4, image_size=64, seed=3)
    shapes.generate_shapes_split(root, spec)
    with open(os.path.join(root, "annotations", "instances_train.json")) as f:
        anns = json.load(f)["annotations"]
    kept = [a for a in anns if min(a["bbox"][2:]) >= 8 and a["area"] >= 64]
    counts = cut_coco_objects(os.path.join(root, "annotations", "instances_train.json"),
                                 os.path.join(root, "train"), str(tmp_path / "cls"), size=24)
    assert sorted(counts) == sorted(shapes.THING_CLASSES)
    assert sum(counts.values()) == len(kept) > 0
    for name, n in counts.items():
        assert len(os.listdir(tmp_path / "cls" / name)) == n


def test_evaluate_topk_on_a_fixed_set():
    # The "images" are the logits themselves; the model passes them through.
    logits = torch.tensor([
        [5.0, 4, 3, 2, 1, 0],   # target 0: top-1
        [5.0, 4, 3, 2, 1, 0],   # target 1: top-2
        [5.0, 4, 3, 2, 1, 0],   # target 4: top-5
        [5.0, 4, 3, 2, 1, 0],   # target 5: miss
        [0.0, 0, 9, 0, 0, 0],   # target 2: top-1
    ])
    targets = torch.tensor([0, 1, 4, 5, 2])
    loader = [(logits[:3], targets[:3]), (logits[3:], targets[3:])]  # uneven batches
    m = tc.evaluate(torch.nn.Identity(), loader, torch.device("cpu"))
    assert m["samples"] == 5
    assert m["top1"] == pytest.approx(40.0) and m["top5"] == pytest.approx(80.0)
    assert m["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item())
    # With fewer classes than 5, top-5 is clipped to top-2 here: 3 of 4 hit.
    m2 = tc.evaluate(torch.nn.Identity(), [(logits[:4, :2], torch.tensor([0, 1, 1, 0]))],
                     torch.device("cpu"))
    assert m2["top1"] == pytest.approx(50.0) and m2["top5"] == pytest.approx(100.0)


def _image_folder(root, per_class=6, size=24):
    """Two trivially separable classes (dark / bright images), train and val."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name, level in (("dark", 40), ("bright", 215)):
            os.makedirs(os.path.join(root, split, name))
            for i in range(per_class):
                img = np.clip(level + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(os.path.join(root, split, name, f"{i}.png"), img)
    return root


def _args(data, out, *extra):
    return ["--data-dir", data, "--output", out, "--model", "rednet26", "--img-size", "32",
            "--batch-size", "4", "--workers", "0", "--iters-per-epoch", "2", "--log-interval", "1",
            "--warmup-epochs", "1", *extra]


def test_train_few_iterations_then_resume(tmp_path):
    data, out = _image_folder(str(tmp_path / "data")), str(tmp_path / "out")
    tc.main(_args(data, out, "--epochs", "1"))
    last = torch.load(os.path.join(out, "last.pth.tar"), map_location="cpu", weights_only=False)
    assert last["epoch"] == 0 and last["arch"] == "rednet26"
    expected = tc.timm.create_model("rednet26", num_classes=2).state_dict()
    assert set(last["state_dict"]) == set(expected)
    assert last["optimizer"]["state"], "SGD momentum buffers are saved"

    metrics = tc.main(_args(data, out, "--epochs", "2", "--resume", "auto"))
    resumed = torch.load(os.path.join(out, "last.pth.tar"), map_location="cpu", weights_only=False)
    assert resumed["epoch"] == 1  # continued with the second epoch, not from scratch
    with open(os.path.join(out, "summary.csv")) as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]
    changed = [k for k, v in resumed["state_dict"].items()
               if v.is_floating_point() and not torch.equal(v, last["state_dict"][k])]
    assert changed, "the resumed epoch trained the weights"
    # The tensors-only export (converter input) holds the final weights.
    final = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
    for key, value in resumed["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key
    assert final["data_config"] == {"img_size": 32, "crop_pct": 0.875}  # what grad_cam.py uses
    # Evaluating the saved weights reproduces the metric logged when they were saved.
    again = tc.main(_args(data, out, "--eval-only", "--resume", os.path.join(out, "last.pth.tar")))
    assert again["top1"] == pytest.approx(metrics["top1"]) and again["samples"] == 12
    assert resumed["metric"] == pytest.approx(metrics["top1"])


def test_bad_data_dir_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageFolder splits"):
        tc.main(["--data-dir", str(tmp_path), "--output", str(tmp_path / "o")])


def test_torchrun_two_processes(tmp_path):
    """DDP on CPU (gloo): two processes, each with half of the batch, one checkpoint."""
    data, out = _image_folder(str(tmp_path / "data")), str(tmp_path / "out")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           TOOL, *_args(data, out, "--epochs", "1", "--iters-per-epoch", "1")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    # Own process group, so that a hang kills torchrun's workers too, not only torchrun.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail("torchrun timed out:\n" + stdout[-3000:] + stderr[-3000:])
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "2 process(es)" in stdout
    assert os.path.isfile(os.path.join(out, "last.pth.tar"))


def test_shapes_recipe_learns(tmp_path):
    """The built-in recipe really learns: 4 epochs (96 iterations, ~50 s) on the ~780 crops of
    200 generated shapes images take the 4-class val top-1 well above chance (25%; measured 67%,
    the full default run reaches ~93%). Guards the recipe (AdamW, no RandomResizedCrop), whose
    earlier SGD + crop version stayed near chance."""
    shapes = pytest.importorskip("dcdc.data.shapes")
    root, data = str(tmp_path / "shapes"), str(tmp_path / "cls")
    for split, num_images, seed in (("train", 200, 11), ("val", 40, 12)):
        shapes.generate_shapes_split(root, shapes.ShapesSplit(split, num_images, seed=seed))
        cut_coco_objects(os.path.join(root, "annotations", f"instances_{split}.json"),
                            os.path.join(root, split), os.path.join(data, split))
    metrics = tc.main(["--data-dir", data, "--recipe", "shapes", "--output", str(tmp_path / "o"),
                       "--epochs", "4", "--warmup-epochs", "0",
                       "--workers", "0", "--log-interval", "25"])
    assert metrics["samples"] > 100
    assert metrics["top1"] >= 50.0, metrics  # chance + 7 standard deviations at 154 images
