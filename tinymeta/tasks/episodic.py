"""N-way K-shot episodes drawn from a class-major dataset.

A few-shot *episode* (or task) picks ``ways`` classes at random, gives the learner
``shots`` labelled examples of each (the *support* set) and asks it to label
``queries`` further examples of each (the *query* set). Labels are the positions
``0 .. ways-1`` of the classes in the episode, so the same class gets a different
label in different episodes and a learner cannot memorise class identities.

The dataset is any class-major array ``[n_classes, n_examples_per_class, ...]``, e.g.
Omniglot images ``[n_classes, 20, 28, 28]`` or feature vectors ``[n_classes, m, d]``, or,
when classes have different numbers of examples (a folder of your own images), a list
of per-class arrays ``[n_examples_of_class_c, ...]`` that share the example shape.

Shape rule for the inputs ``x``: a channel axis of length 1 is inserted **only when
each example is 2-D** (a grey-scale image ``[H, W]`` becomes ``[1, H, W]``, the layout
convolutions expect). Examples of any other rank keep their shape: vectors ``[d]``
stay ``[d]``, images that already have channels ``[C, H, W]`` stay ``[C, H, W]``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

SeedOrGenerator = Union[None, int, np.random.Generator]
ClassImages = Union[np.ndarray, Sequence[np.ndarray]]


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
    """Draws N-way K-shot episodes from a class-major array or a list of per-class arrays.

    Each episode draws ``ways`` distinct classes, then for each class
    ``shots + queries`` distinct examples, the first ``shots`` for the support set and
    the rest for the query set, so support and query never share an example.

    Args:
        class_images: array ``[n_classes, n_examples_per_class, ...]``, or a list of
            arrays ``[n_examples_of_class_c, ...]`` (classes of unequal size).
        ways: classes per episode (N).
        shots: support examples per class (K).
        queries: query examples per class.
        rng: a seed, a ``numpy.random.Generator`` (used as is, so its state is shared
            with the caller), or None for fresh entropy.
        dtype: floating dtype of ``support_x`` and ``query_x`` (default float32).
        class_names: optional name of each class, used only in error messages.

    A class with fewer than ``shots + queries`` examples could never be used, so it is
    refused here, at construction, with its index, name and count, rather than midway
    through training; drop such classes from the data first (``load_splits`` has
    ``min_images`` for that) or ask for fewer shots or queries.

    The random stream is one ``numpy.random.Generator``; :meth:`get_state` and
    :meth:`set_state` save and restore it, so that a resumed run draws the same
    episodes as an uninterrupted one. Per episode it draws the classes, then one
    row of uniform noise per chosen class, as wide as the largest class; a class's
    examples are the arg-sort of its row cut to the class's size. Equal classes given
    as a list therefore yield exactly the episodes of the same classes stacked in one array.
    """

    def __init__(
        self,
        class_images: ClassImages,
        ways: int,
        shots: int,
        queries: int,
        rng: SeedOrGenerator = None,
        dtype: Any = np.float32,
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
        if isinstance(class_images, (list, tuple)):
            class_images = _check_class_list(class_images, shots + queries, class_names)
            counts = np.array([len(c) for c in class_images], dtype=np.int64)
            described = f"class_images (a list of {len(class_images)} per-class arrays)"
            example_shape = class_images[0].shape[1:] if class_images else ()
        else:
            class_images = np.asarray(class_images)
            if class_images.ndim < 2:
                raise ValueError(
                    "class_images must be class-major [n_classes, n_examples_per_class, ...] or a list "
                    f"of per-class arrays, got shape {class_images.shape}"
                )
            n_classes, n_examples = class_images.shape[:2]
            if shots + queries > n_examples:
                raise ValueError(
                    f"shots + queries = {shots} + {queries} = {shots + queries} is more than the "
                    f"{n_examples} examples per class in class_images {class_images.shape}"
                )
            counts = np.full(n_classes, n_examples, dtype=np.int64)
            described = f"class_images {class_images.shape}"
            example_shape = class_images.shape[2:]
        if ways > len(counts):
            raise ValueError(f"ways={ways} is more than the {len(counts)} classes in {described}")
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"dtype must be a floating type such as float32 or float64, got {dtype}")

        self.class_images = class_images
        self.counts = counts  # examples per class
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.dtype = dtype
        self.rng = np.random.default_rng(rng)
        self.example_shape = (1, *example_shape) if len(example_shape) == 2 else tuple(example_shape)

    # ----------------------------------------------------------------- sampling

    def draw(self):
        """Every random number one episode takes: ``(classes, examples)``, int arrays
        ``[ways]`` and ``[ways, shots + queries]``, the dataset classes and, per class, the
        examples drawn from it (support first). :meth:`sample` assembles them."""
        per_class = self.shots + self.queries
        # choice without replacement returns the classes in random order, so using the
        # position as the label gives a fresh random class -> label map every episode.
        classes = self.rng.choice(len(self.counts), size=self.ways, replace=False)
        # One random permutation of the examples per class (argsort of uniform noise),
        # of which we keep the first shots + queries: distinct examples within a class.
        noise = self.rng.random((self.ways, int(self.counts.max())))
        if isinstance(self.class_images, np.ndarray):
            return classes, np.argsort(noise, axis=1)[:, :per_class]
        return classes, np.stack([np.argsort(row[: self.counts[c]])[:per_class] for c, row in zip(classes, noise)])

    def sample(self) -> Episode:
        """Draw one episode (see :class:`Episode` for shapes)."""
        classes, examples = self.draw()
        if isinstance(self.class_images, np.ndarray):
            chosen = self.class_images[classes[:, None], examples]  # [ways, per_class, ...]
        else:
            chosen = np.stack([self.class_images[c][e] for c, e in zip(classes, examples)])
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
        low, high = int(self.counts.min()), int(self.counts.max())
        examples = f"{low}" if low == high else f"{low}..{high}"
        return (
            f"EpisodeSampler(classes={len(self.counts)}, examples_per_class={examples}, "
            f"ways={self.ways}, shots={self.shots}, queries={self.queries}, dtype={self.dtype})"
        )


def _check_class_list(class_list: Sequence[Any], needed: int, names: Optional[Sequence[str]]) -> List[np.ndarray]:
    """Per-class arrays sharing one example shape, each with at least ``needed`` examples."""
    arrays = [np.asarray(c) for c in class_list]

    def label(c: int) -> str:
        return f"class {c} ({names[c]!r})" if names is not None and c < len(names) else f"class {c}"

    for c, array in enumerate(arrays):
        if array.ndim < 1 or array.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(
                f"{label(c)} of class_images has shape {array.shape}, but class 0 has {arrays[0].shape}; "
                "per-class arrays must be [n_examples, ...] with one example shape"
            )
    small = [c for c, array in enumerate(arrays) if len(array) < needed]
    if small:
        c = min(small, key=lambda k: (len(arrays[k]), k))
        others = f" ({len(small) - 1} more classes are too small as well)" if len(small) > 1 else ""
        raise ValueError(
            f"{label(c)} has {len(arrays[c])} examples, fewer than the shots + queries = {needed} an "
            f"episode takes from each class{others}; drop the small classes or ask for fewer shots or queries"
        )
    return arrays
