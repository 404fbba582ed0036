"""The batched task axis (``batched=True``) against the textbook per-task loop
(``batched=False``) for every algorithm, on a tanh MLP (sinusoids) and on the tiny Conv4
(3-way 2-shot episodes, transductive batch-norm: statistics per task in both modes).

Tolerance: float64, relative 1e-10 (``assert_allclose(rtol=1e-10)``) with an absolute floor
of 1e-10 × the largest entry of the compared quantity. The floor is needed for entries
that are exactly zero in exact arithmetic (a conv bias in front of batch-norm has a zero
gradient; both modes give ~1e-17 rounding noise there). The two modes differ only in
summation order, so the expected agreement is ~1e-14.
For Reptile-Adam the conv biases in front of batch-norm are excluded from the comparison
(Adam rescales their ~1e-17 noise gradient by lr/ε = 1e6, so both modes move them by
noise only); they are checked to stay within 1e-8 of θ instead.
"""
import numpy as np
import pytest

from autograd import Tensor, backend
from autograd import functional as F
from helpers import host
from tinymeta.algorithms import ANIL, MAML, MetaSGD, Reptile
from tinymeta.models import MLP, Conv4
from tinymeta.tasks import EpisodeSampler, SinusoidTasks

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("numpy_kernels")   # conftest.py


def mlp_problem(seed=3):
    model = MLP([1, 8, 8, 1], activation="tanh", init_std=0.5)
    params = model.init(np.random.default_rng(seed), dtype=np.float64)
    batch = SinusoidTasks().sample(np.random.default_rng(seed + 1), tasks=4, shots=5, queries=7)
    return model, params, batch, F.mse_loss


def conv_problem(seed=3):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((5, 1, 8, 8)) + 0.3 * rng.standard_normal((5, 6, 8, 8))
    model = Conv4(ways=3, in_channels=1, filters=4, image_size=8)
    params = model.init(np.random.default_rng(seed + 1), dtype=np.float64)
    sampler = EpisodeSampler(images, ways=3, shots=2, queries=2, rng=seed + 2, dtype=np.float64)
    return model, params, sampler.sample_batch(3), F.cross_entropy


PROBLEMS = {"mlp": mlp_problem, "conv": conv_problem}
LR = {"mlp": 0.02, "conv": 0.1}


def copy_params(params):
    return {k: Tensor(v.data.copy(), requires_grad=True) for k, v in params.items()}


def close(a, b, what):
    a, b = host(a), host(b)
    floor = TOL * max(np.abs(a).max(initial=0), np.abs(b).max(initial=0))
    np.testing.assert_allclose(a, b, rtol=TOL, atol=floor, err_msg=what)


GRADIENT_LEARNERS = {
    "maml1": lambda m, p, l, lr, b: MAML(m, p, l, inner_lr=lr, inner_steps=1, batched=b),
    "maml2": lambda m, p, l, lr, b: MAML(m, p, l, inner_lr=lr, inner_steps=2, batched=b),
    "fomaml": lambda m, p, l, lr, b: MAML(m, p, l, inner_lr=lr, inner_steps=2, first_order=True, batched=b),
    "anil": lambda m, p, l, lr, b: ANIL(m, p, l, inner_lr=lr, inner_steps=2, batched=b),
    "metasgd": lambda m, p, l, lr, b: MetaSGD(m, p, l, inner_lr=lr, inner_steps=1, batched=b),
}


def make_pair(kind, name):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    a = GRADIENT_LEARNERS[name](model, copy_params(params), loss_fn, LR[kind], True)
    b = GRADIENT_LEARNERS[name](model, copy_params(params), loss_fn, LR[kind], False)
    if name == "metasgd":                  # learned, non-uniform step sizes, equal in both
        rng = np.random.default_rng(11)
        for k in a.alpha:
            a.alpha[k].data[...] = backend.from_numpy(LR[kind] * rng.uniform(0.5, 1.5, size=a.alpha[k].shape))
            b.alpha[k].data[...] = a.alpha[k].data
    return a, b, batch


@pytest.mark.parametrize("name", list(GRADIENT_LEARNERS))
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_meta_loss_and_gradients_equal_in_both_modes(kind, name):
    batched, looped, batch = make_pair(kind, name)
    assert batched.batched and not looped.batched
    l1, g1 = batched.meta_gradients(batch)
    l2, g2 = looped.meta_gradients(batch)
    close(float(l1.data), float(l2.data), "meta-loss")
    assert set(g1) == set(g2) == set(batched.meta_parameters())
    scale = max(np.abs(host(g)).max() for g in g2.values())
    assert scale > 1e-6
    for k in g2:
        assert g1[k] is not None and g2[k] is not None, k
        np.testing.assert_allclose(host(g1[k]), host(g2[k]), rtol=TOL, atol=TOL * scale, err_msg=k)


@pytest.mark.parametrize("name", ["maml1", "anil", "metasgd"])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_meta_step_equal_in_both_modes(kind, name):
    """One full outer step (Adam on the meta-gradient) leaves equal parameters."""
    batched, looped, batch = make_pair(kind, name)
    before = {k: host(v).copy() for k, v in batched.meta_parameters().items()}
    assert batched.step(batch)["loss"] == pytest.approx(looped.step(batch)["loss"], rel=TOL)
    for k, p in batched.meta_parameters().items():
        q = looped.meta_parameters()[k]
        # Adam's first step moves every entry by ≈ lr·sign(g): compare the moves, not θ
        moved1, moved2 = host(p) - before[k], host(q) - before[k]
        if kind == "conv" and k.startswith("conv") and k.endswith(".b"):
            continue                      # zero-gradient biases: sign of rounding noise
        close(moved1, moved2, k)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_reptile_updates_equal_in_both_modes(kind, optimizer):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    theta = {k: host(v).copy() for k, v in params.items()}
    lr = 0.01 if optimizer == "adam" else LR[kind]
    learners = [Reptile(model, copy_params(params), loss_fn, inner_lr=lr, inner_steps=3, outer_lr=0.5,
                        inner_optimizer=optimizer, batched=b) for b in (True, False)]
    W1, W2 = ({k: host(w) for k, w in r.task_weights(batch).items()} for r in learners)
    r1, r2 = (r.step(batch) for r in learners)
    close(r1["loss"], r2["loss"], "mean query loss after adaptation")
    skip = {k for k in params if kind == "conv" and optimizer == "adam" and k.startswith("conv") and k.endswith(".b")}
    scale = max(np.abs(W2[k] - theta[k]).max() for k in params)
    for k in params:
        assert W1[k].shape == W2[k].shape == (len(batch.support_x),) + theta[k].shape, k
        p1, p2 = host(learners[0].params[k]), host(learners[1].params[k])
        if k in skip:
            assert np.abs(p1 - theta[k]).max() < 1e-8 and np.abs(p2 - theta[k]).max() < 1e-8, k
            continue
        np.testing.assert_allclose(W1[k], W2[k], rtol=TOL, atol=TOL * scale, err_msg=k)
        np.testing.assert_allclose(p1, p2, rtol=TOL, atol=TOL * scale, err_msg=k)


EVAL_LEARNERS = {
    "maml": lambda m, p, l, lr, b: MAML(m, p, l, inner_lr=lr, inner_steps=1, batched=b),
    "anil": lambda m, p, l, lr, b: ANIL(m, p, l, inner_lr=lr, inner_steps=1, batched=b),
    "metasgd": GRADIENT_LEARNERS["metasgd"],
    "reptile": lambda m, p, l, lr, b: Reptile(m, p, l, inner_lr=lr, inner_steps=1, batched=b),
}


@pytest.mark.parametrize("name", list(EVAL_LEARNERS))
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_evaluate_equal_in_both_modes(kind, name):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    a, b = (EVAL_LEARNERS[name](model, copy_params(params), loss_fn, LR[kind], m) for m in (True, False))
    classification = kind == "conv"
    steps = 3
    e1 = a.evaluate(batch, steps, classification=classification)
    e2 = b.evaluate(batch, steps, classification=classification)
    T = len(batch.support_x)
    assert e1["loss"].shape == e2["loss"].shape == (steps + 1, T)
    close(e1["loss"], e2["loss"], "evaluate loss")
    assert not np.allclose(e1["loss"][0], e1["loss"][-1]), "adaptation did not change the loss"
    if classification:
        assert e1["accuracy"].shape == e2["accuracy"].shape == (steps + 1, T)
        np.testing.assert_array_equal(e1["accuracy"], e2["accuracy"])
    else:
        assert "accuracy" not in e1 and "accuracy" not in e2
    # evaluation never moves θ
    for k, p in params.items():
        assert np.array_equal(host(a.params[k]), host(p)) and np.array_equal(host(b.params[k]), host(p)), k


# ----------------------------------------------------------------------------- non-transductive BN
def nontransductive_problem(seed=3):
    model, _, batch, loss_fn = conv_problem(seed)
    model = Conv4(ways=3, in_channels=1, filters=4, image_size=8, transductive=False)
    params = model.init(np.random.default_rng(seed + 1), dtype=np.float64)
    return model, params, batch, loss_fn


def test_nontransductive_running_statistics_equal_in_both_modes():
    states = []
    for b in (True, False):
        model, params, batch, loss_fn = nontransductive_problem()
        MAML(model, params, loss_fn, inner_lr=0.1, inner_steps=1, batched=b).meta_gradients(batch)
        states.append(model.state_dict())
    for k in states[0]:
        close(states[0][k], states[1][k], k)


def test_nontransductive_evaluate_uses_running_statistics():
    model, params, batch, loss_fn = nontransductive_problem()
    learner = MAML(model, params, loss_fn, inner_lr=0.1, inner_steps=1)
    learner.meta_gradients(batch)                       # some training: running stats move
    running = {k: v.copy() for k, v in model.state_dict().items()}
    expected = [float(loss_fn(model(params, Tensor(batch.query_x[t]), mode="test"),
                              Tensor(batch.query_y[t])).data) for t in range(len(batch.query_x))]
    got = learner.evaluate(batch, 0)["loss"][0]
    after = model.state_dict()
    assert all(np.array_equal(running[k], after[k]) for k in running), "evaluate changed the running statistics"
    close(got, expected, "meta-test query loss with running statistics")
