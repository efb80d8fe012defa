"""DCDC-ResNet classifiers: the paper's parameter counts, and every variant trains."""
import subprocess
import sys

import pytest
import torch

from dcdc.modeling import build_classifier
from dcdc.paper.counting import classifier_param_table
from dcdc.paper.results import CLASSIFIER_ROWS


def test_parameter_table_matches_paper():
    rows = list(classifier_param_table())
    assert len(rows) == len(CLASSIFIER_ROWS)
    for name, ours, paper, diff in rows:
        # Table I rows within 0.3%, the Table III/IV ablations within 1%.
        tolerance = 0.003 if "Table I)" in name else 0.01
        assert abs(diff) <= tolerance, f"{name}: {ours:.3f} M vs paper {paper} M"


@pytest.mark.parametrize(
    "depth, operator, kwargs",
    [(26, op, {}) for op in ("dcdc", "lsa", "involution", "conv")]
    + [(26, "dcdc", {"global_branch": "conv_small"}), (26, "dcdc", {"global_branch": "conv_large"}),
       (26, "dcdc", {"gsi_kernel_size": 3, "gsi_scale": 1.5, "dw_kernel_size": 5})]
    + [(d, "dcdc", {}) for d in (38, 50, 101)],
)
def test_forward_backward_every_parameter_learns(depth, operator, kwargs):
    # zero_init_last gives the residual branches no gradient in the first step: test without it
    torch.manual_seed(0)
    model = build_classifier(depth, operator, num_classes=10, zero_init_last=False, **kwargs)
    images = torch.randn(2, 3, 35, 33)  # odd sizes go through every stride-2 operator
    logits = model(images)["linear"]
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 7])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_zero_init_last_starts_residual_branches_at_zero():
    """Each bottleneck's output starts at its shortcut: the last norm's scale is 0 by default."""
    model = build_classifier(26, num_classes=3)
    blocks = [b for stage in model.stages for b in stage]
    assert all(not b.conv3.norm.weight.any() for b in blocks)
    assert not model.linear.bias.any() and 0 < model.linear.weight.std() < 0.02
    block = model.res3[1].eval()
    x = torch.rand(1, 512, 6, 6)
    torch.testing.assert_close(block(x), x)  # ReLU(0 + x) for x >= 0
    other = build_classifier(26, num_classes=3, zero_init_last=False)
    assert all(b.conv3.norm.weight.all() for s in other.stages for b in s)


def test_zero_init_last_needs_a_norm_scale():
    with pytest.raises(ValueError, match="zero_init_last needs a norm with a scale"):
        build_classifier(26, "conv", norm="")
    model = build_classifier(26, "conv", norm="", zero_init_last=False)
    assert model.res2[0].conv3.norm is None


def test_classifier_builds_without_timm():
    """timm is optional: with its import blocked, dcdc and build_classifier still work."""
    code = ("import sys; sys.modules['timm'] = None\n"
            "import dcdc\n"
            "from dcdc.modeling import build_classifier\n"
            "assert 'dcdc.modeling.timm_models' not in sys.modules\n"
            "print(sum(p.numel() for p in build_classifier(26, 'involution').parameters()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == sum(p.numel() for p in build_classifier(26, "involution").parameters())


def test_bad_depth():
    with pytest.raises(ValueError, match="depth must be one of"):
        build_classifier(34)
