"""DCDC-ResNet classifiers: the paper's parameter counts, and every variant trains."""
import pytest
import torch

from dcdc.modeling import build_classifier
from dcdc.modeling.paper_tables import CLASSIFIER_ROWS, classifier_param_table


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
    torch.manual_seed(0)
    model = build_classifier(depth, operator, num_classes=10, **kwargs)
    images = torch.randn(2, 3, 35, 33)  # odd sizes go through every stride-2 operator
    logits = model(images)["linear"]
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 7])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_bad_depth():
    with pytest.raises(ValueError, match="depth must be one of"):
        build_classifier(34)
