"""Built-in data: the "shapes" dataset, registered like COCO on ``import dcdc``."""
from .shapes import (  # noqa: F401
    CATEGORIES,
    SHAPES_SPLITS,
    STUFF_CLASSES,
    THING_CLASSES,
    ShapesSplit,
    ensure_shapes,
    generate_shapes_split,
    get_shapes_metadata,
    register_all_shapes,
    register_shapes,
    shapes_split_of,
)

register_all_shapes()
