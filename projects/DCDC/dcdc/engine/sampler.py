"""A detectron2 ``TrainingSampler`` that can start part-way through its index stream."""
import itertools

from detectron2.data.samplers import TrainingSampler

__all__ = ["ResumableTrainingSampler"]


class ResumableTrainingSampler(TrainingSampler):
    """:class:`TrainingSampler` whose global index stream can skip what was already consumed.

    detectron2's sampler restarts its shuffled stream from the beginning on ``--resume``, so a
    resumed run sees different images than an uninterrupted one. Call :meth:`skip` with the
    number of images all workers together consumed (``start_iter * SOLVER.IMS_PER_BATCH``)
    before the data loader is first iterated; each rank then continues exactly where the
    uninterrupted run would be.
    """

    def __init__(self, size, shuffle=True, seed=None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self._skip = 0

    def skip(self, num_images):
        if num_images < 0:
            raise ValueError(f"cannot skip a negative number of images ({num_images}).")
        self._skip = int(num_images)

    def __iter__(self):
        yield from itertools.islice(self._infinite_indices(), self._skip + self._rank, None,
                                    self._world_size)
