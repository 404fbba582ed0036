"""Prototypical Networks: prototypes and distances against hand-computed values, the loss
gradient against finite differences (float64, first order: the method needs no second
derivatives), one model evaluated at other ways and shots, and bad episodes."""
import numpy as np
import pytest

from autograd import Tensor, gradcheck
from autograd import functional as F
from helpers import host
from tinymeta.algorithms import ProtoNet
from tinymeta.algorithms.protonet import one_hot_means, squared_distances
from tinymeta.models import MLP, Conv4
from tinymeta.tasks import Episode, EpisodeSampler


class Identity:
    """An embedding that is the input itself: prototypes and logits can be checked by hand."""
    head = ()

    def __call__(self, params, x, mode="train"):
        return x + 0.0 * params["w"]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_prototypes_are_class_means_and_logits_negative_squared_distances():
    support = np.array([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]]])       # class 0 twice, class 1 once
    labels = np.array([[0, 0, 1]])
    query = np.array([[[1.0, 1.0], [0.0, 3.0]]])
    batch = Episode(support, labels, query, np.array([[0, 1]]), np.zeros((1, 2), np.int64))
    learner = ProtoNet(Identity(), {"w": Tensor(np.zeros(2), requires_grad=True)})
    logits = host(learner.logits(learner.params, batch, mode="test"))[0]
    # c₀ = mean((0,0), (2,0)) = (1, 0); c₁ = (0, 4)
    expected = -np.array([[(1 - 1) ** 2 + (1 - 0) ** 2, (1 - 0) ** 2 + (1 - 4) ** 2],
                          [(0 - 1) ** 2 + (3 - 0) ** 2, (0 - 0) ** 2 + (3 - 4) ** 2]])
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-12)
    means = one_hot_means(labels, 2, np.float64)
    np.testing.assert_allclose(means[0], [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])


def test_squared_distances_first_and_second_order():
    rng = np.random.default_rng(0)
    q = Tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    c = Tensor(rng.standard_normal((2, 5, 4)), requires_grad=True)
    d = host(squared_distances(q, c))
    brute = ((host(q)[:, :, None, :] - host(c)[:, None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d, brute, rtol=1e-12, atol=1e-12)
    gradcheck(squared_distances, [q, c])


def tiny_episode(seed=0, ways=3, shots=2, queries=2):
    rng = np.random.default_rng(seed)
    images = rng.random((6, 5, 16, 16))
    return EpisodeSampler(images, ways, shots, queries, rng=seed, dtype=np.float64).sample_batch(2)


def test_loss_gradient_matches_finite_differences():
    """On a smooth (tanh) embedding, so no ReLU kink or max-pool winner sits within the
    difference step: the check is of the prototype loss itself."""
    model = MLP([5, 6, 4], activation="tanh")
    params = model.init(np.random.default_rng(1), dtype=np.float64)
    params = {k: Tensor(host(v) * 50, requires_grad=True) for k, v in params.items()}   # not tiny
    vectors = np.random.default_rng(0).standard_normal((6, 5, 5))
    batch = EpisodeSampler(vectors, 3, 2, 2, rng=0, dtype=np.float64).sample_batch(2)
    learner = ProtoNet(model, params)
    names = list(params)

    def loss(*values):
        return learner.meta_loss_of(dict(zip(names, values)), batch)
    gradcheck(loss, [params[k] for k in names])
    value, grads = learner.meta_gradients(batch)
    assert float(host(value)) == pytest.approx(float(host(loss(*[params[k] for k in names]))), rel=1e-12)


def test_one_model_serves_other_ways_and_shots_and_never_changes_in_evaluation():
    model = Conv4(None, filters=4, image_size=16, max_pool=True, transductive=False)
    learner = ProtoNet(model, model.init(np.random.default_rng(2), dtype=np.float64))
    learner.step(tiny_episode(ways=4, shots=1))                   # trained 4-way 1-shot
    state = {k: v.copy() for k, v in model.state_dict().items()}
    for ways, shots in ((2, 1), (5, 3)):
        r = learner.evaluate(tiny_episode(seed=3, ways=ways, shots=shots), steps=2)
        assert r["accuracy"].shape == r["loss"].shape == (3, 2)
        assert np.all(r["accuracy"] == r["accuracy"][0])             # no gradient steps: rows equal
    assert all(np.array_equal(state[k], v) for k, v in model.state_dict().items())


def test_a_class_without_support_examples_is_refused():
    labels = np.array([[0, 0, 2]])
    with pytest.raises(ValueError, match="some of the 3 classes have no support example"):
        one_hot_means(labels, 3, np.float64)


def test_an_mlp_embedding_learns_separable_classes():
    """Classes that differ in the first coordinate only, drowned by noise in the second: raw
    distances confuse them; a learned embedding that shrinks the noise separates them."""
    rng = np.random.default_rng(4)
    images = np.stack([np.arange(12.0)[:, None] + 0.05 * rng.standard_normal((12, 20)),
                       5.0 * rng.standard_normal((12, 20))], axis=-1)
    sampler = EpisodeSampler(images, 3, 2, 5, rng=5, dtype=np.float64)
    model = MLP([2, 16, 8])
    learner = ProtoNet(model, model.init(np.random.default_rng(6), np.float64))
    before = learner.evaluate(sampler.sample_batch(20))["accuracy"].mean()
    for _ in range(150):
        learner.step(sampler.sample_batch(4))
    after = learner.evaluate(sampler.sample_batch(20))["accuracy"].mean()
    assert before < 0.8 and after > 0.9, (before, after)
