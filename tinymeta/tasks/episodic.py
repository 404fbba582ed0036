"""N-way K-shot episodes drawn from a class-major dataset.

A few-shot *episode* (or task) picks ``ways`` classes at random, gives the learner
``shots`` labelled examples of each (the *support* set) and asks it to label
``queries`` further examples of each (the *query* set). Labels are the positions
``0 .. ways-1`` of the classes in the episode, so the same class gets a different
label in different episodes and a learner cannot memorise class identities.

The dataset is any class-major array ``[n_classes, n_examples_per_class, ...]``, e.g.
Omniglot images ``[n_classes, 20, 28, 28]`` or feature vectors ``[n_classes, m, d]``.

Shape rule for the inputs ``x``: a channel axis of length 1 is inserted **only when
each example is 2-D** (a grey-scale image ``[H, W]`` becomes ``[1, H, W]``, the layout
convolutions expect). Examples of any other rank keep their shape: vectors ``[d]``
stay ``[d]``, images that already have channels ``[C, H, W]`` stay ``[C, H, W]``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Dict, Union

import numpy as np

SeedOrGenerator = Union[None, int, np.random.Generator]


@dataclasses.dataclass(frozen=True)
class Episode:
    """One N-way K-shot task, or a batch of them.

    For a single episode (``E`` = per-example shape after the channel rule):

    - ``support_x``: ``[ways * shots, *E]``, ``support_y``: int64 ``[ways * shots]``;
    - ``query_x``: ``[ways * queries, *E]``, ``query_y``: int64 ``[ways * queries]``;
    - ``classes``: int64 ``[ways]``, the original class of each label:
      ``classes[y]`` is the dataset class behind episode label ``y``.

    Both sets are ordered label by label (all examples of label 0, then label 1, ...).
    :meth:`EpisodeSampler.sample_batch` returns the same fields with a leading task
    axis: ``support_x`` ``[n, ways * shots, *E]``, ``classes`` ``[n, ways]``, and so on.
    """

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    classes: np.ndarray


class EpisodeSampler:
    """Draws N-way K-shot episodes from a class-major array.

    Each episode draws ``ways`` distinct classes, then for each class
    ``shots + queries`` distinct examples, the first ``shots`` for the support set and
    the rest for the query set, so support and query never share an example.

    Args:
        class_images: array ``[n_classes, n_examples_per_class, ...]``.
        ways: classes per episode (N).
        shots: support examples per class (K).
        queries: query examples per class.
        rng: a seed, a ``numpy.random.Generator`` (used as is, so its state is shared
            with the caller), or None for fresh entropy.
        dtype: floating dtype of ``support_x`` and ``query_x`` (default float32).

    The random stream is one ``numpy.random.Generator``; :meth:`get_state` and
    :meth:`set_state` save and restore it, so that a resumed run draws the same
    episodes as an uninterrupted one.
    """

    def __init__(
        self,
        class_images: np.ndarray,
        ways: int,
        shots: int,
        queries: int,
        rng: SeedOrGenerator = None,
        dtype: Any = np.float32,
    ) -> None:
        class_images = np.asarray(class_images)
        for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
        if class_images.ndim < 2:
            raise ValueError(
                "class_images must be class-major [n_classes, n_examples_per_class, ...], "
                f"got shape {class_images.shape}"
            )
        n_classes, n_examples = class_images.shape[:2]
        if ways > n_classes:
            raise ValueError(f"ways={ways} is more than the {n_classes} classes in class_images {class_images.shape}")
        if shots + queries > n_examples:
            raise ValueError(
                f"shots + queries = {shots} + {queries} = {shots + queries} is more than the "
                f"{n_examples} examples per class in class_images {class_images.shape}"
            )
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"dtype must be a floating type such as float32 or float64, got {dtype}")

        self.class_images = class_images
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.dtype = dtype
        self.rng = np.random.default_rng(rng)
        example_shape = class_images.shape[2:]
        self.example_shape = (1, *example_shape) if len(example_shape) == 2 else tuple(example_shape)

    # ----------------------------------------------------------------- sampling

    def sample(self) -> Episode:
        """Draw one episode (see :class:`Episode` for shapes)."""
        n_classes, n_examples = self.class_images.shape[:2]
        per_class = self.shots + self.queries
        # choice without replacement returns the classes in random order, so using the
        # position as the label gives a fresh random class -> label map every episode.
        classes = self.rng.choice(n_classes, size=self.ways, replace=False)
        # One random permutation of the examples per class (argsort of uniform noise),
        # of which we keep the first shots + queries: distinct examples within a class.
        examples = np.argsort(self.rng.random((self.ways, n_examples)), axis=1)[:, :per_class]
        chosen = self.class_images[classes[:, None], examples]  # [ways, per_class, ...]
        chosen = chosen.astype(self.dtype, copy=False)

        labels = np.arange(self.ways, dtype=np.int64)
        return Episode(
            support_x=self._flatten(chosen[:, : self.shots]),
            support_y=np.repeat(labels, self.shots),
            query_x=self._flatten(chosen[:, self.shots :]),
            query_y=np.repeat(labels, self.queries),
            classes=classes.astype(np.int64),
        )

    def sample_batch(self, n: int) -> Episode:
        """Draw ``n`` episodes and stack each field along a new leading task axis."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"sample_batch needs a positive int number of episodes, got n={n!r}")
        episodes = [self.sample() for _ in range(n)]
        return Episode(
            **{
                field.name: np.stack([getattr(episode, field.name) for episode in episodes])
                for field in dataclasses.fields(Episode)
            }
        )

    def _flatten(self, grouped: np.ndarray) -> np.ndarray:
        """[ways, k, ...] -> [ways * k, *example_shape] (adds the channel axis if due)."""
        return np.ascontiguousarray(grouped.reshape(-1, *self.example_shape))

    # ------------------------------------------------------------ checkpointing

    def get_state(self) -> Dict[str, Any]:
        """Return the random stream's state (the bit generator's state dict)."""
        return self.rng.bit_generator.state

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state`; the next episodes repeat those drawn after it."""
        try:
            self.rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as err:
            expected = type(self.rng.bit_generator).__name__
            raise ValueError(f"set_state needs a {expected} state dict from get_state(), got {state!r:.200} ({err})") from err

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler(classes={self.class_images.shape[0]}, examples_per_class="
            f"{self.class_images.shape[1]}, ways={self.ways}, shots={self.shots}, "
            f"queries={self.queries}, dtype={self.dtype})"
        )
