"""detectron2's ``metrics.json``, read back: what a training run (``train_net.py``) logged.

detectron2's ``JSONWriter`` writes one JSON dict per line: training lines (``iteration``,
``total_loss``, ``loss_*``, ``lr``, ...) and evaluation lines (``bbox/AP``, ``segm/AP``,
``panoptic_seg/PQ``, ``sem_seg/mIoU``, ...). :func:`read_metrics` gives the records,
:func:`last_evaluation` the last one holding evaluation results.
"""
import json

from ..utils.errors import UserValueError

__all__ = ["EVALUATION_TASKS", "read_metrics", "last_evaluation"]

# The first part of an evaluation key ("<task>/<metric>") of detectron2's evaluators.
EVALUATION_TASKS = ("bbox", "segm", "panoptic_seg", "sem_seg")


def read_metrics(path):
    """The records of a ``metrics.json`` file, in order (blank lines skipped); a line that is not
    JSON raises :class:`~dcdc.utils.errors.UserValueError` naming it."""
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserValueError(f"{path}, line {n}, is not JSON ({e}): is this "
                                     "detectron2's metrics.json?") from None
    return records


def last_evaluation(records, keys=None):
    """The last record holding any of ``keys`` (default: any evaluation result, a key
    ``<task>/<metric>`` with a task of :data:`EVALUATION_TASKS`), or None."""
    def holds(record):
        if keys:
            return any(k in record for k in keys)
        return any("/" in k and k.split("/")[0] in EVALUATION_TASKS for k in record)

    return next((r for r in reversed(records) if holds(r)), None)
