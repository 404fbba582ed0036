"""Matching Networks: the attention as a softmax over cosine similarities and the label sum
against hand-computed values, the full context embeddings against a NumPy transcription of
the paper's equations, the loss gradient against finite differences (float64, first order:
the method needs no second derivatives), other ways and shots at test, and bad inputs."""
import numpy as np
import pytest

from autograd import Tensor, gradcheck
from helpers import host
from tinymeta.algorithms import FullContextEmbedding, MatchingNet
from tinymeta.algorithms.matching import LSTMS
from tinymeta.models import MLP, Conv4
from tinymeta.tasks import Episode, EpisodeSampler

pytestmark = pytest.mark.usefixtures("numpy_kernels")   # tiny images: Numba's thread start-up dominates


class Identity:
    """An embedding that is the input itself, so attention can be checked by hand."""
    head = ()
    features = 2

    def init(self, rng, dtype=np.float64):
        return {"w": Tensor(np.zeros(2, dtype=dtype), requires_grad=True)}

    def __call__(self, params, x, mode="train"):
        return x + 0.0 * params["w"]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def hand_episode():
    support = np.array([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])      # labels 0, 1, 1
    query = np.array([[[3.0, 4.0], [-1.0, 0.0]]])
    return Episode(support, np.array([[0, 1, 1]]), query, np.array([[1, 0]]), np.zeros((1, 2), np.int64))


def test_attention_is_a_softmax_over_cosine_similarities_and_labels_are_summed():
    learner = MatchingNet(Identity(), Identity().init(None))
    batch = hand_episode()
    a = host(learner.attention(learner.params, batch, mode="test"))[0]
    s = 1 / np.sqrt(2)
    cos = np.array([[3 / 5, 4 / 5, 7 / 5 * s],                        # c(x̂, x_i) = x̂·x_i / (‖x̂‖‖x_i‖)
                    [-1.0, 0.0, -s]])
    expected = np.exp(cos) / np.exp(cos).sum(axis=1, keepdims=True)   # a = softmax_i c
    np.testing.assert_allclose(a, expected, rtol=1e-7)
    P = np.exp(host(learner.logits(learner.params, batch, mode="test"))[0])
    np.testing.assert_allclose(P, np.stack([expected[:, 0], expected[:, 1] + expected[:, 2]], axis=1),
                               rtol=1e-7)                             # P(k) = Σ_{i: y_i = k} a_i
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    loss = float(learner.meta_loss_of(learner.params, batch).data)
    assert loss == pytest.approx(-np.mean(np.log([P[0, 1], P[1, 0]])), rel=1e-12)   # −log P(y | x̂, S)


def test_metric_scaling_multiplies_the_cosines_by_a_learned_alpha():
    """softmax_i α·c by hand with α = 3; α is a parameter the outer loop learns (its gradient
    against central differences, float64, gradcheck's relative bound 1e-6); a bad α is refused."""
    from tinymeta.algorithms.matching import SCALE
    learner = MatchingNet(Identity(), Identity().init(None), scale=3.0)
    batch = hand_episode()
    a = host(learner.attention(learner.params, batch, mode="test"))[0]
    s = 1 / np.sqrt(2)
    cos = np.array([[3 / 5, 4 / 5, 7 / 5 * s], [-1.0, 0.0, -s]])
    expected = np.exp(3.0 * cos) / np.exp(3.0 * cos).sum(axis=1, keepdims=True)   # a = softmax_i α·c
    np.testing.assert_allclose(a, expected, rtol=1e-7)
    assert learner.params[SCALE].shape == (1,) and learner.params[SCALE].dtype == np.float64
    names = list(learner.params)
    _, grads = learner.meta_gradients(batch)
    assert float(np.abs(host(grads[SCALE])).max()) > 0

    def loss(alpha):
        return learner.meta_loss_of({**learner.params, SCALE: alpha}, batch)
    gradcheck(loss, [learner.params[SCALE]])
    assert SCALE in learner.state_dict()["params"] and names == list(learner.meta_parameters())
    with pytest.raises(ValueError, match=r"MatchingNet: scale .* must be > 0, got -1"):
        MatchingNet(Identity(), Identity().init(None), scale=-1)


# --- full context embeddings, transcribed in NumPy ----------------------------------------------

def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def cell(x, h, c, p):
    i, f, g, o = np.split(x @ p["w_ih"].T + h @ p["w_hh"].T + p["b"], 4, axis=-1)
    c = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c), c


def numpy_context(p, zs, zq, K):
    """Vinyals et al., Appendix A.1-A.2, one task, one support example / query at a time."""
    lstm = {name: {k: p[f"{name}.{k}"] for k in ("w_ih", "w_hh", "b")} for name in LSTMS}
    S, D = zs.shape
    ahead, behind = np.zeros((S, D)), np.zeros((S, D))
    h = c = np.zeros(D)
    for i in range(S):
        h, c = cell(zs[i], h, c, lstm["fce.g.forward"])
        ahead[i] = h
    h = c = np.zeros(D)
    for i in reversed(range(S)):
        h, c = cell(zs[i], h, c, lstm["fce.g.backward"])
        behind[i] = h
    g = ahead + behind + zs                                 # g(x_i, S) = h→ + h← + g'(x_i)
    f = np.zeros_like(zq)
    for q, x in enumerate(zq):
        h_hat, c = np.zeros(D), np.zeros(D)
        for _ in range(K):
            h = h_hat + x
            a = np.exp(g @ h) / np.exp(g @ h).sum()
            r = a @ g
            h_hat, c = cell(x, np.concatenate([h, r]), c, lstm["fce.f"])
        f[q] = h_hat + x
    return g, f


def test_full_context_embeddings_follow_the_paper():
    base = MLP([4, 3])
    base.features = 3                                       # an MLP does not name its output width
    model = FullContextEmbedding(base, steps=3)
    params = model.init(np.random.default_rng(0), np.float64)
    assert params["fce.f.w_hh"].shape == (12, 6) and params["fce.g.forward.w_hh"].shape == (12, 3)
    rng = np.random.default_rng(1)
    zs, zq = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 4, 3))
    g, f = model.context(params, Tensor(zs), Tensor(zq))
    arrays = {k: host(v) for k, v in params.items()}
    for t in range(2):
        g_ref, f_ref = numpy_context(arrays, zs[t], zq[t], 3)
        np.testing.assert_allclose(host(g)[t], g_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(host(f)[t], f_ref, rtol=1e-10, atol=1e-12)


def smooth_setup(fce, seed=1):
    """A tanh MLP embedding (no ReLU kink or max-pool winner within the difference step)."""
    base = MLP([5, 6, 4], activation="tanh")
    base.features = 4
    model = FullContextEmbedding(base, steps=2) if fce else base
    params = model.init(np.random.default_rng(seed), dtype=np.float64)
    params = {k: Tensor(v.data * (20 if k[0] in "wb" else 1), requires_grad=True) for k, v in params.items()}
    vectors = np.random.default_rng(0).standard_normal((6, 5, 5))
    batch = EpisodeSampler(vectors, 3, 2, 2, rng=0, dtype=np.float64).sample_batch(2)
    return MatchingNet(model, params), batch


@pytest.mark.parametrize("fce", [False, True], ids=["plain", "fce"])
def test_loss_gradient_matches_finite_differences(fce):
    learner, batch = smooth_setup(fce)
    names = list(learner.params)
    if fce:
        assert any(k.startswith("fce.f.") for k in names)

    def loss(*values):
        return learner.meta_loss_of(dict(zip(names, values)), batch)
    gradcheck(loss, [learner.params[k] for k in names])
    value, grads = learner.meta_gradients(batch)
    assert all(float(np.abs(grads[k].data).max()) > 0 for k in names)
    assert float(value.data) == pytest.approx(float(loss(*[learner.params[k] for k in names]).data), rel=1e-12)


def tiny_episode(seed=0, ways=3, shots=2, queries=2):
    images = np.random.default_rng(seed).random((6, 5, 16, 16))
    return EpisodeSampler(images, ways, shots, queries, rng=seed, dtype=np.float64).sample_batch(2)


@pytest.mark.parametrize("fce", [False, True], ids=["plain", "fce"])
def test_one_model_serves_other_ways_and_shots_and_never_changes_in_evaluation(fce):
    base = Conv4(None, filters=4, image_size=16, max_pool=True, transductive=False)
    model = FullContextEmbedding(base, steps=2) if fce else base
    learner = MatchingNet(model, model.init(np.random.default_rng(2), dtype=np.float64))
    learner.step(tiny_episode(ways=4, shots=1))                   # trained 4-way 1-shot
    state = {k: v.copy() for k, v in model.state_dict().items()}
    params = {k: v.data.copy() for k, v in learner.params.items()}
    for ways, shots in ((2, 1), (5, 3)):
        r = learner.evaluate(tiny_episode(seed=3, ways=ways, shots=shots), steps=2)
        assert r["accuracy"].shape == r["loss"].shape == (3, 2)
        assert np.all(r["accuracy"] == r["accuracy"][0]) and np.all(r["loss"] > 0)
    assert all(np.array_equal(state[k], v) for k, v in model.state_dict().items())
    assert all(np.array_equal(params[k], v.data) for k, v in learner.params.items())


def test_a_class_without_support_examples_is_refused():
    batch = hand_episode()
    bad = Episode(batch.support_x, np.array([[0, 2, 2]]), batch.query_x, batch.query_y, batch.classes)
    learner = MatchingNet(Identity(), Identity().init(None))
    with pytest.raises(ValueError, match="MatchingNet: some of the 3 classes have no support example"):
        learner.logits(learner.params, bad, mode="test")
    with pytest.raises(ValueError, match="steps .* must be >= 1, got 0"):
        FullContextEmbedding(Identity(), steps=0)


def test_an_mlp_embedding_learns_separable_classes():
    """Classes that differ in the first coordinate only, drowned by noise in the second: the
    cosine of raw inputs confuses them; a learned embedding separates them."""
    rng = np.random.default_rng(4)
    images = np.stack([np.arange(12.0)[:, None] + 0.05 * rng.standard_normal((12, 20)),
                       5.0 * rng.standard_normal((12, 20))], axis=-1)
    sampler = EpisodeSampler(images, 3, 2, 5, rng=5, dtype=np.float64)
    model = MLP([2, 16, 8])
    learner = MatchingNet(model, model.init(np.random.default_rng(6), np.float64))
    before = learner.evaluate(sampler.sample_batch(20))["accuracy"].mean()
    for _ in range(150):
        learner.step(sampler.sample_batch(4))
    after = learner.evaluate(sampler.sample_batch(20))["accuracy"].mean()
    assert before < 0.8 and after > 0.9, (before, after)
