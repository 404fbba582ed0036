"""Episodes as sequences with labels one step late, for model-based meta-learners (MANN).

Santoro et al. (2016) present an episode as a sequence: ``ways`` classes are drawn, each gets
a fresh random label, ``instances`` drawings of each are shuffled into one sequence of length
L = ways · instances, and at step t the network sees the image x_t together with the *previous*
step's label,

    input_t = (x_t, onehot(y_{t−1})),    with onehot(y_{−1}) = 0,

and must output y_t. So the first drawing of a class can only be guessed; from the second on,
the network can have bound the class's image to its label in memory. Accuracy is therefore
reported by *instance*: how often the 1st, 2nd, … drawing of a class is labelled correctly.

A class-major dataset ``[n_classes, n_examples, ...]`` (e.g. Omniglot ``[C, 20, 20, 20]``)
is used as is; each example is flattened to a vector.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Dict

import numpy as np


@dataclasses.dataclass(frozen=True)
class SequenceBatch:
    """A batch of B label-offset episodes of length L (D = the flattened example size):

    - ``x``: float ``[B, L, D]``, the example shown at each step;
    - ``y``: int64 ``[B, L]``, its label (what the network must answer at that step);
    - ``instance``: int64 ``[B, L]``, 0 for a class's first drawing in the episode, 1 for its
      second, …;
    - ``classes``: int64 ``[B, ways]``, the dataset class behind each label.
    """

    x: np.ndarray
    y: np.ndarray
    instance: np.ndarray
    classes: np.ndarray


def previous_labels(y, ways, dtype=np.float32):
    """onehot(y_{t−1}) for labels y ``[..., L]``: ``[..., L, ways]``, zero at t = 0."""
    y = np.asarray(y)
    onehot = (y[..., None] == np.arange(ways)).astype(dtype)
    shifted = np.zeros_like(onehot)
    shifted[..., 1:, :] = onehot[..., :-1, :]                 # input at t carries y_{t−1}
    return shifted


def instance_numbers(y):
    """For labels ``[..., L]``: how many times each step's label appeared before it."""
    y = np.asarray(y)
    same = y[..., :, None] == y[..., None, :]                 # [.., t, s]: y_t = y_s
    earlier = np.tril(np.ones(y.shape[-1:] * 2, dtype=bool), k=-1)
    return (same & earlier).sum(axis=-1).astype(np.int64)


class SequenceSampler:
    """Draws label-offset episodes: ``ways`` classes × ``instances`` distinct drawings each,
    shuffled into one sequence, labels 0 … ways−1 given to the classes in random order.

    Args:
        class_images: array ``[n_classes, n_examples_per_class, ...]``.
        ways: classes per episode; instances: drawings per class (≤ examples per class).
        rng: a seed or a ``numpy.random.Generator`` (its state is saved by ``get_state``).
        dtype: floating dtype of ``x``.
    """

    def __init__(self, class_images, ways=5, instances=10, rng=None, dtype=np.float32):
        class_images = np.asarray(class_images)
        for name, value in (("ways", ways), ("instances", instances)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"SequenceSampler: {name} must be a positive int, got {value!r}")
        if class_images.ndim < 3:
            raise ValueError(f"SequenceSampler: class_images must be [n_classes, n_examples, ...], "
                             f"got shape {class_images.shape}")
        if ways > class_images.shape[0] or instances > class_images.shape[1]:
            raise ValueError(f"SequenceSampler: ways={ways}, instances={instances} need that many classes "
                             f"and drawings per class; class_images is {class_images.shape}")
        self.class_images = class_images
        self.ways, self.instances = int(ways), int(instances)
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(rng)

    @property
    def length(self):
        return self.ways * self.instances

    def sample(self):
        """One episode (the fields of ``SequenceBatch`` without the batch axis)."""
        n_classes, n_examples = self.class_images.shape[:2]
        classes = self.rng.choice(n_classes, size=self.ways, replace=False)   # label k ↦ classes[k]
        drawings = np.argsort(self.rng.random((self.ways, n_examples)), axis=1)[:, :self.instances]
        labels = np.repeat(np.arange(self.ways), self.instances)
        order = self.rng.permutation(self.length)                             # shuffle the sequence
        y = labels[order]
        x = self.class_images[classes[y], drawings.reshape(-1)[order]]
        return x.reshape(self.length, -1).astype(self.dtype), y.astype(np.int64), classes.astype(np.int64)

    def sample_batch(self, n):
        """``n`` episodes as one ``SequenceBatch``."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"SequenceSampler.sample_batch needs a positive int, got n={n!r}")
        xs, ys, classes = zip(*(self.sample() for _ in range(n)))
        y = np.stack(ys)
        return SequenceBatch(x=np.stack(xs), y=y, instance=instance_numbers(y), classes=np.stack(classes))

    def get_state(self) -> Dict[str, Any]:
        return self.rng.bit_generator.state

    def set_state(self, state: Dict[str, Any]) -> None:
        self.rng.bit_generator.state = state
