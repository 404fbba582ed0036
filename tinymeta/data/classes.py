"""``ImageClasses``: the preprocessed images of a set of classes, however many each has.

All images sit in one array, class after class, and ``counts`` says how many belong to
each class. :meth:`ImageClasses.by_class` turns that into what
:class:`tinymeta.tasks.EpisodeSampler` takes: a class-major array ``[C, n, *shape]``
when every class has ``n`` images (a reshape, no copy), else a list of per-class views.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import List, Sequence, Tuple, Union

import numpy as np

ByClass = Union[np.ndarray, List[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class ImageClasses:
    """``images`` float32 ``[sum(counts), *image_shape]``: ``counts[c]`` images of class ``names[c]``, in order."""

    names: Tuple[str, ...]
    counts: np.ndarray  # int64 [C]
    images: np.ndarray

    def __post_init__(self) -> None:
        if len(self.names) != len(self.counts) or int(np.sum(self.counts)) != len(self.images):
            raise ValueError(
                f"ImageClasses: {len(self.names)} names, {len(self.counts)} counts summing to "
                f"{int(np.sum(self.counts))}, and {len(self.images)} images do not match"
            )

    @property
    def image_shape(self) -> Tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def by_class(self) -> ByClass:
        """Class-major ``[C, n, *shape]`` if all classes have ``n`` images, else a list of ``[n_c, *shape]``."""
        if len(self.counts) and (self.counts == self.counts[0]).all():
            return self.images.reshape(len(self.counts), int(self.counts[0]), *self.image_shape)
        return np.split(self.images, np.cumsum(self.counts)[:-1]) if len(self.counts) else []

    def subset(self, indices: Sequence[int]) -> "ImageClasses":
        """The classes ``indices``, in that order (a copy)."""
        starts = np.concatenate([[0], np.cumsum(self.counts)])
        parts = [self.images[starts[c] : starts[c + 1]] for c in indices]
        images = np.concatenate(parts) if parts else self.images[:0]
        return ImageClasses(tuple(self.names[c] for c in indices), self.counts[list(indices)], images)

    def without_small_classes(self, min_images: int, where: str) -> "ImageClasses":
        """Drop the classes with fewer than ``min_images`` images, warning which."""
        small = [c for c, n in enumerate(self.counts) if n < min_images]
        if not small:
            return self
        listed = ", ".join(f"{self.names[c]!r} ({self.counts[c]})" for c in small[:10])
        more = f" and {len(small) - 10} more" if len(small) > 10 else ""
        warnings.warn(f"{where}: dropping {len(small)} classes with fewer than {min_images} images: {listed}{more}.")
        dropped = set(small)
        return self.subset([c for c in range(len(self.counts)) if c not in dropped])


def class_sizes(by_class: ByClass) -> List[int]:
    """Images per class of a class-major array or a list of per-class arrays."""
    return [len(c) for c in by_class]
