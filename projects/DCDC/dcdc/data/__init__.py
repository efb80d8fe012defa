"""Built-in data: the "shapes" dataset, registered like COCO on ``import dcdc``, and the
``*_htc`` datasets (COCO / shapes instances + stuff-thing maps) of the HTC configs."""
from .shapes import (  # noqa: F401
    CATEGORIES,
    SHAPES_SPLITS,
    STUFF_CLASSES,
    THING_CLASSES,
    ShapesSplit,
    ensure_shapes,
    generate_shapes_split,
    get_shapes_metadata,
    prepare_data,
    register_all_shapes,
    register_shapes,
    shapes_split_of,
)

from .semantic import make_semantic_maps, register_all_htc, register_htc_instances  # noqa: F401

register_all_shapes()
register_all_htc()
