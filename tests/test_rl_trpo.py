"""Conjugate gradient, the Fisher-vector products and the TRPO step (tinymeta/rl/trpo.py,
MAMLRL.fisher_product), everything in float64 on a tiny policy (2-5-4-2).

Bounds:
  * CG on an n×n SPD system is exact after n iterations in exact arithmetic: relative error
    ≤ 1e-8 here (n = 6, condition number ≈ 60); after 2 iterations it is not (> 1e-3).
  * Fisher-vector products against an explicitly built matrix
        F = (1/T) Σᵢ Jᵢᵀ [ Σ_t w_t Dμ_tᵀ diag(σ⁻²) Dμ_t + 2·I_logσ ] Jᵢ
    whose Jacobians Dμ_t = ∂μ(s_t)/∂θ' and Jᵢ = ∂θ'ᵢ/∂θ are central differences
    (h = 1e-6; biases moved off 0 so no ReLU kink is within reach): relative error
    ‖Fv − F_explicit v‖∞ / ‖F_explicit v‖∞ ≤ 1e-6 (truncation h²·|f'''| and rounding
    1e-16/h, both ≈ 1e-10).
  * The factorised product equals the plain double backward of the mean KL through the inner
    step to 1e-12 (the same derivatives, summed in another order).
  * After a TRPO step the mean KL between the old and new adapted policies is at most δ, and
    the surrogate went down.
"""
import numpy as np
import pytest

from autograd import Tensor, grad, gradcheck, gradgradcheck
from tinymeta.algorithms import MAMLRL
from tinymeta.rl import (TRPO, GaussianMLPPolicy, GoalSampler, PointNavigation, conjugate_gradient,
                         flatten, gaussian_kl, gaussian_log_prob, unflatten)
import os

# The RL code runs on the NumPy backend only (MAMLRL refuses another in one sentence).
pytestmark = pytest.mark.skipif(os.environ.get("TINYMETA_BACKEND", "numpy") != "numpy",
                                reason="MAML-RL runs on the numpy backend only")


H = 1e-6
RTOL = 1e-6


def spd(n, seed=0):
    b = np.random.default_rng(seed).standard_normal((n, n))
    return b.T @ b + np.eye(n)


def test_conjugate_gradient_solves_a_known_system():
    A, b = spd(6), np.random.default_rng(1).standard_normal(6)
    exact = np.linalg.solve(A, b)
    x = conjugate_gradient(lambda v: A @ v, b, iterations=6)
    assert np.abs(x - exact).max() / np.abs(exact).max() < 1e-8
    early = conjugate_gradient(lambda v: A @ v, b, iterations=2)
    assert np.abs(early - exact).max() / np.abs(exact).max() > 1e-3
    np.testing.assert_array_equal(conjugate_gradient(lambda v: A @ v, np.zeros(6)), np.zeros(6))


def test_gaussian_log_prob_and_kl_by_hand():
    rng = np.random.default_rng(2)
    a, m0, m1 = rng.standard_normal((3, 4, 2))
    s0, s1 = rng.uniform(-1, 1, (2, 4, 2))
    lp = gaussian_log_prob(Tensor(a), Tensor(m0), Tensor(s0)).data
    by_hand = sum(-0.5 * np.log(2 * np.pi) - s0[:, d] - (a[:, d] - m0[:, d]) ** 2 / (2 * np.exp(2 * s0[:, d]))
                  for d in range(2))
    np.testing.assert_allclose(lp, by_hand, rtol=1e-12)
    kl = gaussian_kl(Tensor(m0), Tensor(s0), Tensor(m1), Tensor(s1)).data
    v0, v1 = np.exp(2 * s0), np.exp(2 * s1)
    by_hand = 0.5 * (v0 / v1 + (m1 - m0) ** 2 / v1 - 1 + np.log(v1 / v0)).sum(axis=-1)
    np.testing.assert_allclose(kl, by_hand, rtol=1e-12)
    np.testing.assert_allclose(gaussian_kl(Tensor(m0), Tensor(s0), Tensor(m0), Tensor(s0)).data, 0, atol=1e-15)


def test_gaussian_formulas_to_second_order():
    rng = np.random.default_rng(3)
    a = Tensor(rng.standard_normal((3, 2)))
    m0, m1 = (Tensor(x, requires_grad=True) for x in rng.standard_normal((2, 3, 2)))
    s0, s1 = (Tensor(x, requires_grad=True) for x in rng.uniform(-0.5, 0.5, (2, 3, 2)))
    assert gradcheck(lambda m, s: gaussian_log_prob(a, m, s), [m0, s0])
    assert gradgradcheck(lambda m, s: gaussian_log_prob(a, m, s), [m0, s0])
    assert gradcheck(gaussian_kl, [m0, s0, m1, s1])
    assert gradgradcheck(gaussian_kl, [m0, s0, m1, s1])


# --- the Fisher-vector product ----------------------------------------------------------------

def tiny(inner_steps, seed=0, first_order=False):
    env = PointNavigation(horizon=5)
    policy = GaussianMLPPolicy(2, 2, hidden=(5, 4))
    params = policy.init(np.random.default_rng(seed), np.float64)
    rng = np.random.default_rng(seed + 1)
    for p in params.values():
        p.data += 0.1 * rng.standard_normal(p.shape)               # biases off 0: no kink at s = 0
    learner = MAMLRL(env, policy, params, trajectories=3, inner_steps=inner_steps, first_order=first_order)
    return learner, GoalSampler(rng=seed + 2).sample_batch(2)


def at(learner, vector, fn):
    """fn() with the learner's θ set to ``vector``, θ restored afterwards."""
    theta = list(learner.params.values())
    saved = flatten([p.data for p in theta])
    for p, v in zip(theta, unflatten(vector, theta)):
        p.data[...] = v
    try:
        return fn()
    finally:
        for p, v in zip(theta, unflatten(saved, theta)):
            p.data[...] = v


def jacobian(f, x):
    """∂f/∂x by central differences: (len(f(x)), len(x))."""
    cols = [(f(x + H * e) - f(x - H * e)) / (2 * H) for e in np.eye(len(x))]
    return np.stack(cols, axis=-1)


def explicit_fisher(learner, exploration):
    """F of the module docstring, built from finite-difference Jacobians."""
    theta = list(learner.params.values())
    x0 = flatten([p.data for p in theta])
    T = len(exploration.last.mask)
    data = exploration.data
    obs = data.observations.data
    weights = data.weights.data

    def adapted_flat(x):                                            # θ ↦ (θ'_1, …, θ'_T), flat per task
        def run():
            fast = learner.adapted(learner.params, exploration, create_graph=False)
            return np.stack([flatten([f.data[i] for f in fast.values()]) for i in range(T)])
        return at(learner, x, run)

    fast0 = adapted_flat(x0)
    J = jacobian(adapted_flat, x0)                                  # (T, P, P): ∂θ'ᵢ/∂θ
    F = np.zeros((len(x0), len(x0)))
    for i in range(T):
        def mean_i(y):                                              # θ'ᵢ ↦ μ(s_t), all t, flat
            pieces = unflatten(y, theta)
            fast = {k: Tensor(p[None]) for k, p in zip(learner.params, pieces)}
            mu, _ = learner.policy(fast, Tensor(obs[i:i + 1]))
            return mu.data[0].ravel()
        D = jacobian(mean_i, fast0[i]).reshape(obs.shape[1], 2, -1)    # (M, 2, P): Dμ_t
        sigma2 = np.exp(2 * unflatten(fast0[i], theta)[-1])
        Fi = np.einsum("t,tdp,d,tdq->pq", weights[i], D, 1 / sigma2, D)  # Σ_t w_t Dμᵀ σ⁻² Dμ
        Fi[-2:, -2:] += 2 * np.eye(2) * weights[i].sum()                  # log σ: 2 per dimension
        F += J[i].T @ Fi @ J[i] / T
    return F


@pytest.mark.parametrize("inner_steps", [0, 1, 2])
def test_fisher_vector_product_equals_the_explicit_fisher_matrix(inner_steps):
    learner, batch = tiny(inner_steps)
    exploration = learner.explore(batch)
    fast = learner.adapted(learner.params, exploration, create_graph=True)
    _, _, old = learner.objective(fast, exploration.data)
    F = explicit_fisher(learner, exploration)
    assert np.allclose(F, F.T, atol=1e-8) and np.linalg.eigvalsh(F).min() > -1e-8
    for seed in range(2):
        v = np.random.default_rng(10 + seed).standard_normal(len(F))
        fv = learner.fisher_product(exploration, old)(v)
        assert np.abs(fv - F @ v).max() / np.abs(F @ v).max() < RTOL


def test_factorised_product_is_the_double_backward_of_the_kl_through_the_inner_step():
    learner, batch = tiny(1)
    exploration = learner.explore(batch)
    fast = learner.adapted(learner.params, exploration, create_graph=True)
    _, kl, old = learner.objective(fast, exploration.data)
    theta = list(learner.params.values())
    g = grad(kl, theta, create_graph=True)                          # ∇θ KL̄ through θ'(θ)
    v = np.random.default_rng(4).standard_normal(sum(p.size for p in theta))
    direct = flatten([h.data for h in grad(g, theta, grad_outputs=[Tensor(x) for x in unflatten(v, theta)])])
    factorised = learner.fisher_product(exploration, old)(v)
    assert np.abs(direct - factorised).max() / np.abs(direct).max() < 1e-12


def test_first_order_fisher_drops_the_inner_jacobian():
    learner, batch = tiny(1, first_order=True)
    second, _ = tiny(1)
    exploration = learner.explore(batch)
    fast = learner.adapted(learner.params, exploration, create_graph=False)
    _, _, old = learner.objective(fast, exploration.data)
    v = np.random.default_rng(5).standard_normal(sum(p.size for p in learner.params.values()))
    fo = learner.fisher_product(exploration, old)(v)
    so = second.fisher_product(exploration, old)(v)
    assert np.abs(fo - so).max() > 1e-3 * np.abs(so).max()


# --- the step -------------------------------------------------------------------------------

def test_trpo_step_keeps_the_kl_within_the_trust_region_and_lowers_the_surrogate():
    for max_kl in (1e-2, 1e-4):
        learner, batch = tiny(1)
        learner.optimizer.max_kl = max_kl
        exploration = learner.explore(batch)                        # what step will sample (same seeds)
        fast = learner.adapted(learner.params, exploration, create_graph=True)
        before, _, old = learner.objective(fast, exploration.data)
        metrics = learner.step(batch)
        assert metrics["accepted"] == 1.0
        after, kl, _ = learner.objective(learner.adapted(learner.params, exploration, create_graph=False),
                                         exploration.data, old)
        assert 0 < float(kl.data) <= max_kl
        assert float(kl.data) > 0.1 * max_kl                        # the step used the trust region
        assert float(after.data) < float(before.data)
        assert metrics["kl"] == pytest.approx(float(kl.data), rel=1e-12)


def quadratic_problem(max_kl=0.01, accept_at=None):
    """TRPO on L(θ) = gᵀθ with F = A: the first trial is θ₀ − s with ½ sᵀ(A + λI)s = δ."""
    A = spd(4, seed=3)
    theta = {"x": Tensor(np.ones(4), requires_grad=True)}
    g = np.random.default_rng(6).standard_normal(4)
    trials = []

    def loss_and_kl():
        x = theta["x"].data.copy()
        trials.append(x)
        d = x - 1.0
        kl = 0.5 * d @ A @ d
        ok = accept_at is None or len(trials) > accept_at
        return (g @ x if ok else 1e9), kl
    opt = TRPO(theta, max_kl=max_kl)
    info = opt.step({"x": Tensor(g)}, g @ np.ones(4), lambda v: A @ v, loss_and_kl)
    return opt, theta, A, g, trials, info


def test_trpo_first_trial_spends_the_trust_region_to_second_order():
    opt, theta, A, g, trials, info = quadratic_problem()
    s = np.ones(4) - trials[0]
    assert 0.5 * s @ (A + opt.damping * np.eye(4)) @ s == pytest.approx(0.01, rel=1e-5)
    direction = np.linalg.solve(A + opt.damping * np.eye(4), g)       # (F + λI)⁻¹ g
    np.testing.assert_allclose(s / np.linalg.norm(s), direction / np.linalg.norm(direction), rtol=1e-9)
    assert info == {"accepted": True, "backtracks": 0, "loss": pytest.approx(g @ trials[0]),
                    "kl": pytest.approx(0.01, rel=1e-4)}


def test_trpo_backtracks_and_rejects():
    opt, theta, A, g, trials, info = quadratic_problem(accept_at=2)
    assert info["accepted"] and info["backtracks"] == 2
    np.testing.assert_allclose(np.ones(4) - trials[2], 0.8 ** 2 * (np.ones(4) - trials[0]), rtol=1e-12)
    np.testing.assert_allclose(theta["x"].data, trials[2])
    opt, theta, A, g, trials, info = quadratic_problem(accept_at=100)
    assert not info["accepted"] and len(trials) == 15
    np.testing.assert_array_equal(theta["x"].data, np.ones(4))      # θ stays θ_old
