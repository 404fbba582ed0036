"""Same/different image pairs from a class-major dataset, for verification training (the
Siamese network of Koch et al., 2015).

A batch of n pairs holds exactly ⌊n/2⌋ *same* pairs (two distinct examples of one class,
target 1) and the rest *different* pairs (one example each of two distinct classes, target
0), in random order; each pair draws its classes and examples afresh. The dataset is a
class-major array ``[n_classes, n_examples_per_class, ...]`` or a list of per-class arrays
(classes of unequal size), as for ``tinymeta.tasks.episodic``; examples get a channel axis by
its rule (a 2-D example becomes ``[1, H, W]``).
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Dict

import numpy as np


@dataclasses.dataclass(frozen=True)
class Pairs:
    """``first``, ``second``: ``[n, *E]``; ``same``: ``[n]``, 1.0 where both show one class.
    ``classes``: int64 ``[n, 2]``, the dataset class of each side."""

    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    classes: np.ndarray

    def __len__(self):
        return len(self.same)


class PairSampler:
    """Draws balanced batches of same/different pairs; its random stream is one
    ``numpy.random.Generator`` (``get_state``/``set_state`` for resuming runs)."""

    def __init__(self, class_images, rng=None, dtype: Any = np.float32) -> None:
        if not isinstance(class_images, (list, tuple)):
            class_images = np.asarray(class_images)
            if class_images.ndim < 2:
                raise ValueError("PairSampler: class_images must be class-major [n_classes, n_examples, "
                                 f"...] or a list of per-class arrays, got shape {class_images.shape}")
        counts = np.array([len(c) for c in class_images], dtype=np.int64)
        if len(counts) < 2 or counts.min() < 2:
            few = f"class {int(counts.argmin())} has {int(counts.min())}" if len(counts) else "there are none"
            raise ValueError(f"PairSampler: needs at least 2 classes (for different pairs) and 2 examples "
                             f"in each (for same pairs); there are {len(counts)} classes and {few}")
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"PairSampler: dtype must be a floating type such as float32, got {dtype}")
        self.class_images, self.counts, self.dtype = class_images, counts, dtype
        self.rng = np.random.default_rng(rng)
        shape = class_images[0].shape[1:]
        self.example_shape = (1, *shape) if len(shape) == 2 else tuple(shape)

    def sample_batch(self, n: int) -> Pairs:
        """``n`` pairs: ⌊n/2⌋ same, ⌈n/2⌉ different, shuffled."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"PairSampler.sample_batch needs a positive int number of pairs, got n={n!r}")
        n_classes, rng = len(self.counts), self.rng
        same = np.zeros(n, dtype=bool)
        same[: n // 2] = True
        rng.shuffle(same)
        a = rng.integers(n_classes, size=n)
        b = np.where(same, a, (a + rng.integers(1, n_classes, size=n)) % n_classes)   # b ≠ a when different
        i = rng.integers(self.counts[a])                                   # a drawing of class a
        j = np.where(same, (i + rng.integers(1, self.counts[b])) % self.counts[b],   # another drawing of a
                     rng.integers(self.counts[b]))                         # any drawing of b
        return Pairs(first=self._images(a, i), second=self._images(b, j), same=same.astype(self.dtype),
                     classes=np.stack([a, b], axis=1).astype(np.int64))

    def _images(self, classes, examples):
        if isinstance(self.class_images, np.ndarray):
            images = self.class_images[classes, examples]
        else:
            images = np.stack([self.class_images[c][k] for c, k in zip(classes, examples)])
        images = images.astype(self.dtype, copy=False)
        return np.ascontiguousarray(images.reshape(len(classes), *self.example_shape))

    def get_state(self) -> Dict[str, Any]:
        return self.rng.bit_generator.state

    def set_state(self, state: Dict[str, Any]) -> None:
        try:
            self.rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"PairSampler.set_state needs a state dict from get_state(), got "
                             f"{state!r:.200} ({err})") from err
