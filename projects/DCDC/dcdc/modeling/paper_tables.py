"""Kept for ``from dcdc.modeling.paper_tables import classifier_param_table``: the rows live in
:mod:`.paper_results`, the counting in :mod:`.analysis`."""
from .analysis import classifier_param_table, count_parameters
from .paper_results import CLASSIFIER_ROWS

__all__ = ["CLASSIFIER_ROWS", "count_parameters", "classifier_param_table"]
