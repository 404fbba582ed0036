"""Tests for tinymeta.tasks.episodic: N-way K-shot episodes from a class-major array.

The synthetic dataset stores, in every pixel of example ``i`` of class ``c``, the number
``1000 * c + i``, so each sampled input tells which class and example it came from.
"""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymeta.tasks import Episode, EpisodeSampler


def encoded_dataset(n_classes=12, n_examples=8, example_shape=(4, 4)):
    """Class-major array whose example (c, i) is filled with 1000 * c + i."""
    codes = 1000 * np.arange(n_classes)[:, None] + np.arange(n_examples)[None, :]
    return np.broadcast_to(
        codes.reshape(n_classes, n_examples, *([1] * len(example_shape))),
        (n_classes, n_examples, *example_shape),
    ).astype(np.float32)


def decode(x):
    """Return (class, example) arrays for inputs [..., *example_shape] from encoded_dataset."""
    first = x.reshape(*x.shape[:1], -1)[:, 0] if x.ndim > 1 else x
    codes = np.rint(first).astype(np.int64)
    return codes // 1000, codes % 1000


def check_episode(episode, ways, shots, queries):
    """Every invariant a single episode must satisfy."""
    support_class, support_example = decode(episode.support_x)
    query_class, query_example = decode(episode.query_x)

    # Labels are 0..ways-1, grouped, and classes[label] is the true class of each input.
    assert episode.support_y.dtype == np.int64 and episode.query_y.dtype == np.int64
    np.testing.assert_array_equal(episode.support_y, np.repeat(np.arange(ways), shots))
    np.testing.assert_array_equal(episode.query_y, np.repeat(np.arange(ways), queries))
    np.testing.assert_array_equal(episode.classes[episode.support_y], support_class)
    np.testing.assert_array_equal(episode.classes[episode.query_y], query_class)

    # Classes are distinct; within a class, all shots + queries examples are distinct,
    # which also makes support and query disjoint.
    assert len(set(episode.classes.tolist())) == ways
    for label in range(ways):
        used = np.concatenate(
            [support_example[episode.support_y == label], query_example[episode.query_y == label]]
        )
        assert len(set(used.tolist())) == shots + queries
    support_pairs = set(zip(support_class.tolist(), support_example.tolist()))
    query_pairs = set(zip(query_class.tolist(), query_example.tolist()))
    assert not support_pairs & query_pairs


def test_single_episode_shapes_and_dtypes():
    sampler = EpisodeSampler(encoded_dataset(), ways=5, shots=2, queries=3, rng=0)
    episode = sampler.sample()
    assert isinstance(episode, Episode)
    assert episode.support_x.shape == (10, 1, 4, 4)
    assert episode.query_x.shape == (15, 1, 4, 4)
    assert episode.support_y.shape == (10,) and episode.query_y.shape == (15,)
    assert episode.classes.shape == (5,) and episode.classes.dtype == np.int64
    assert episode.support_x.dtype == np.float32 and episode.query_x.dtype == np.float32
    assert episode.support_x.flags.c_contiguous
    check_episode(episode, 5, 2, 3)


def test_batch_adds_a_leading_task_axis():
    sampler = EpisodeSampler(encoded_dataset(), ways=4, shots=1, queries=2, rng=1)
    batch = sampler.sample_batch(6)
    assert batch.support_x.shape == (6, 4, 1, 4, 4)
    assert batch.query_x.shape == (6, 8, 1, 4, 4)
    assert batch.support_y.shape == (6, 4) and batch.query_y.shape == (6, 8)
    assert batch.classes.shape == (6, 4)
    for t in range(6):
        task = Episode(batch.support_x[t], batch.support_y[t], batch.query_x[t], batch.query_y[t], batch.classes[t])
        check_episode(task, 4, 1, 2)


def test_float64_output_on_request():
    sampler = EpisodeSampler(encoded_dataset(), ways=3, shots=1, queries=1, rng=0, dtype=np.float64)
    episode = sampler.sample()
    assert episode.support_x.dtype == np.float64 and episode.query_x.dtype == np.float64


def test_uint8_input_is_cast_to_float():
    data = (np.arange(6 * 5 * 3 * 3) % 256).astype(np.uint8).reshape(6, 5, 3, 3)
    episode = EpisodeSampler(data, ways=2, shots=1, queries=1, rng=0).sample()
    assert episode.support_x.dtype == np.float32


@pytest.mark.parametrize(
    "example_shape, expected",
    [
        ((4, 4), (1, 4, 4)),  # 2-D image: channel axis added
        ((7,), (7,)),  # feature vector: unchanged
        ((3, 4, 4), (3, 4, 4)),  # image with channels: unchanged
        ((), ()),  # one number per example: unchanged
    ],
)
def test_channel_axis_only_for_2d_examples(example_shape, expected):
    data = encoded_dataset(6, 5, example_shape)
    sampler = EpisodeSampler(data, ways=3, shots=2, queries=1, rng=0)
    episode = sampler.sample()
    assert episode.support_x.shape == (6, *expected)
    assert episode.query_x.shape == (3, *expected)
    check_episode(episode, 3, 2, 1)


def test_same_seed_same_episodes_different_seed_different():
    data = encoded_dataset()
    a = EpisodeSampler(data, 5, 1, 2, rng=42).sample_batch(4)
    b = EpisodeSampler(data, 5, 1, 2, rng=42).sample_batch(4)
    c = EpisodeSampler(data, 5, 1, 2, rng=43).sample_batch(4)
    np.testing.assert_array_equal(a.support_x, b.support_x)
    np.testing.assert_array_equal(a.query_x, b.query_x)
    np.testing.assert_array_equal(a.classes, b.classes)
    assert not np.array_equal(a.classes, c.classes)


def test_a_passed_generator_is_used_as_is():
    generator = np.random.default_rng(5)
    sampler = EpisodeSampler(encoded_dataset(), 3, 1, 1, rng=generator)
    assert sampler.rng is generator


def test_label_order_is_random_per_task():
    """Label 0 is not always the smallest class index: the class -> label map is shuffled."""
    sampler = EpisodeSampler(encoded_dataset(n_classes=5), ways=5, shots=1, queries=1, rng=0)
    orders = {tuple(sampler.sample().classes.tolist()) for _ in range(50)}
    assert len(orders) > 10  # 5 classes in all, so only the order can vary


def test_state_round_trip_repeats_the_next_episodes():
    data = encoded_dataset()
    sampler = EpisodeSampler(data, 5, 2, 2, rng=3)
    sampler.sample_batch(3)  # advance a little
    state = sampler.get_state()
    expected = [sampler.sample() for _ in range(4)]

    sampler.set_state(state)
    again = [sampler.sample() for _ in range(4)]
    # A fresh sampler with another seed, given the saved state (through JSON, as a
    # checkpoint would store it), continues the same stream.
    resumed = EpisodeSampler(data, 5, 2, 2, rng=999)
    resumed.set_state(json.loads(json.dumps(state)))
    from_checkpoint = [resumed.sample() for _ in range(4)]

    for want, got, got_too in zip(expected, again, from_checkpoint):
        for name in ("support_x", "support_y", "query_x", "query_y", "classes"):
            np.testing.assert_array_equal(getattr(want, name), getattr(got, name))
            np.testing.assert_array_equal(getattr(want, name), getattr(got_too, name))


def test_get_state_is_a_snapshot():
    sampler = EpisodeSampler(encoded_dataset(), 3, 1, 1, rng=0)
    state = sampler.get_state()
    snapshot = json.dumps(state)
    sampler.sample()
    assert json.dumps(state) == snapshot
    assert json.dumps(sampler.get_state()) != snapshot


def test_set_state_rejects_garbage():
    sampler = EpisodeSampler(encoded_dataset(), 3, 1, 1, rng=0)
    with pytest.raises(ValueError, match="set_state needs a PCG64 state"):
        sampler.set_state({"bit_generator": "MT19937"})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ways=13, shots=1, queries=1), r"ways=13 is more than the 12 classes"),
        (dict(ways=5, shots=5, queries=4), r"shots \+ queries = 5 \+ 4 = 9 is more than the 8 examples"),
        (dict(ways=0, shots=1, queries=1), r"ways must be a positive int, got ways=0"),
        (dict(ways=5, shots=-1, queries=1), r"shots must be a positive int, got shots=-1"),
        (dict(ways=5, shots=1, queries=0), r"queries must be a positive int, got queries=0"),
        (dict(ways=5, shots=1.5, queries=1), r"shots must be a positive int, got shots=1.5"),
        (dict(ways=True, shots=1, queries=1), r"ways must be a positive int, got ways=True"),
    ],
)
def test_bad_sizes_are_rejected_with_the_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(encoded_dataset(12, 8), rng=0, **kwargs)


def test_bad_data_and_dtype_are_rejected():
    with pytest.raises(ValueError, match=r"class-major .* got shape \(10,\)"):
        EpisodeSampler(np.zeros(10), 2, 1, 1)
    with pytest.raises(ValueError, match="dtype must be a floating type"):
        EpisodeSampler(encoded_dataset(), 2, 1, 1, dtype=np.int32)
    sampler = EpisodeSampler(encoded_dataset(), 2, 1, 1)
    with pytest.raises(ValueError, match="n=0"):
        sampler.sample_batch(0)


@settings(max_examples=60, deadline=None)
@given(
    n_classes=st.integers(1, 15),
    n_examples=st.integers(2, 10),
    data=st.data(),
)
def test_property_every_episode_is_valid(n_classes, n_examples, data):
    ways = data.draw(st.integers(1, n_classes), label="ways")
    shots = data.draw(st.integers(1, n_examples - 1), label="shots")
    queries = data.draw(st.integers(1, n_examples - shots), label="queries")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    sampler = EpisodeSampler(encoded_dataset(n_classes, n_examples, (2, 3)), ways, shots, queries, rng=seed)
    batch = sampler.sample_batch(2)
    assert batch.support_x.shape == (2, ways * shots, 1, 2, 3)
    assert batch.query_x.shape == (2, ways * queries, 1, 2, 3)
    for t in range(2):
        task = Episode(batch.support_x[t], batch.support_y[t], batch.query_x[t], batch.query_y[t], batch.classes[t])
        check_episode(task, ways, shots, queries)


# ------------------------------------------------------- classes of unequal size


def reference_sample(rng, class_images, ways, shots, queries):
    """The sampler's draw for a class-major array as it was before per-class lists were
    accepted, kept verbatim: a checkpoint's exact resume depends on it."""
    n_classes, n_examples = class_images.shape[:2]
    per_class = shots + queries
    classes = rng.choice(n_classes, size=ways, replace=False)
    examples = np.argsort(rng.random((ways, n_examples)), axis=1)[:, :per_class]
    chosen = class_images[classes[:, None], examples].astype(np.float32, copy=False)
    return chosen, classes


@pytest.mark.parametrize("n_classes, n_examples, ways, shots, queries, seed",
                         [(12, 8, 5, 1, 2, 0), (30, 20, 20, 1, 15, 7), (4400, 20, 5, 1, 15, 3)])
def test_class_major_episodes_are_bit_identical_to_the_reference(n_classes, n_examples, ways, shots, queries, seed):
    data = encoded_dataset(n_classes, n_examples, (2, 2))
    sampler = EpisodeSampler(data, ways, shots, queries, rng=seed)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        episode = sampler.sample()
        chosen, classes = reference_sample(rng, data, ways, shots, queries)
        np.testing.assert_array_equal(episode.classes, classes)
        np.testing.assert_array_equal(episode.support_x, chosen[:, :shots].reshape(-1, 1, 2, 2))
        np.testing.assert_array_equal(episode.query_x, chosen[:, shots:].reshape(-1, 1, 2, 2))
    assert sampler.get_state() == rng.bit_generator.state  # the stream advanced identically


def test_a_list_of_equal_classes_draws_what_the_stacked_array_draws():
    data = encoded_dataset(9, 7, (3,))
    as_array = EpisodeSampler(data, 4, 2, 3, rng=11).sample_batch(6)
    as_list = EpisodeSampler(list(data), 4, 2, 3, rng=11).sample_batch(6)
    for name in ("support_x", "support_y", "query_x", "query_y", "classes"):
        np.testing.assert_array_equal(getattr(as_array, name), getattr(as_list, name))


def unequal_dataset(counts, example_shape=(2, 2)):
    """Per-class arrays; example i of class c is filled with 1000 * c + i, as encoded_dataset."""
    return [np.full((n, *example_shape), 0.0, dtype=np.float32) + (1000 * c + np.arange(n)).reshape(-1, 1, 1)
            for c, n in enumerate(counts)]


def test_unequal_classes_give_valid_episodes_from_every_example():
    counts = [3, 10, 4, 25, 3]
    sampler = EpisodeSampler(unequal_dataset(counts), ways=3, shots=1, queries=2, rng=0)
    seen = set()
    for _ in range(400):
        episode = sampler.sample()
        check_episode(episode, 3, 1, 2)
        for x in (episode.support_x, episode.query_x):
            cls, example = decode(x)
            assert (example < np.array(counts)[cls]).all()  # never past a class's end
            seen.update(zip(cls.tolist(), example.tolist()))
    assert seen == {(c, i) for c, n in enumerate(counts) for i in range(n)}  # and all are reachable
    assert "examples_per_class=3..25" in repr(sampler)


def test_unequal_classes_resume_from_state():
    sampler = EpisodeSampler(unequal_dataset([5, 9, 6, 7]), 2, 2, 2, rng=4)
    sampler.sample()
    state = json.loads(json.dumps(sampler.get_state()))
    expected = sampler.sample_batch(3)
    resumed = EpisodeSampler(unequal_dataset([5, 9, 6, 7]), 2, 2, 2, rng=0)
    resumed.set_state(state)
    np.testing.assert_array_equal(resumed.sample_batch(3).query_x, expected.query_x)


def test_a_class_too_small_for_shots_plus_queries_is_refused_at_construction():
    data = unequal_dataset([20, 4, 20, 3, 5])
    with pytest.raises(ValueError, match=r"^class 3 \('cat'\) has 3 examples, fewer than the shots \+ queries = 6 "
                                         r".*\(2 more classes are too small as well\)"):
        EpisodeSampler(data, 2, 1, 5, rng=0, class_names=["a", "b", "c", "cat", "d"])
    with pytest.raises(ValueError, match=r"^class 1 has 4 examples, fewer than the shots \+ queries = 5"):
        EpisodeSampler(data[:3], 2, 1, 4, rng=0)
    EpisodeSampler(data, 2, 1, 2, rng=0)  # 3 examples suffice for 1 + 2


def test_per_class_arrays_must_share_the_example_shape():
    data = unequal_dataset([5, 5]) + [np.zeros((5, 3, 2), dtype=np.float32)]
    with pytest.raises(ValueError, match=r"class 2 of class_images has shape \(5, 3, 2\), but class 0 has \(5, 2, 2\)"):
        EpisodeSampler(data, 2, 1, 1)
    with pytest.raises(ValueError, match=r"ways=3 is more than the 2 classes in class_images \(a list of 2"):
        EpisodeSampler(unequal_dataset([5, 5]), 3, 1, 1)


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(2, 12), min_size=1, max_size=8), data=st.data())
def test_property_unequal_episodes_are_valid(counts, data):
    needed = data.draw(st.integers(2, min(counts)), label="shots + queries")
    shots = data.draw(st.integers(1, needed - 1), label="shots")
    ways = data.draw(st.integers(1, len(counts)), label="ways")
    sampler = EpisodeSampler(unequal_dataset(counts), ways, shots, needed - shots, rng=data.draw(st.integers(0, 99)))
    batch = sampler.sample_batch(2)
    for t in range(2):
        task = Episode(batch.support_x[t], batch.support_y[t], batch.query_x[t], batch.query_y[t], batch.classes[t])
        check_episode(task, ways, shots, needed - shots)
