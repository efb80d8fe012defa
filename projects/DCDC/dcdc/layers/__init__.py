from .aggregation import lsa_aggregate, lsa_aggregate_unfold, lsa_generate_aggregate
from .dcdc_conv import (GSI, LSA, OPERATORS, DCDCConv2d, build_operator, folded_conv,
                        norm_relu_, per_sample_conv)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
