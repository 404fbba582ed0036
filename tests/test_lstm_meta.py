"""The LSTM meta-learner (Ravi & Larochelle 2017): its update against its equation on a tiny
linear learner whose gradient is written out by hand, the special case f = 1, i = α that is
one gradient step (MAML's inner step), the preprocessing by hand, the update's derivatives
against finite differences to first and second order (float64, relative error ≤ 1e-6,
``autograd.gradcheck``'s bound), and the learner contract."""
import numpy as np
import pytest

from autograd import Tensor, gradcheck, gradgradcheck
from autograd import functional as F
from tinymeta.algorithms import MAML, LSTMMetaLearner
from tinymeta.algorithms.lstm_meta import lstm_update, preprocess
from tinymeta.models import MLP
from tinymeta.tasks import EpisodeSampler
from helpers import host


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_preprocess_by_hand():
    x = np.array([0.5, -2.0, 1e-5, -1e-6])                      # e^-10 ≈ 4.5e-5
    first, second = preprocess(x)
    np.testing.assert_allclose(first, [np.log(0.5) / 10, np.log(2.0) / 10, -1.0, -1.0], rtol=1e-12)
    np.testing.assert_allclose(second, [1.0, -1.0, np.exp(10) * 1e-5, -np.exp(10) * 1e-6], rtol=1e-12)


def tiny_task(seed=0):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((4, 6, 3)) + 2.0 * rng.standard_normal((4, 1, 3))
    return EpisodeSampler(data, ways=2, shots=2, queries=2, rng=seed, dtype=np.float64).sample_batch(1)


def test_one_update_follows_the_equation_on_a_linear_learner():
    batch = tiny_task()
    model = MLP([3, 2])                                          # logits = x Wᵀ + b
    learner = LSTMMetaLearner(model, model.init(np.random.default_rng(1)), F.cross_entropy, rng=2)
    gates = {k: host(v) for k, v in learner.gates().items()}
    W, b = host(learner.params["w0"]), host(learner.params["b0"])
    x, y = host(batch.support_x[0]), host(batch.support_y[0])
    logits = x @ W.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y]).mean()
    err = (p - np.eye(2)[y]) / len(y)                            # ∂L/∂logits of the mean cross-entropy
    g = np.concatenate([(err.T @ x).ravel(), err.sum(0)])        # ∇_W, ∇_b by hand
    theta = np.concatenate([W.ravel(), b])
    features = np.stack([*preprocess(g), *np.broadcast_to(np.array(preprocess(loss))[:, None], (2, 8)), theta], -1)
    i = sig(features @ gates["w_i"][:5] + gates["b_i"])         # the 6th input, i_0, is 0
    f = sig(features @ gates["w_f"][:5] + gates["b_f"])         # the 6th input, f_0, is 0
    expected = f * theta - i * g                                 # c_1 = f ⊙ c_0 + i ⊙ (−∇)
    adapted = learner.adapt(batch, steps=1)
    got = np.concatenate([host(adapted["w0"])[0].ravel(), host(adapted["b0"])[0]])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)


def test_forget_one_and_input_alpha_is_a_gradient_step():
    batch = tiny_task(3)
    model = MLP([3, 4, 2])
    params = model.init(np.random.default_rng(4))
    alpha = 0.3
    meta = {"meta/w_i": Tensor(np.zeros(6), requires_grad=True),
            "meta/b_i": Tensor(np.array([np.log(alpha / (1 - alpha))]), requires_grad=True),   # σ(b_I) = α
            "meta/w_f": Tensor(np.zeros(6), requires_grad=True),
            "meta/b_f": Tensor(np.array([50.0]), requires_grad=True)}                           # σ(b_F) = 1
    lstm = LSTMMetaLearner(model, params, F.cross_entropy, meta=meta).adapt(batch, steps=2)
    sgd = MAML(model, params, F.cross_entropy, inner_lr=alpha).adapt(batch, steps=2)
    for k in params:
        np.testing.assert_allclose(host(lstm[k]), host(sgd[k]), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_update_first_and_second_order(check):
    rng = np.random.default_rng(5)
    g, loss = rng.standard_normal((2, 3)), rng.random(2)

    def update(theta, i_prev, f_prev, w_i, b_i, w_f, b_f):
        return lstm_update(theta, g, loss, i_prev, f_prev, {"w_i": w_i, "b_i": b_i, "w_f": w_f, "b_f": b_f})[0]
    check(update, [rng.standard_normal((2, 3)), rng.random((2, 3)), rng.random((2, 3)),
                   rng.standard_normal(6), np.array([-0.5]), rng.standard_normal(6), np.array([0.7])])


def test_initial_biases_and_the_learner_contract():
    rng = np.random.default_rng(6)
    data = rng.standard_normal((6, 8, 3)) + 2.0 * rng.standard_normal((6, 1, 3))
    sampler = EpisodeSampler(data, ways=2, shots=2, queries=3, rng=6, dtype=np.float64)
    model = MLP([3, 5, 2])
    learner = LSTMMetaLearner(model, model.init(rng), F.cross_entropy, inner_steps=2, rng=7)
    assert 4 <= learner.meta["meta/b_f"].data[0] <= 5 and -5 <= learner.meta["meta/b_i"].data[0] <= -4
    batch = sampler.sample_batch(3)
    before = learner.evaluate(batch, steps=2)
    assert before["loss"].shape == (3, 3)
    saved = learner.state_dict()
    metrics = learner.step(batch)
    np.testing.assert_allclose(metrics["loss"], before["loss"][2].mean(), rtol=1e-10)   # θ_T's query loss
    assert learner.meta["meta/b_i"].data[0] != saved["params"]["meta/b_i"][0]
    learner.load_state_dict(saved)
    np.testing.assert_allclose(learner.evaluate(batch, steps=2)["loss"], before["loss"], rtol=1e-12)
