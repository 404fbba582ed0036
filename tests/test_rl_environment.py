"""The 2D navigation environment, its goal sampler and the rollouts, against rollouts worked
out by hand (tinymeta/rl/navigation.py, tinymeta/rl/rollouts.py).

The hand-computed rollouts use a policy with all weights zero and σ = 1, so its action is
exactly the noise it is given: a = 0 + 1·ε. Positions and rewards are sums of a few decimal
numbers, compared with an absolute tolerance of 1e-12 (float64 rounding only).
"""
import math

import numpy as np
import pytest

from tinymeta.rl import GaussianMLPPolicy, GoalSampler, PointNavigation, discounted_returns, rollout
import os

# The RL code runs on the NumPy backend only (MAMLRL refuses another in one sentence).
pytestmark = pytest.mark.skipif(os.environ.get("TINYMETA_BACKEND", "numpy") != "numpy",
                                reason="MAML-RL runs on the numpy backend only")


ATOL = 1e-12


def noise_is_action_policy(observation_dim=2, tasks=1):
    policy = GaussianMLPPolicy(observation_dim, 2, hidden=(4, 3))
    params = policy.init(np.random.default_rng(0), np.float64)
    for p in params.values():
        p.data[...] = 0.0                                   # μ = 0, log σ = 0: a = ε
    return policy, {k: v.broadcast_to((tasks,) + v.shape) for k, v in params.items()}


def test_step_clips_the_velocity_and_rewards_minus_the_distance():
    env = PointNavigation()
    pos = np.array([[[0.0, 0.0], [0.3, -0.2]]])
    act = np.array([[[3.0, -0.5], [-0.2, -7.0]]])
    goal = np.array([[0.2, 0.1]])
    nxt, reward, reached = env.step(pos, act, goal)
    np.testing.assert_allclose(nxt, [[[0.1, -0.05], [0.28, -0.3]]], atol=ATOL)      # 0.1·clip(a, −1, 1)
    np.testing.assert_allclose(reward, [[-math.hypot(0.1, 0.15), -math.hypot(0.08, 0.4)]], atol=ATOL)
    assert not reached.any()


def test_hand_computed_rollout_ends_at_the_goal():
    env = PointNavigation(horizon=5)
    policy, params = noise_is_action_policy()
    goal = np.array([[0.25, -0.1]])
    eps = np.zeros((1, 2, 5, 2))
    eps[0, 0, :3] = [[2.0, -0.5], [1.0, -0.5], [0.5, 0.004]]    # trajectory 0 reaches the goal at t = 2
    eps[0, 0, 3:] = [[1.0, 1.0], [1.0, 1.0]]                    # ignored: it has ended
    episodes = rollout(env, policy, params, goal, eps)           # trajectory 1 stands still at the origin

    p1, p2, p3 = (0.1, -0.05), (0.2, -0.1), (0.25, -0.0996)
    np.testing.assert_allclose(episodes.observations[0, 0], [(0, 0), p1, p2, p3, p3], atol=ATOL)
    np.testing.assert_allclose(episodes.actions[0, 0, :3], eps[0, 0, :3], atol=ATOL)
    r0, r1, r2 = -math.hypot(0.15, 0.05), -0.05, -0.0004
    np.testing.assert_allclose(episodes.rewards[0, 0], [r0, r1, r2, 0, 0], atol=ATOL)
    np.testing.assert_array_equal(episodes.mask[0, 0], [1, 1, 1, 0, 0])
    np.testing.assert_allclose(episodes.rewards[0, 1], [-math.hypot(0.25, 0.1)] * 5, atol=ATOL)
    np.testing.assert_array_equal(episodes.mask[0, 1], [1] * 5)
    np.testing.assert_allclose(episodes.returns(), [[r0 + r1 + r2, -5 * math.hypot(0.25, 0.1)]], atol=ATOL)
    np.testing.assert_allclose(episodes.average_return(), [(r0 + r1 + r2 - 5 * math.hypot(0.25, 0.1)) / 2],
                               atol=ATOL)


def test_within_the_radius_in_one_coordinate_only_is_not_the_goal():
    env = PointNavigation(horizon=3)
    policy, params = noise_is_action_policy()
    eps = np.zeros((1, 1, 3, 2))
    eps[0, 0, 0] = [1.0, 0.0]                                     # x on the goal, y 0.2 away
    episodes = rollout(env, policy, params, np.array([[0.1, 0.2]]), eps)
    np.testing.assert_array_equal(episodes.mask[0, 0], [1, 1, 1])


def test_oracle_observes_the_goal():
    env = PointNavigation(horizon=2, oracle=True)
    policy, params = noise_is_action_policy(observation_dim=4, tasks=2)
    goals = np.array([[0.3, -0.4], [-0.1, 0.2]])
    eps = np.ones((2, 1, 2, 2))
    episodes = rollout(env, policy, params, goals, eps)
    np.testing.assert_allclose(episodes.observations[:, 0, 1], [[0.1, 0.1, 0.3, -0.4], [0.1, 0.1, -0.1, 0.2]],
                               atol=ATOL)


def test_the_policy_acts_with_its_mean_plus_sigma_times_the_noise():
    policy = GaussianMLPPolicy(2, 2, hidden=(5, 4))
    params = policy.init(np.random.default_rng(1), np.float64)
    params["log_std"].data[...] = [-1.0, 0.5]
    obs = np.random.default_rng(2).standard_normal((1, 3, 2))
    eps = np.random.default_rng(3).standard_normal((1, 3, 2))
    a = {k: v.data for k, v in params.items()}
    h = np.maximum(obs @ a["w0"].T + a["b0"], 0)
    h = np.maximum(h @ a["w1"].T + a["b1"], 0)
    mean = h @ a["w2"].T + a["b2"]
    stacked = {k: v.broadcast_to((1,) + v.shape) for k, v in params.items()}
    np.testing.assert_allclose(policy.act(stacked, obs, eps), mean + np.exp([-1.0, 0.5]) * eps, rtol=1e-12)


def test_discounted_returns_by_hand():
    rewards = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, -1.0]])
    np.testing.assert_allclose(discounted_returns(rewards, 0.5), [[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3],
                                                                  [-0.25, -0.5, -1.0]])


def test_goal_sampler_range_seeds_and_state():
    sampler = GoalSampler(rng=7)
    state = sampler.get_state()
    a = sampler.sample_batch(500)
    assert a.goals.shape == (500, 2) and len(a) == 500
    assert a.goals.min() >= -0.5 and a.goals.max() <= 0.5 and a.goals.min() < -0.45 and a.goals.max() > 0.45
    assert len(set(a.seeds.tolist())) == 500
    sampler.set_state(state)
    b = sampler.sample_batch(500)
    np.testing.assert_array_equal(a.goals, b.goals)
    np.testing.assert_array_equal(a.seeds, b.seeds)
    assert not np.array_equal(sampler.sample_batch(500).goals, a.goals)


@pytest.mark.parametrize("bad", [np.zeros((1, 3, 3)), np.zeros((3, 2))])
def test_policy_names_bad_observation_shapes(bad):
    from autograd import Tensor
    policy, params = noise_is_action_policy()
    with pytest.raises(ValueError, match=r"GaussianMLPPolicy: observations must be \(tasks, states, 2\)"):
        policy(params, Tensor(bad))
