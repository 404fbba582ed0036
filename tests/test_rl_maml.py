"""MAML for RL (tinymeta/algorithms/maml_rl.py) against its definition, in float64 on a tiny
policy (2-5-4-2, biases moved off 0 so that no ReLU kink lies within the finite-difference
stencil: with zero biases every unit sits exactly on its kink at the start state s = 0).

* The meta-gradient of the surrogate through the inner step(s) against central differences
  of the surrogate as a function of θ (same trajectories, h = 1e-6): relative error
  ‖analytic − numeric‖∞ / ‖numeric‖∞ ≤ 1e-6 (truncation and rounding ≈ 1e-10). The
  first-order variant fails this check by more than 1e-3, so the check sees the second-order
  term.
* The inner REINFORCE step against the policy gradient worked out by hand for the output
  bias and log σ: ∂log π/∂μ = (a − μ)/σ², ∂log π/∂log σ = ((a − μ)/σ)² − 1; to 1e-12.
* Trajectories depend only on each goal's seed; ``evaluate`` and ``adapt`` change nothing;
  ``step`` is deterministic and changes only θ; ``state_dict`` round-trips.
"""
import numpy as np
import pytest

from autograd import grad
from tinymeta.algorithms import MAMLRL
from tinymeta.rl import GaussianMLPPolicy, GoalBatch, GoalSampler, PointNavigation, flatten, unflatten
import os

# The RL code runs on the NumPy backend only (MAMLRL refuses another in one sentence).
pytestmark = pytest.mark.skipif(os.environ.get("TINYMETA_BACKEND", "numpy") != "numpy",
                                reason="MAML-RL runs on the numpy backend only")


H = 1e-6
RTOL = 1e-6


def tiny(inner_steps=1, seed=0, first_order=False, horizon=6):
    env = PointNavigation(horizon=horizon)
    policy = GaussianMLPPolicy(2, 2, hidden=(5, 4))
    params = policy.init(np.random.default_rng(seed), np.float64)
    rng = np.random.default_rng(seed + 1)
    for p in params.values():
        p.data += 0.1 * rng.standard_normal(p.shape)
    learner = MAMLRL(env, policy, params, trajectories=3, test_trajectories=4, inner_steps=inner_steps,
                     first_order=first_order)
    return learner, GoalSampler(rng=seed + 2).sample_batch(2)


def surrogate_at(learner, exploration, old, x):
    theta = list(learner.params.values())
    saved = flatten([p.data for p in theta])
    for p, v in zip(theta, unflatten(x, theta)):
        p.data[...] = v
    try:
        fast = learner.adapted(learner.params, exploration, create_graph=False)
        return float(learner.objective(fast, exploration.data, old)[0].data)
    finally:
        for p, v in zip(theta, unflatten(saved, theta)):
            p.data[...] = v


def fd_error(learner, batch):
    """Relative error of ``meta_gradients`` against central differences of the surrogate."""
    exploration = learner.explore(batch)
    fast = learner.adapted(learner.params, exploration, create_graph=True)
    _, _, old = learner.objective(fast, exploration.data)
    loss, grads = learner.meta_gradients(batch)
    analytic = flatten([grads[k].data for k in learner.params])
    x0 = flatten([p.data for p in learner.params.values()])
    numeric = np.array([(surrogate_at(learner, exploration, old, x0 + H * e)
                         - surrogate_at(learner, exploration, old, x0 - H * e)) / (2 * H) for e in np.eye(len(x0))])
    assert float(loss.data) == pytest.approx(surrogate_at(learner, exploration, old, x0), abs=1e-15)
    return np.abs(analytic - numeric).max() / np.abs(numeric).max()


@pytest.mark.parametrize("inner_steps", [0, 1, 2])
def test_meta_gradient_through_the_inner_steps_matches_finite_differences(inner_steps):
    assert fd_error(*tiny(inner_steps)) < RTOL


def test_first_order_meta_gradient_misses_the_second_order_term():
    assert fd_error(*tiny(1, first_order=True)) > 1e-3


def test_inner_step_is_the_policy_gradient_worked_out_by_hand():
    learner, batch = tiny(1)
    exploration = learner.explore(batch)
    fast = learner.adapted(learner.params, exploration, create_graph=False)
    data = exploration.inner[0]
    p = {k: v.data for k, v in learner.params.items()}
    s, a, wA = data.observations.data, data.actions.data, data.weighted_advantages.data
    h = np.maximum(s @ p["w0"].T + p["b0"], 0)
    h = np.maximum(h @ p["w1"].T + p["b1"], 0)
    mu = h @ p["w2"].T + p["b2"]
    var = np.exp(2 * p["log_std"])
    # L = −Σ_t (wÂ)_t log π(a_t|s_t), so θ' = θ + α Σ_t (wÂ)_t ∇log π
    b2 = p["b2"] + 0.1 * np.einsum("tm,tmd->td", wA, (a - mu) / var)
    log_std = p["log_std"] + 0.1 * np.einsum("tm,tmd->td", wA, (a - mu) ** 2 / var - 1)
    np.testing.assert_allclose(fast["b2"].data, b2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fast["log_std"].data, log_std, rtol=1e-12, atol=1e-14)


def test_a_goal_s_trajectories_depend_only_on_its_seed():
    learner, _ = tiny(1)
    batch = GoalSampler(rng=5).sample_batch(3)
    together = learner.evaluate(batch, 2)["return"]
    for t in range(3):
        alone = learner.evaluate(GoalBatch(batch.goals[t:t + 1], batch.seeds[t:t + 1]), 2)["return"]
        np.testing.assert_allclose(alone[:, 0], together[:, t], rtol=1e-12)
    other = GoalBatch(batch.goals, batch.seeds + 1)
    assert not np.allclose(learner.evaluate(other, 2)["return"], together)


def test_evaluate_shapes_and_that_it_changes_nothing():
    learner, batch = tiny(1)
    before = {k: v.data.copy() for k, v in learner.params.items()}
    result = learner.evaluate(batch, 3)
    assert result["return"].shape == (4, 2)
    np.testing.assert_array_equal(result["loss"], -result["return"])
    learner.adapt(batch, 2)
    for k, v in learner.params.items():
        np.testing.assert_array_equal(v.data, before[k])
    assert np.all(result["return"] < 0)


def test_evaluate_uses_the_test_step_sizes():
    learner, batch = tiny(1)
    slow = learner.evaluate(batch, 2, inner_lr=1e-9, later_inner_lr=1e-9)["return"]
    fast = learner.evaluate(batch, 2)["return"]
    np.testing.assert_allclose(slow[0], fast[0], rtol=1e-12)        # the same first trajectories
    assert not np.allclose(slow[1:], fast[1:])


def test_step_is_deterministic_changes_only_theta_and_reports_the_adapted_return():
    a, batch = tiny(1)
    b, _ = tiny(1)
    exploration = a.explore(batch)
    before = {k: v.data.copy() for k, v in a.params.items()}
    metrics = a.step(batch)
    b.step(batch)
    assert metrics["loss"] == pytest.approx(-exploration.last.average_return().mean(), rel=1e-12)
    assert metrics["return_before"] == pytest.approx(exploration.first.average_return().mean(), rel=1e-12)
    assert any(not np.array_equal(v.data, before[k]) for k, v in a.params.items())
    for k in a.params:
        np.testing.assert_array_equal(a.params[k].data, b.params[k].data)


def test_state_dict_round_trips():
    a, batch = tiny(1)
    a.step(batch)
    b, _ = tiny(1, seed=9)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.evaluate(batch, 1)["return"], b.evaluate(batch, 1)["return"])
    assert b.state_dict()["optimizer"] == a.state_dict()["optimizer"]


def test_negative_inner_steps_are_refused():
    learner, _ = tiny(1)
    with pytest.raises(ValueError, match="MAMLRL: inner_steps must be >= 0, got -1"):
        MAMLRL(learner.env, learner.policy, learner.params, inner_steps=-1)
