"""iMAML and its conjugate-gradient solver, checked against their definitions (float64).

Bounds:
  * CG on an n-dimensional SPD system, n steps: relative error ≤ 1e-10 against
    ``numpy.linalg.solve`` (exact in exact arithmetic; only rounding of a condition number
    ≲ 1e2 remains). One step must equal the steepest-descent step (rᵀr / rᵀAr) r to 1e-12.
  * Quadratic inner loss (a linear model with squared error), where
        φ* = (H + λI)⁻¹(c + λθ),  ∇θ L(φ*) = (I + H/λ)⁻¹ ∇L(φ*)
    in closed form: relative error ≤ 1e-8 (brief's bound) with CG steps = dimension and an
    inner descent run to convergence (its contraction factor ≤ 0.75 per step, 300 steps).
  * Tanh MLP: the implicit meta-gradient against five-point central differences (h = 1e-3,
    truncation O(h⁴)) of θ ↦ mean query loss at the *exactly solved* regularised inner
    problem (descent run to a gradient norm below 1e-13): relative error ≤ 1e-6.
"""
from types import SimpleNamespace

import numpy as np
import pytest

from autograd import backend, functional as F, grad
from helpers import host
from tinymeta.algorithms import IMAML
from tinymeta.algorithms.cg import conjugate_gradient
from tinymeta.models import MLP
from tinymeta.tasks import SinusoidTasks

CG_RTOL = 1e-10
CLOSED_FORM_RTOL = 1e-8
FD_RTOL = 1e-6


def rel_err(a, b):
    a, b = host(a), host(b)
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max())


def spd(rng, n):
    m = rng.standard_normal((n, n))
    return m.T @ m / n + 0.5 * np.eye(n)


# ----------------------------------------------------------------------------- CG
def test_cg_solves_a_known_spd_system_in_n_steps():
    rng = np.random.default_rng(0)
    A, b = spd(rng, 7), rng.standard_normal(7)
    A_dev = backend.from_numpy(A)
    x = conjugate_gradient(lambda v: [A_dev @ v[0]], [backend.from_numpy(b)], steps=7)[0]
    assert rel_err(x, np.linalg.solve(A, b)) <= CG_RTOL


def test_cg_one_step_is_steepest_descent():
    rng = np.random.default_rng(1)
    A, b = spd(rng, 5), rng.standard_normal(5)
    A_dev = backend.from_numpy(A)
    x = conjugate_gradient(lambda v: [A_dev @ v[0]], [backend.from_numpy(b)], steps=1)[0]
    assert rel_err(x, (b @ b) / (b @ A @ b) * b) <= 1e-12


def test_cg_trace_records_each_directions_curvature():
    """pᵀAp/pᵀp of every direction: the first is b's Rayleigh quotient; an indefinite A shows
    a negative one (the directions are A-conjugate, so they span A's negative eigenvector)."""
    rng = np.random.default_rng(2)
    A, b = spd(rng, 5), rng.standard_normal(5)
    trace = []
    conjugate_gradient(lambda v: [backend.from_numpy(A) @ v[0]], [backend.from_numpy(b)], steps=3, trace=trace)
    assert len(trace) == 3 and all(host(c).shape == (1,) and host(c)[0] > 0 for c in trace)
    assert host(trace[0])[0] == pytest.approx(b @ A @ b / (b @ b), rel=1e-12)
    Q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    indefinite = Q @ np.diag([-3.0, 1.0, 2.0, 4.0, 5.0]) @ Q.T
    trace = []
    conjugate_gradient(lambda v: [backend.from_numpy(indefinite) @ v[0]], [backend.from_numpy(b)], steps=5,
                       trace=trace)
    assert min(host(c)[0] for c in trace) < 0


def test_cg_task_axis_solves_each_task_alone():
    """Three systems at once, split over two arrays, equal each solved separately: each
    task keeps its own α and β (a shared α would differ after one step)."""
    rng = np.random.default_rng(2)
    As, bs = [spd(rng, 5) for _ in range(3)], rng.standard_normal((3, 5))

    As_dev, bs_dev = [backend.from_numpy(A) for A in As], backend.from_numpy(bs)

    def matvec(v):
        full = backend.xp.concatenate([v[0], v[1]], axis=1)
        out = backend.xp.stack([A @ f for A, f in zip(As_dev, full)])
        return [out[:, :2], out[:, 2:]]
    for steps in (2, 5):
        x = np.concatenate(host(conjugate_gradient(matvec, [bs_dev[:, :2], bs_dev[:, 2:]], steps, task_axis=True)),
                           axis=1)
        for t in range(3):
            alone = conjugate_gradient(lambda v: [As_dev[t] @ v[0]], [bs_dev[t]], steps)[0]
            assert rel_err(x[t], alone) <= 1e-12
    assert rel_err(x, np.stack([np.linalg.solve(A, b) for A, b in zip(As, bs)])) <= CG_RTOL


# ----------------------------------------------------------------------------- quadratic
def linear_regression_tasks(seed, tasks=3, n=10, d=4):
    rng = np.random.default_rng(seed)
    def xs(): return rng.standard_normal((tasks, n, d))
    def ys(): return rng.standard_normal((tasks, n, 1))
    return SimpleNamespace(support_x=xs(), support_y=ys(), query_x=xs(), query_y=ys())


def closed_form_meta_gradient(theta, batch, lam, damping=0.0):
    """(1/T) Σᵢ λ(Hᵢ + λI)⁻¹ ∇Lᵢ(φ*ᵢ) for squared error of z = [w, b]: Hᵢ = (2/N)AᵢᵀAᵢ; with
    ``damping`` d, (1/T) Σᵢ (I + Hᵢ/(λ + d))⁻¹ ∇Lᵢ(φ*ᵢ)."""
    total = np.zeros_like(theta)
    T = len(batch.support_x)
    for t in range(T):
        A = np.hstack([batch.support_x[t], np.ones((len(batch.support_x[t]), 1))])
        B = np.hstack([batch.query_x[t], np.ones((len(batch.query_x[t]), 1))])
        H = 2 / len(A) * A.T @ A
        phi = np.linalg.solve(H + lam * np.eye(len(theta)), 2 / len(A) * A.T @ batch.support_y[t][:, 0] + lam * theta)
        g = 2 / len(B) * B.T @ (B @ phi - batch.query_y[t][:, 0])
        total += np.linalg.solve(np.eye(len(theta)) + H / (lam + damping), g) / T
    return total


@pytest.mark.parametrize("batched", [True, False])
def test_quadratic_inner_loss_matches_closed_form(batched):
    model = MLP([4, 1], init_std=0.5)
    params = model.init(np.random.default_rng(3), dtype=np.float64)
    batch = linear_regression_tasks(4)
    lam = 2.0
    # α = 1/(λ + 8) ≥ 1/(λ + L): contraction ≤ 1 − λ/(λ + 8) = 0.8 per step
    learner = IMAML(model, params, F.mse_loss, inner_lr=1 / (lam + 8), inner_steps=300, lam=lam,
                    cg_steps=5, batched=batched)
    H_max = max(np.linalg.eigvalsh(2 / 10 * np.hstack([x, np.ones((10, 1))]).T @ np.hstack([x, np.ones((10, 1))])).max()
                for x in batch.support_x)
    assert H_max < 8, "the step size above assumes the support Hessians' eigenvalues < 8"
    _, grads = learner.meta_gradients(batch)
    theta = np.concatenate([host(params["w0"])[0], host(params["b0"])])
    analytic = np.concatenate([host(grads["w0"])[0], host(grads["b0"])])
    assert rel_err(analytic, closed_form_meta_gradient(theta, batch, lam)) <= CLOSED_FORM_RTOL


def test_cg_damping_solves_the_damped_system():
    """cg_damping d: (I + H/(λ + d))⁻¹ ∇L at the same φ* (the inner problem keeps λ)."""
    model = MLP([4, 1], init_std=0.5)
    params = model.init(np.random.default_rng(3), dtype=np.float64)
    batch = linear_regression_tasks(4)
    learner = IMAML(model, params, F.mse_loss, inner_lr=0.1, inner_steps=300, lam=2.0, cg_steps=5, cg_damping=10.0)
    _, grads = learner.meta_gradients(batch)
    theta = np.concatenate([host(params["w0"])[0], host(params["b0"])])
    analytic = np.concatenate([host(grads["w0"])[0], host(grads["b0"])])
    assert rel_err(analytic, closed_form_meta_gradient(theta, batch, 2.0, damping=10.0)) <= CLOSED_FORM_RTOL
    assert rel_err(analytic, closed_form_meta_gradient(theta, batch, 2.0)) > 1e-3      # not the undamped one


def test_too_few_cg_steps_are_not_the_closed_form():
    """The closed-form check can fail: one CG step on the 5-dimensional system is far off."""
    model = MLP([4, 1], init_std=0.5)
    params = model.init(np.random.default_rng(3), dtype=np.float64)
    batch = linear_regression_tasks(4)
    learner = IMAML(model, params, F.mse_loss, inner_lr=0.1, inner_steps=300, lam=0.5, cg_steps=1)
    _, grads = learner.meta_gradients(batch)
    theta = np.concatenate([host(params["w0"])[0], host(params["b0"])])
    analytic = np.concatenate([host(grads["w0"])[0], host(grads["b0"])])
    assert rel_err(analytic, closed_form_meta_gradient(theta, batch, 0.5)) > 1e-3


# ----------------------------------------------------------------------------- small network
def test_mlp_meta_gradient_matches_finite_differences_of_the_solved_inner_problem():
    model = MLP([1, 4, 1], activation="tanh", init_std=0.5)
    params = model.init(np.random.default_rng(5), dtype=np.float64)
    batch = SinusoidTasks().sample(np.random.default_rng(6), tasks=2, shots=5)
    n = sum(p.data.size for p in params.values())
    LAM = 10.0     # with α = 0.04 the descent contracts: stationarity ≤ 1e-13 after 300 steps
    learner = IMAML(model, params, F.mse_loss, inner_lr=0.04, inner_steps=300, lam=LAM, cg_steps=2 * n)
    _, grads = learner.meta_gradients(batch)
    xs, ys = learner.inputs(batch, "support")
    fast = learner.solve_inner(learner.tasks_view(params, 2), xs, ys)
    stationarity = learner.support_loss(fast, xs, ys, "adapt")
    g = grad(stationarity, list(fast.values()))
    prox = [host(gi) + LAM * (host(f) - host(params[k])) for gi, (k, f) in zip(g, fast.items())]
    assert max(np.abs(p).max() for p in prox) < 1e-13, "the inner problem is not solved exactly"

    def meta_loss():
        return float(learner.meta_gradients(batch)[0].data)
    h = 1e-3
    for k, p in params.items():
        numeric = np.zeros(p.data.shape)
        for i in np.ndindex(p.data.shape):
            old = float(p.data[i])                  # a number: on CuPy p.data[i] is a view of p
            values = []
            for step in (-2, -1, 1, 2):
                p.data[i] = old + step * h
                values.append(meta_loss())
            p.data[i] = old
            numeric[i] = (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * h)
        assert rel_err(grads[k].data, numeric) <= FD_RTOL, k


# ----------------------------------------------------------------------------- contract
def test_nothing_of_the_inner_trajectory_is_kept():
    """The meta-gradient does not depend on how φ* was reached: with the inner steps run
    until convergence, two different step sizes give the same meta-gradient."""
    model = MLP([1, 4, 1], activation="tanh", init_std=0.5)
    params = model.init(np.random.default_rng(7), dtype=np.float64)
    batch = SinusoidTasks().sample(np.random.default_rng(8), tasks=2, shots=5)
    a = IMAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=800, lam=4.0, cg_steps=40).meta_gradients(batch)[1]
    b = IMAML(model, params, F.mse_loss, inner_lr=0.15, inner_steps=300, lam=4.0, cg_steps=40).meta_gradients(batch)[1]
    for k in a:
        assert rel_err(a[k].data, b[k].data) <= 1e-10


def test_evaluate_and_step_follow_the_contract():
    model = MLP([1, 8, 1], activation="tanh", init_std=0.5)
    params = model.init(np.random.default_rng(9), dtype=np.float64)
    batch = SinusoidTasks().sample(np.random.default_rng(10), tasks=3, shots=5)
    learner = IMAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=5, lam=1.0)
    before = {k: host(p).copy() for k, p in params.items()}
    result = learner.evaluate(batch, steps=4)
    assert result["loss"].shape == (5, 3)
    assert all(np.array_equal(before[k], host(p)) for k, p in params.items())
    assert result["loss"][-1].mean() < result["loss"][0].mean()
    looped = IMAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=5, lam=1.0, batched=False)
    np.testing.assert_allclose(looped.evaluate(batch, steps=4)["loss"], result["loss"], rtol=1e-10)
    g_batched = learner.meta_gradients(batch)[1]
    g_looped = looped.meta_gradients(batch)[1]
    for k in g_batched:
        np.testing.assert_allclose(host(g_batched[k]), host(g_looped[k]), rtol=1e-10, atol=1e-14)
    metrics = learner.step(batch)
    assert np.isfinite(metrics["loss"])
    assert any(not np.array_equal(before[k], host(p)) for k, p in params.items())


def test_bad_hyperparameters_are_one_sentence():
    model = MLP([1, 1])
    with pytest.raises(ValueError, match="IMAML: needs"):
        IMAML(model, model.init(np.random.default_rng(0)), F.mse_loss, lam=0.0)
    with pytest.raises(ValueError, match="cg_damping=-1"):
        IMAML(model, model.init(np.random.default_rng(0)), F.mse_loss, cg_damping=-1.0)
