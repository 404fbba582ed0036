"""MAML++'s options (Antoniou et al. 2019), each checked alone against its definition, in
float64 on a tanh MLP (sinusoid tasks) or a tiny Conv4.

Bounds: identities that are the same arithmetic in another order (the multi-step loss as a
weighted sum of plain MAML losses, the learned step sizes against a hand-written inner
loop, first-order phases against FOMAML): relative error ≤ 1e-12. The gradient with respect
to the learned step sizes against five-point central differences (h = 1e-4, truncation
O(h⁴)): relative error ≤ 1e-7.
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from autograd import Tensor, grad
from autograd import functional as F
from helpers import host
from tinymeta.algorithms import MAML
from tinymeta.algorithms.maml import msl_weights
from tinymeta.models import MLP, Conv4
from tinymeta.tasks import EpisodeSampler, SinusoidTasks
from tinymeta.training import CosineDecay, SetIteration

EXACT = 1e-12
FD_RTOL = 1e-7

pytestmark = pytest.mark.usefixtures("numpy_kernels")   # conftest.py


def mlp_problem(seed=0):
    model = MLP([1, 8, 1], activation="tanh", init_std=0.5)
    params = model.init(np.random.default_rng(seed), dtype=np.float64)
    batch = SinusoidTasks().sample(np.random.default_rng(seed + 1), tasks=3, shots=5)
    return model, params, batch


def rel_err(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max())


# ----------------------------------------------------------------------------- multi-step loss
def test_msl_weights_start_uniform_sum_to_one_and_anneal_to_the_last_step():
    K, N = 5, 100
    assert msl_weights(K, 1, N) == pytest.approx([0.2] * 5, abs=1e-15)
    previous = None
    for i in range(1, 2 * N):
        w = msl_weights(K, i, N)
        assert sum(w) == pytest.approx(1.0, abs=1e-12)
        if previous:
            assert w[-1] >= previous[-1] and all(a <= b for a, b in zip(w[:-1], previous[:-1]))
        previous = w
    assert msl_weights(K, N + 1, N) == pytest.approx([0.006] * 4 + [1 - 4 * 0.006], abs=1e-15)


@pytest.mark.parametrize("batched", [True, False])
def test_multi_step_loss_is_the_weighted_sum_of_per_step_query_losses(batched):
    model, params, batch = mlp_problem()
    K, N, i = 3, 10, 4
    learner = MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=K, multi_step_loss=N, batched=batched)
    learner.iteration = i
    loss, grads = learner.meta_gradients(batch)
    w = msl_weights(K, i, N)
    per_step = [MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=k, batched=batched).meta_gradients(batch)
                for k in range(1, K + 1)]
    expected = sum(wk * float(l.data) for wk, (l, _) in zip(w, per_step))
    assert abs(float(loss.data) - expected) <= EXACT * abs(expected)
    for name in params:
        expected_g = sum(wk * g[name].data for wk, (_, g) in zip(w, per_step))
        assert rel_err(grads[name].data, expected_g) <= EXACT
    learner.iteration = N + 1                                 # annealing over: the last step alone
    after = float(learner.meta_gradients(batch)[0].data)
    assert after == pytest.approx(float(per_step[-1][0].data), rel=EXACT)


def test_annealed_options_need_the_iteration():
    model, params, batch = mlp_problem()
    with pytest.raises(RuntimeError, match="SetIteration"):
        MAML(model, params, F.mse_loss, inner_steps=2, multi_step_loss=5).meta_gradients(batch)


# ----------------------------------------------------------------------------- LSLR
def test_per_step_learned_step_sizes_follow_their_definition():
    """θ⁽ᵏ⁺¹⁾ = θ⁽ᵏ⁾ − α_(k, layer) ∇L(θ⁽ᵏ⁾), with α a meta-parameter per tensor and step."""
    model, params, batch = mlp_problem(1)
    learner = MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=2, per_step_lr=True)
    assert sorted(learner.meta_parameters()) == sorted(list(params) + [f"lslr/{k}" for k in params])
    rng = np.random.default_rng(2)
    for k in params:
        learner.lslr[f"lslr/{k}"].data[:] = rng.uniform(0.01, 0.1, 2)
    loss = learner.meta_loss(batch)
    xs, ys = learner.inputs(batch, "support")
    xq, yq = learner.inputs(batch, "query")
    manual = []
    for t in range(3):
        fast = {k: Tensor(v.data.copy(), requires_grad=True) for k, v in params.items()}
        for step in range(2):
            g = grad(F.mse_loss(model(fast, xs[t]), ys[t]), list(fast.values()))
            fast = {k: Tensor(v.data - learner.lslr[f"lslr/{k}"].data[step] * gk.data, requires_grad=True)
                    for (k, v), gk in zip(fast.items(), g)}
        manual.append(float(F.mse_loss(model(fast, xq[t]), yq[t]).data))
    assert abs(float(loss.data) - np.mean(manual)) <= EXACT * np.mean(manual)

    _, grads = learner.meta_gradients(batch)
    h = 1e-4
    for k in params:
        alphas = learner.lslr[f"lslr/{k}"].data
        for s in range(2):
            old, values = float(alphas[s]), []          # a number: on CuPy alphas[s] is a view
            for d in (-2, -1, 1, 2):
                alphas[s] = old + d * h
                values.append(float(learner.meta_loss(batch).data))
            alphas[s] = old
            numeric = (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * h)
            analytic = float(grads[f"lslr/{k}"].data[s])
            assert abs(analytic - numeric) <= FD_RTOL * max(abs(analytic), abs(numeric), 1e-3), (k, s)


def test_per_step_lr_started_at_alpha_is_plain_maml():
    model, params, batch = mlp_problem(3)
    a = MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=2, per_step_lr=True).meta_gradients(batch)[1]
    b = MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=2).meta_gradients(batch)[1]
    for k in params:
        assert rel_err(a[k].data, b[k].data) <= EXACT


# ----------------------------------------------------------------------------- derivative-order annealing
def test_first_order_for_the_first_iterations_then_second_order():
    model, params, batch = mlp_problem(4)
    annealed = MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=2, first_order_iterations=10)
    fo = MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=2, first_order=True).meta_gradients(batch)[1]
    so = MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=2).meta_gradients(batch)[1]
    for i, expected in ((1, fo), (10, fo), (11, so)):
        annealed.iteration = i
        got = annealed.meta_gradients(batch)[1]
        for k in params:
            assert rel_err(got[k].data, expected[k].data) <= EXACT, (i, k)
    assert max(rel_err(fo[k].data, so[k].data) for k in params) > 1e-3      # the check can fail


# ----------------------------------------------------------------------------- per-step batch-norm
def images(seed, n_classes=4, n=6, size=8):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_classes, 1, size, size)) + 0.3 * rng.standard_normal((n_classes, n, size, size))


def test_per_step_batch_norm_keeps_one_set_per_step():
    model = Conv4(3, filters=4, image_size=8, transductive=False, bn_steps=3)
    params = model.init(np.random.default_rng(0), dtype=np.float64)
    assert params["bn0.gamma"].shape == (3, 4) and model.running["bn0"][0].shape == (3, 4)
    x = Tensor(np.random.default_rng(1).standard_normal((6, 1, 8, 8)))
    before = {k: (m.copy(), v.copy()) for k, (m, v) in model.running.items()}
    model(params, x, mode="train", step=1)
    for k, (m, v) in model.running.items():
        assert np.array_equal(m[[0, 2]], before[k][0][[0, 2]]) and np.array_equal(v[[0, 2]], before[k][1][[0, 2]])
        assert not np.array_equal(m[1], before[k][0][1])
    single = Conv4(3, filters=4, image_size=8, transductive=False)
    one = single.init(np.random.default_rng(0), dtype=np.float64)
    single(one, x, mode="train")                               # the same update as one set alone
    for k in model.running:
        np.testing.assert_allclose(host(model.running[k][0])[1], host(single.running[k][0]), rtol=1e-13)
        np.testing.assert_allclose(host(model.running[k][1])[1], host(single.running[k][1]), rtol=1e-13)
    params["bn2.gamma"].data[1] = 3.0                          # set 1's scale is used at step 1 only
    out0 = host(model(params, x, mode="adapt", step=0))
    out1 = host(model(params, x, mode="adapt", step=1))
    params["bn2.gamma"].data[1] = 1.0
    assert np.array_equal(out0, host(model(params, x, mode="adapt", step=0)))
    assert not np.allclose(out1, host(model(params, x, mode="adapt", step=1)))


def test_maml_with_per_step_batch_norm_updates_each_steps_statistics():
    """With the multi-step loss the query pass after step k + 1 updates set k (MAML++'s
    indexing), so after one meta-iteration every set has moved; the shared-set model's
    parameters are one slice of the per-step model's."""
    sampler = EpisodeSampler(images(2), ways=3, shots=2, queries=2, rng=3, dtype=np.float64)
    batch = sampler.sample_batch(2)
    model = Conv4(3, filters=4, image_size=8, transductive=False, bn_steps=2)
    params = model.init(np.random.default_rng(0), dtype=np.float64)
    learner = MAML(model, params, F.cross_entropy, inner_lr=0.1, inner_steps=2, multi_step_loss=5)
    learner.iteration = 1
    fresh = {k: m.copy() for k, (m, _) in model.running.items()}
    learner.step(batch)
    for k, (m, _) in model.running.items():
        assert not np.array_equal(m[0], fresh[k][0]) and not np.array_equal(m[1], fresh[k][1])
    result = learner.evaluate(batch, steps=3)
    assert result["accuracy"].shape == (4, 2)


# ----------------------------------------------------------------------------- hooks
def test_cosine_decay_and_set_iteration():
    learner = SimpleNamespace(optimizer=SimpleNamespace(lr=None), iteration=None)
    training = SimpleNamespace(learner=learner)
    hook, tell = CosineDecay(1e-3, 100, lr_min=1e-5), SetIteration()
    for i, expected in ((1, 1e-3), (51, 1e-5 + 0.5 * (1e-3 - 1e-5)), (100, 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 99 / 100)))):
        hook.before_step(training, i)
        tell.before_step(training, i)
        assert learner.optimizer.lr == pytest.approx(expected, rel=1e-14)
        assert learner.iteration == i
