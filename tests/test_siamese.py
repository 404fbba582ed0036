"""Siamese networks and the pair sampler: the weighted L1 distance and the binary
cross-entropy by hand, classification by the most similar support image (not the class
mean), the loss gradient against finite differences (float64, first order), the sampler's
balance, distinctness and resumable stream, a learned embedding that verifies better than
chance, and bad inputs."""
import numpy as np
import pytest

from autograd import Tensor, gradcheck, gradgradcheck
from helpers import host
from tinymeta.algorithms import Siamese, SiameseModel
from tinymeta.algorithms.siamese import binary_cross_entropy
from tinymeta.models import MLP, Conv4
from tinymeta.tasks import Episode, EpisodeSampler
from tinymeta.tasks.pairs import PairSampler

pytestmark = pytest.mark.usefixtures("numpy_kernels")   # tiny images: Numba's thread start-up dominates


class Identity:
    """An embedding that is the input itself."""
    features = 2

    def init(self, rng, dtype=np.float64):
        return {"w": Tensor(np.zeros(2, dtype=dtype), requires_grad=True)}

    def __call__(self, params, x, mode="train"):
        return x + 0.0 * params["w"]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def identity_learner(alpha=(-1.0, -2.0), beta=0.5):
    model = SiameseModel(Identity())
    params = model.init(np.random.default_rng(0), np.float64)
    params["siamese.alpha"].data[...] = alpha
    params["siamese.beta"].data[...] = beta
    return Siamese(model, params)


def test_weighted_l1_logit_by_hand():
    learner = identity_learner()
    z1, z2 = Tensor(np.array([[1.0, 3.0], [0.0, 0.0]])), Tensor(np.array([[4.0, 1.0], [0.0, 0.0]]))
    got = host(learner.model.logit(learner.params, z1, z2))
    np.testing.assert_allclose(got, [-1 * 3 - 2 * 2 + 0.5, 0.5], rtol=1e-12)   # Σ α_j |z1 − z2|_j + β


def test_binary_cross_entropy_by_hand_and_for_large_logits():
    z = Tensor(np.array([0.3, -1.2, 40.0, -40.0, 800.0]))
    t = Tensor(np.array([1.0, 0.0, 1.0, 1.0, 0.0]))
    p = 1 / (1 + np.exp(-np.array([0.3, -1.2])))
    expected = [-np.log(p[0]), -np.log(1 - p[1]), np.log1p(np.exp(-40.0)), 40.0 + np.log1p(np.exp(-40.0)), 800.0]
    np.testing.assert_allclose(host(binary_cross_entropy(z, t)), expected, rtol=1e-12, atol=1e-15)
    gradcheck(binary_cross_entropy, [np.array([0.3, -1.2, 4.0]), np.array([1.0, 0.0, 0.3])])
    gradgradcheck(binary_cross_entropy, [np.array([0.3, -1.2, 4.0]), np.array([1.0, 0.0, 0.3])])


def test_classification_by_the_most_similar_support_image():
    """Class 0 has one image right at the query and one far away; class 1 two images at a
    middling distance. The class mean (a prototype) is nearer for class 1; Koch et al.'s rule,
    the most similar single image, picks class 0."""
    support = np.array([[[0.0, 0.0], [10.0, 10.0], [1.0, 1.0], [-1.0, -1.0]]])
    batch = Episode(support, np.array([[0, 0, 1, 1]]), np.array([[[0.1, 0.0]]]), np.array([[0]]),
                    np.zeros((1, 2), np.int64))
    learner = identity_learner()
    scores = host(learner.logits(learner.params, batch, mode="test"))[0, 0]
    pair = [0.5 - 0.1, 0.5 - 9.9 - 20, 0.5 - 0.9 - 2, 0.5 - 1.1 - 2]     # Σ α|x̂ − x_i| + β per support image
    np.testing.assert_allclose(scores, [max(pair[:2]), max(pair[2:])], rtol=1e-12)
    r = learner.evaluate(batch, steps=2)
    assert r["accuracy"].shape == (3, 1) and np.all(r["accuracy"] == 1.0)
    same = np.array([1.0, 1.0, 0.0, 0.0])
    z = np.array(pair)
    bce = np.mean(np.logaddexp(0, z) - same * z)
    np.testing.assert_allclose(r["loss"], bce, rtol=1e-12)             # every (query, support) pair


def smooth_setup():
    embedding = MLP([5, 6, 4], activation="tanh")
    embedding.features = 4
    model = SiameseModel(embedding)
    params = model.init(np.random.default_rng(1), np.float64)
    params = {k: Tensor(v.data * (20 if k[0] in "wb" else 1), requires_grad=True) for k, v in params.items()}
    vectors = np.random.default_rng(0).standard_normal((6, 5, 5))
    return Siamese(model, params), vectors


def test_loss_gradient_matches_finite_differences():
    learner, vectors = smooth_setup()
    pairs = PairSampler(vectors, rng=0, dtype=np.float64).sample_batch(6)
    names = list(learner.params)

    def loss(*values):
        return learner.meta_loss_of(dict(zip(names, values)), pairs)
    gradcheck(loss, [learner.params[k] for k in names])
    value, grads = learner.meta_gradients(pairs)
    assert float(value.data) == pytest.approx(float(loss(*[learner.params[k] for k in names]).data), rel=1e-12)
    assert 0.0 <= learner.last_metrics["accuracy"] <= 1.0


# --- the pair sampler -------------------------------------------------------------------------

def test_pairs_are_balanced_distinct_and_labelled():
    images = np.arange(7 * 4 * 3 * 3, dtype=np.float64).reshape(7, 4, 3, 3)   # every image unique
    sampler = PairSampler(images, rng=1, dtype=np.float64)
    seen = set()
    for n in (1, 2, 9, 64):
        pairs = sampler.sample_batch(n)
        assert pairs.first.shape == pairs.second.shape == (n, 1, 3, 3) and len(pairs) == n
        assert int(pairs.same.sum()) == n // 2                          # exactly ⌊n/2⌋ same pairs
        one, other = pairs.classes[:, 0], pairs.classes[:, 1]
        np.testing.assert_array_equal(pairs.same == 1.0, one == other)
        for a, b, c1, c2 in zip(pairs.first, pairs.second, one, other):
            assert not np.array_equal(a, b)                            # two distinct drawings
            ia, ib = int(a[0, 0, 0]) // 36, int(b[0, 0, 0]) // 36       # the class each image came from
            assert (ia, ib) == (c1, c2)
            seen.add(c1)
    assert seen == set(range(7))
    order = sampler.sample_batch(64).same
    assert 0 < order[:32].sum() < 32                                   # shuffled, not same-first


def test_pairs_from_classes_of_unequal_size():
    sizes = (2, 3, 5)
    classes = [np.full((k, 2, 2), 10.0 * c) + np.arange(k)[:, None, None] for c, k in enumerate(sizes)]
    pairs = PairSampler(classes, rng=2, dtype=np.float64).sample_batch(200)
    assert int(pairs.same.sum()) == 100
    for a, b, (c1, c2), same in zip(pairs.first, pairs.second, pairs.classes, pairs.same):
        assert (int(a[0, 0, 0]) // 10, int(b[0, 0, 0]) // 10) == (c1, c2)      # drawn from its class
        assert (same == 1.0) == (c1 == c2) and not np.array_equal(a, b)
    drawings = {(c, int(x[0, 0, 0]) % 10) for x, c in zip(pairs.first, pairs.classes[:, 0])}
    assert drawings == {(c, k) for c, n in enumerate(sizes) for k in range(n)}   # every drawing, none beyond


def test_pair_stream_resumes_where_it_was_saved():
    images = np.random.default_rng(0).random((5, 3, 4, 4))
    sampler = PairSampler(images, rng=3)
    sampler.sample_batch(5)
    state = sampler.get_state()
    first = sampler.sample_batch(8)
    sampler.set_state(state)
    again = sampler.sample_batch(8)
    np.testing.assert_array_equal(first.first, again.first)
    np.testing.assert_array_equal(first.classes, again.classes)
    with pytest.raises(ValueError, match="PairSampler.set_state needs a state dict"):
        sampler.set_state({"bogus": 1})


@pytest.mark.parametrize("shape, message", [
    ((1, 5, 4, 4), "at least 2 classes .* there are 1 classes"),
    ((5, 1, 4, 4), "2 examples in each .* class 0 has 1"),
])
def test_pair_sampler_refuses_too_few_classes_or_drawings(shape, message):
    with pytest.raises(ValueError, match=message):
        PairSampler(np.zeros(shape))
    with pytest.raises(ValueError, match="positive int number of pairs, got n=0"):
        PairSampler(np.zeros((3, 3, 4, 4))).sample_batch(0)


# --- learning -----------------------------------------------------------------------------------

def test_a_learned_embedding_verifies_and_classifies():
    """Classes that differ in the first coordinate, drowned by noise in the second: trained on
    pairs, the network tells same from different and labels queries of unseen episodes."""
    rng = np.random.default_rng(4)
    images = np.stack([np.arange(12.0)[:, None] + 0.05 * rng.standard_normal((12, 20)),
                       5.0 * rng.standard_normal((12, 20))], axis=-1)
    pairs = PairSampler(images, rng=5, dtype=np.float64)
    episodes = EpisodeSampler(images, 3, 1, 5, rng=6, dtype=np.float64)
    embedding = MLP([2, 16, 8])
    embedding.features = 8
    model = SiameseModel(embedding)
    learner = Siamese(model, model.init(np.random.default_rng(7), np.float64))
    before = learner.evaluate(episodes.sample_batch(20))["accuracy"].mean()
    for _ in range(200):
        metrics = learner.step(pairs.sample_batch(32))
    after = learner.evaluate(episodes.sample_batch(20))["accuracy"].mean()
    assert before < 0.8 and after > 0.9 and metrics["accuracy"] > 0.85, (before, after, metrics)


def test_conv4_twins_at_other_ways_and_shots_never_change_in_evaluation():
    model = SiameseModel(Conv4(None, filters=4, image_size=16, max_pool=True, transductive=False))
    learner = Siamese(model, model.init(np.random.default_rng(2), dtype=np.float64))
    images = np.random.default_rng(0).random((6, 5, 16, 16))
    learner.step(PairSampler(images, rng=0, dtype=np.float64).sample_batch(8))
    state = {k: v.copy() for k, v in model.state_dict().items()}
    for ways, shots in ((2, 1), (5, 3)):
        batch = EpisodeSampler(images, ways, shots, 2, rng=1, dtype=np.float64).sample_batch(2)
        r = learner.evaluate(batch, steps=0)
        assert r["accuracy"].shape == r["loss"].shape == (1, 2)
    assert all(np.array_equal(state[k], v) for k, v in model.state_dict().items())
