from .aggregation import lsa_aggregate, lsa_generate_aggregate
from .variants import OPERATORS, VARIANTS, variant
from .dcdc_conv import (GSI, LSA, DCDCConv2d, build_operator, folded_conv,
                        norm_relu_, per_sample_conv)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
