"""N-way K-shot episodes gathered on the device: the data set is uploaded once.

``EpisodeSampler`` assembles every episode on the host and the learner then copies its
images to the device: on a GPU that copy, and the host-side gather before it, cost a
training step more than its arithmetic. ``DeviceEpisodeSampler`` keeps the class array on
the active backend (cast to ``dtype`` once) and assembles a whole batch of episodes with
one gather, indexed by one array of row numbers:

    row(c, e) = c · n_examples + e          (the rows of the array flattened to
                                             [n_classes · n_examples, *example_shape])

The random numbers are drawn on the host by ``EpisodeSampler.draw``, exactly as the host
sampler draws them, so a seed gives the same episodes on either sampler and
``get_state``/``set_state`` continue the same stream (a checkpoint written with one resumes
with the other). Only the images live on the device; labels and classes are small host
arrays, read where they are (``tinymeta.algorithms.base.MetaLearner.inputs``).
"""
import numbers

import numpy as np

from autograd import backend

from .episodic import Episode, EpisodeSampler


class DeviceEpisodeSampler(EpisodeSampler):
    """``EpisodeSampler`` over one class-major array ``[n_classes, n_examples, ...]`` held on
    the active backend: ``sample_batch`` returns episodes whose ``support_x`` and ``query_x``
    are device arrays, with one host→device copy (the row numbers) per batch. Arguments
    as ``EpisodeSampler``'s."""

    def __init__(self, class_images, ways, shots, queries, rng=None, dtype=np.float32, class_names=None):
        if isinstance(class_images, (list, tuple)):
            raise TypeError("DeviceEpisodeSampler: class_images must be one class-major array [n_classes, "
                            "n_examples, ...]; classes of different sizes stay with EpisodeSampler")
        super().__init__(class_images, ways, shots, queries, rng=rng, dtype=dtype, class_names=class_names)
        n_classes, self.n_examples = self.class_images.shape[:2]
        rows = self.class_images.reshape((n_classes * self.n_examples,) + self.example_shape)
        self.images = backend.from_numpy(rows, dtype=self.dtype)              # uploaded once

    def sample_batch(self, n):
        """``n`` episodes, images gathered on the device (see :class:`Episode` for shapes)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"sample_batch needs a positive int number of episodes, got n={n!r}")
        draws = [self.draw() for _ in range(n)]
        classes = np.stack([c for c, _ in draws]).astype(np.int64)                 # [n, ways]
        rows = np.stack([c[:, None] * self.n_examples + e for c, e in draws])     # [n, ways, shots + queries]
        chosen = self.images[backend.from_numpy(rows)]                             # one copy, one gather
        xp = backend.xp

        def tasks_of(part, k):
            return xp.ascontiguousarray(part).reshape((n, self.ways * k) + self.example_shape)

        def labels(k):
            return np.tile(np.repeat(np.arange(self.ways, dtype=np.int64), k), (n, 1))
        return Episode(support_x=tasks_of(chosen[:, :, :self.shots], self.shots), support_y=labels(self.shots),
                       query_x=tasks_of(chosen[:, :, self.shots:], self.queries), query_y=labels(self.queries),
                       classes=classes)

    def __repr__(self):
        return "Device" + super().__repr__() + f" on {backend.name}"


def episode_sampler(class_images, ways, shots, queries, rng=None, dtype=np.float32, class_names=None):
    """The sampler that suits the active backend: ``DeviceEpisodeSampler`` on CuPy when the
    classes come as one array, else ``EpisodeSampler``. Either draws the same episodes."""
    if backend.name == "cupy" and not isinstance(class_images, (list, tuple)):
        return DeviceEpisodeSampler(class_images, ways, shots, queries, rng, dtype, class_names)
    return EpisodeSampler(class_images, ways, shots, queries, rng, dtype, class_names)
