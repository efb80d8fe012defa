"""The DCDC-ResNet family through timm's registry: creation, metadata, features_only, weights."""
import pytest
import torch

timm = pytest.importorskip("timm")

from dcdc.modeling import DEPTHS, build_classifier  # noqa: E402
from dcdc.modeling.timm_models import TIMM_MODEL_NAMES  # noqa: E402  (registers the models)
from dcdc.paper.counting import count_parameters  # noqa: E402

OPERATORS = {"dcdc_resnet": "dcdc", "lsa_resnet": "lsa", "rednet": "involution"}


def _split(name):
    prefix = name.rstrip("0123456789")
    return OPERATORS[prefix], int(name[len(prefix):])


def test_registry_lists_the_family():
    assert sorted(timm.list_models(["dcdc_resnet*", "lsa_resnet*", "rednet*"])) == sorted(
        TIMM_MODEL_NAMES)
    assert len(TIMM_MODEL_NAMES) == 3 * len(DEPTHS)
    cfg = timm.models.get_pretrained_cfg("dcdc_resnet50").to_dict()
    # Nothing to download, and the metadata points at real modules.
    assert not cfg.get("url") and not cfg.get("hf_hub_id") and not cfg.get("file")
    assert cfg["first_conv"] == "stem.conv1" and cfg["classifier"] == "linear"
    assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000


@pytest.mark.parametrize("name", TIMM_MODEL_NAMES)
def test_same_parameters_as_build_classifier(name):
    operator, depth = _split(name)
    model = timm.create_model(name)  # 1000 classes, as in the paper's Table I
    ref = build_classifier(depth, operator, num_classes=1000)
    assert count_parameters(model) == count_parameters(ref)
    assert list(model.state_dict()) == list(ref.state_dict())
    assert dict(model.named_modules())[model.pretrained_cfg["first_conv"]].in_channels == 3


@pytest.mark.parametrize("zero_init_last", [True, False])
def test_same_initialisation_as_build_classifier(zero_init_last):
    """The timm model is build_classifier's: from one seed both start with equal tensors."""
    torch.manual_seed(0)
    ref = build_classifier(26, "involution", num_classes=4, zero_init_last=zero_init_last)
    torch.manual_seed(0)
    model = timm.create_model("rednet26", num_classes=4, zero_init_last=zero_init_last)
    ours = model.state_dict()
    assert list(ours) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(ours[key], value), key


def test_same_function_as_build_classifier():
    torch.manual_seed(0)
    ref = build_classifier(26, "dcdc", num_classes=5).eval()
    model = timm.create_model("dcdc_resnet26", num_classes=5).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 48, 40)
    torch.testing.assert_close(model(x), ref(x)["linear"])


def test_every_parameter_learns_no_nans():
    """timm's tests/test_models.py check, on the smallest member of each operator.

    With the default zero_init_last the residual branches get no gradient in the very first
    step (their output scale is 0), so the check runs on a non-zero initialisation.
    """
    for name in ("dcdc_resnet26", "lsa_resnet26", "rednet26"):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=3, zero_init_last=False)
        out = model(torch.randn(2, 3, 33, 35))
        assert out.shape == (2, 3) and torch.isfinite(out).all()
        out.logsumexp(1).sum().backward()
        missing = [n for n, p in model.named_parameters()
                   if p.grad is None or not p.grad.abs().sum()]
        assert not missing, f"{name}: no gradient for {missing[:5]}"


@pytest.mark.parametrize("feature_cls", [None, "getter"])
def test_features_only_shapes(feature_cls):
    kwargs = {} if feature_cls is None else {"feature_cls": feature_cls}
    model = timm.create_model("dcdc_resnet26", features_only=True, **kwargs).eval()
    assert model.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [4, 4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [
        (1, 64, 16, 24), (1, 256, 16, 24), (1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)]

    sub = timm.create_model("rednet26", features_only=True, out_indices=(2, 4), **kwargs).eval()
    assert sub.feature_info.channels() == [512, 2048]
    with torch.no_grad():
        assert [f.shape[1:] for f in sub(torch.randn(1, 3, 64, 64))] == [(512, 8, 8), (2048, 2, 2)]


def test_head_reset_and_intermediates():
    model = timm.create_model("lsa_resnet26", num_classes=7).eval()
    x = torch.randn(1, 3, 64, 64)
    final, inter = model.forward_intermediates(x)
    assert len(inter) == 5 and final.shape == (1, 2048, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(final), model(x))
    model.reset_classifier(0)
    assert model(x).shape == (1, 2048) and model.get_classifier(name_only=True) == "linear"
    model.reset_classifier(11, "catavgmax")
    assert model.linear.in_features == 4096 and model(x).shape == (1, 11)


def test_pretrained_needs_a_local_file(tmp_path):
    with pytest.raises(ValueError, match="No pretrained weights are published"):
        timm.create_model("dcdc_resnet26", pretrained=True)
    src = timm.create_model("rednet26", num_classes=3)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": src.state_dict(), "epoch": 4, "version": 2}, path)
    loaded = timm.create_model("rednet26", pretrained=True, num_classes=3,
                               pretrained_cfg_overlay=dict(file=str(path), num_classes=3))
    for key, value in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_zero_init_last_starts_residual_branches_at_zero():
    model = timm.create_model("dcdc_resnet26", num_classes=3)
    blocks = [b for stage in (model.res2, model.res3, model.res4, model.res5) for b in stage]
    assert len(blocks) == sum(DEPTHS[26])
    assert all(not b.conv3.norm.weight.any() for b in blocks)
    other = timm.create_model("dcdc_resnet26", num_classes=3, zero_init_last=False)
    assert all(b.conv3.norm.weight.all() for s in (other.res2, other.res5) for b in s)
