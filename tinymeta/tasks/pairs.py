"""Same/different image pairs from a class-major dataset, for verification training (the
Siamese network of Koch et al., 2015).

A batch of n pairs holds exactly ⌊n/2⌋ *same* pairs (two distinct examples of one class,
target 1) and the rest *different* pairs (one example each of two distinct classes, target
0), in random order; each pair draws its classes and examples afresh. The dataset is any
class-major array ``[n_classes, n_examples_per_class, ...]``; examples get a channel axis by
the rule of ``tinymeta.tasks.episodic`` (a 2-D example becomes ``[1, H, W]``).
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

    def __init__(self, class_images: np.ndarray, rng=None, dtype: Any = np.float32) -> None:
        class_images = np.asarray(class_images)
        if class_images.ndim < 2 or class_images.shape[0] < 2 or class_images.shape[1] < 2:
            raise ValueError("PairSampler: class_images must be class-major [n_classes, n_examples, ...] "
                             f"with at least 2 classes (for different pairs) and 2 examples each (for "
                             f"same pairs), got shape {class_images.shape}")
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"PairSampler: dtype must be a floating type such as float32, got {dtype}")
        self.class_images, self.dtype = class_images, dtype
        self.rng = np.random.default_rng(rng)
        shape = class_images.shape[2:]
        self.example_shape = (1, *shape) if len(shape) == 2 else tuple(shape)

    def sample_batch(self, n: int) -> Pairs:
        """``n`` pairs: ⌊n/2⌋ same, ⌈n/2⌉ different, shuffled."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"PairSampler.sample_batch needs a positive int number of pairs, got n={n!r}")
        n_classes, n_examples = self.class_images.shape[:2]
        same = np.zeros(n, dtype=bool)
        same[: n // 2] = True
        self.rng.shuffle(same)
        one = self.rng.integers(n_classes, size=n)
        other = (one + self.rng.integers(1, n_classes, size=n)) % n_classes      # any class but `one`
        classes = np.stack([one, np.where(same, one, other)], axis=1)
        examples = np.argsort(self.rng.random((n, n_examples)), axis=1)[:, :2]    # two distinct drawings
        images = self.class_images[classes, examples].astype(self.dtype, copy=False)   # [n, 2, ...]
        return Pairs(first=np.ascontiguousarray(images[:, 0].reshape(n, *self.example_shape)),
                     second=np.ascontiguousarray(images[:, 1].reshape(n, *self.example_shape)),
                     same=same.astype(self.dtype), classes=classes.astype(np.int64))

    def get_state(self) -> Dict[str, Any]:
        return self.rng.bit_generator.state

    def set_state(self, state: Dict[str, Any]) -> None:
        try:
            self.rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"PairSampler.set_state needs a state dict from get_state(), got "
                             f"{state!r:.200} ({err})") from err
