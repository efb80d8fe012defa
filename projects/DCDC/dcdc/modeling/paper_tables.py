"""The paper's ImageNet parameter counts (Tables I, III, IV) next to our builds of the same rows."""
from .resnet import build_classifier

__all__ = ["CLASSIFIER_ROWS", "count_parameters", "classifier_param_table"]

# (row name, build_classifier arguments, #Params in millions as printed in the paper)
CLASSIFIER_ROWS = [
    *[(f"RedNet-{d} (Table I)", dict(depth=d, operator="rednet"), p)
      for d, p in ((26, 9.23), (38, 12.39), (50, 15.54), (101, 25.65))],
    *[(f"DCDC-ResNet-{d} (Table I)", dict(depth=d, operator="dcdc"), p)
      for d, p in ((26, 9.36), (38, 12.58), (50, 15.8), (101, 26.19))],
    ("DCDC-26 LSA only (Table III)", dict(depth=26, operator="lsa"), 9.26),
    ("DCDC-26 Conv_small (Table III)", dict(depth=26, global_branch="conv_small"), 9.34),
    ("DCDC-26 Conv_large (Table III)", dict(depth=26, global_branch="conv_large"), 14.32),
    ("DCDC-26 k_dw=5 (Table IV)", dict(depth=26, dw_kernel_size=5), 9.39),
    ("DCDC-26 k_dw=7 (Table IV)", dict(depth=26, dw_kernel_size=7), 9.45),
    ("DCDC-26 k_gsi=3 (Table IV)", dict(depth=26, gsi_kernel_size=3), 9.61),
    ("DCDC-26 k_gsi=5 (Table IV)", dict(depth=26, gsi_kernel_size=5), 10.12),
    ("DCDC-26 lambda=1.5 (Table IV)", dict(depth=26, gsi_scale=1.5), 9.46),
    ("DCDC-26 lambda=2.0 (Table IV)", dict(depth=26, gsi_scale=2.0), 9.64),
]


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def classifier_param_table():
    """Yield ``(row, ours in M, paper in M, relative difference)`` for every row above."""
    for name, kwargs, paper in CLASSIFIER_ROWS:
        ours = count_parameters(build_classifier(num_classes=1000, **kwargs)) / 1e6
        yield name, ours, paper, ours / paper - 1
