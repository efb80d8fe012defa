"""dcdc.modeling.classifier_to_d2 / tools/convert_classifier_to_d2.py: every classifier variant
of the paper's tables converts into weights that fill its detectron2 backbone, explicit
--depth / --operator are used as given, and a checkpoint that does not fill the backbone is
refused without leaving a file."""
import os
import subprocess
import sys

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer

from dcdc.modeling import build_classifier
from dcdc.layers.variants import variant as variant_of
from dcdc.modeling.classifier_to_d2 import (
    VARIANT_NAMES,
    ConversionError,
    convert_checkpoint,
    infer_architecture,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _variant_model(name, num_classes=10, **kwargs):
    v = variant_of(name)
    if v.name != v.operator:  # Table III's global-branch ablations of DCDC
        kwargs["global_branch"] = v.global_branch
    return build_classifier(26, v.operator, num_classes=num_classes, **kwargs)


def _save(model, path):
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    return str(path)


@pytest.mark.parametrize("variant", sorted(VARIANT_NAMES))
def test_every_variant_round_trips_into_its_backbone(tmp_path, variant):
    torch.manual_seed(0)
    classifier = _variant_model(variant)
    src, dst = _save(classifier, tmp_path / "cls.pth"), str(tmp_path / "out" / "d2.pkl")
    depth, operator, kwargs, _, report = convert_checkpoint(src, dst)
    assert (depth, operator) == (26, variant_of(variant).operator)
    assert report["dropped"] == ["linear.weight", "linear.bias"]

    torch.manual_seed(1)  # another initialisation: only the loaded file can make them equal
    backbone = _variant_model(variant, num_classes=None)
    incompatible = DetectionCheckpointer(backbone)._load_model(
        DetectionCheckpointer(backbone)._load_file(dst))
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    reference = classifier.state_dict()
    loaded = backbone.state_dict()
    assert set(loaded) == {k for k in reference if not k.startswith("linear.")}
    for k, v in loaded.items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(v, reference[k], rtol=0, atol=0, msg=k)
    assert os.listdir(tmp_path / "out") == ["d2.pkl"]  # no temporary file left


def test_conv_large_is_identified_by_its_global_conv():
    """A Conv_large checkpoint has ``conv2.global_conv.weight`` (not ``gsi``); one whose
    tensors match no variant is refused instead of being guessed."""
    sd = _variant_model("conv_large").state_dict()
    assert "res2.0.conv2.global_conv.weight" in sd and not any(".gsi." in k for k in sd)
    renamed = {k.replace(".global_conv.", ".gsi."): v for k, v in sd.items()}
    with pytest.raises(ConversionError, match="match none of the variants"):
        infer_architecture(renamed)


def test_ablation_hyperparameters_are_inferred():
    sd = _variant_model("dcdc", dw_kernel_size=5, gsi_kernel_size=3, gsi_scale=1.5).state_dict()
    assert infer_architecture(sd) == (
        26, "dcdc", {"dw_kernel_size": 5, "gsi_kernel_size": 3, "gsi_scale": 1.5})
    sd = _variant_model("conv_small", gsi_scale=2.0).state_dict()
    assert infer_architecture(sd) == (
        26, "dcdc", {"global_branch": "conv_small", "dw_kernel_size": 3, "gsi_scale": 2.0})
    assert infer_architecture(_variant_model("conv_large").state_dict()) == (
        26, "dcdc", {"global_branch": "conv_large", "dw_kernel_size": 3})


def test_explicit_architecture_is_used_and_a_mismatch_refused(tmp_path):
    src = _save(_variant_model("lsa"), tmp_path / "lsa.pth")
    ok = tmp_path / "ok.pkl"
    assert convert_checkpoint(src, str(ok), depth=26, variant="lsa")[:2] == (26, "lsa")
    # The explicit choice is not silently replaced by the inferred one: each is refused.
    for depth, variant, message in [(50, None, "MISSING from the checkpoint: res2.1.conv1.weight"),
                                    (None, "involution", "NOT IN THE BACKBONE"),
                                    (None, "dcdc", "not a dcdc classifier"),
                                    (None, "conv_large", "MISSING from the checkpoint")]:
        out = tmp_path / f"refused_{depth}_{variant}.pkl"
        with pytest.raises(ConversionError, match=message):
            convert_checkpoint(src, str(out), depth=depth, variant=variant)
        assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["lsa.pth", "ok.pkl"]


def test_tool_refuses_a_partial_model_and_writes_nothing(tmp_path):
    """A global-branch ablation whose gsi.* tensors were lost must not pass as LSA-only."""
    sd = {k: v for k, v in _variant_model("conv_small").state_dict().items()
          if ".gsi." not in k or not k.startswith("res5.")}
    src = str(tmp_path / "partial.pth")
    torch.save(sd, src)
    out = tmp_path / "out.pkl"
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_classifier_to_d2.py"),
                          src, str(out)], capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Not written" in run.stderr and "MISSING from the checkpoint: res5.0.conv2.gsi" in run.stderr
    assert not out.exists() and os.listdir(tmp_path) == ["partial.pth"]
