"""Checkpoints that survive a kill at any moment, and resume to the same numbers.

* :class:`AtomicPathManager` makes every file a checkpointer writes (``model_XXXX.pth`` and the
  ``last_checkpoint`` pointer) appear only once complete: it is written to a temporary file in
  the same folder, fsync'ed, then ``os.replace``'d into place. A SIGKILL during a save leaves
  the previous checkpoint and pointer intact, never a truncated file or a pointer to one.
* :class:`RNGState` stores the python / numpy / torch random generators of every process in the
  checkpoint (detectron2 seeds process r with ``SEED + r``), and each process restores its own,
  so a resumed run draws the same proposals, augmentations and dropout as an uninterrupted one.
* :class:`DCDCCheckpointer` is detectron2's ``DetectionCheckpointer`` with both, which also
  refuses a checkpoint whose tensors do not fit the model (see :func:`check_state_fits`).
"""
import logging
import os
import random

import numpy as np
import torch
from fvcore.common.checkpoint import _strip_prefix_if_present

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks
from detectron2.utils import comm

from .guards import check_state_fits

__all__ = ["AtomicPathManager", "RNGState", "DCDCCheckpointer", "periodic_checkpointer"]

logger = logging.getLogger(__name__)


class _AtomicFile:
    """A file opened for writing at ``<dir>/.<name>.tmp-<pid>``, renamed to ``path`` on close."""

    def __init__(self, path, mode, **kwargs):
        self.path = path
        folder, name = os.path.split(os.path.abspath(path))
        self.tmp_path = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
        self._file = open(self.tmp_path, mode, **kwargs)

    def __getattr__(self, name):  # write, tell, seek, flush, ... of the real file
        return getattr(self._file, name)

    def close(self):
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp_path, self.path)

    def discard(self):
        self._file.close()
        if os.path.exists(self.tmp_path):
            os.remove(self.tmp_path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # a failed write must not replace the previous good file
            self.discard()


class AtomicPathManager:
    """Wraps an iopath ``PathManager``: local files opened for writing are written atomically;
    everything else (reads, remote paths, other methods) goes to the wrapped manager."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def open(self, path, mode="r", **kwargs):
        if "://" in str(path) or not any(flag in mode for flag in "wax"):
            return self._path_manager.open(path, mode, **kwargs)
        return _AtomicFile(path, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self._path_manager, name)


def _capture_rng():
    # numpy's key array goes in as a tensor: checkpoints load with torch's weights_only.
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state):
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState:
    """A checkpointable holding the global python, numpy and torch (CPU and CUDA) RNG states of
    every process: ``{"ranks": [state of rank 0, state of rank 1, ...]}``.

    :meth:`gather` collects them (a collective: every rank calls it, at the same point of
    training); the next :meth:`state_dict` returns them. Without a preceding ``gather`` it
    holds the calling process's state only. On load each rank restores its own state; a
    checkpoint written by another number of processes is warned about and leaves every rank's
    generators as seeded at start-up (``SEED + rank``), since no state belongs to it.
    """

    def __init__(self):
        self._gathered = None

    def gather(self):
        self._gathered = comm.all_gather(_capture_rng())

    def state_dict(self):
        states, self._gathered = self._gathered or [_capture_rng()], None
        return {"ranks": states}

    def load_state_dict(self, state):
        states = state["ranks"] if "ranks" in state else [state]  # one-process format
        rank, world_size = comm.get_rank(), comm.get_world_size()
        if len(states) != world_size:
            logger.warning(
                f"The checkpoint holds the RNG states of {len(states)} processes, this run has "
                f"{world_size}: each process keeps its start-up generators (SEED + rank), so the "
                "resumed run's random draws differ from those of an uninterrupted run."
            )
            return
        _restore_rng(states[rank])


class DCDCCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that writes atomically, stores the RNG states with the model,
    optimizer and trainer states, and refuses weights of another architecture.

    Checkpoints stay readable by detectron2's own ``DetectionCheckpointer`` (the extra ``rng``
    entry is ignored there).
    """

    def __init__(self, model, save_dir="", *, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = AtomicPathManager(self.path_manager)
        self.checkpointables.setdefault("rng", RNGState())

    def save(self, name, **kwargs):
        """detectron2's ``save``, after gathering every rank's RNG state: in a multi-process run
        every rank calls it (only the main process writes), see :func:`periodic_checkpointer`."""
        self.checkpointables["rng"].gather()
        super().save(name, **kwargs)

    def load(self, path, *args, **kwargs):
        self._loading_path = path  # for the message of check_state_fits
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint):
        if not checkpoint.get("matching_heuristics", False):  # names are only aligned later
            # the names the model will be matched with: fvcore strips DDP's prefix the same way
            _strip_prefix_if_present(checkpoint["model"], "module.")
            check_state_fits(self.model, checkpoint["model"], f"Checkpoint '{self._loading_path}'")
        return super()._load_model(checkpoint)


def periodic_checkpointer(checkpointer, period, max_to_keep=None):
    """detectron2's ``PeriodicCheckpointer`` hook, for every rank.

    detectron2 registers it on the main process only; a :class:`DCDCCheckpointer`'s ``save``
    gathers all ranks' RNG states, so every rank runs it (the others write nothing and never
    delete old checkpoints: ``max_to_keep`` applies to the main process).
    """
    if not comm.is_main_process():
        max_to_keep = None
    return hooks.PeriodicCheckpointer(checkpointer, period, max_to_keep=max_to_keep)
