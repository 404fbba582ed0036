"""Trajectories, sampled for every task and trajectory at once, and their returns.

``rollout`` runs T tasks × N trajectories for the environment's horizon H in one loop over
time, each step one batched forward pass of the policy. Its noise ε (T, N, H, A) is drawn
beforehand from each task's own generator (``noise``), so a task's trajectories depend only
on its seed. Trajectories that ended early keep their slots, with ``mask`` 0 after the end.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class Episodes:
    observations: np.ndarray    # (T, N, H, S)   s_t, the state the action was taken in
    actions: np.ndarray         # (T, N, H, A)   a_t
    rewards: np.ndarray         # (T, N, H)      r_t, 0 after the end
    mask: np.ndarray            # (T, N, H)      1 while the trajectory runs

    def returns(self):
        """Σ_t r_t of every trajectory: (T, N), the undiscounted return."""
        return self.rewards.sum(axis=-1)

    def average_return(self):
        """Mean return of each task's trajectories: (T,)."""
        return self.returns().mean(axis=-1)

    def flat(self, name):
        """An array with the N and H axes merged: (T, N·H, ...), the policy's layout."""
        a = getattr(self, name)
        return a.reshape(a.shape[0], a.shape[1] * a.shape[2], *a.shape[3:])


def noise(generators, trajectories, horizon, action_dim):
    """ε ~ N(0, I) of shape (T, N, H, A), task t's from ``generators[t]``."""
    return np.stack([g.standard_normal((trajectories, horizon, action_dim)) for g in generators])


def rollout(env, policy, params, goals, eps):
    """``Episodes`` of the policy with (task-stacked) ``params`` in ``env``, for goals (T, 2)
    and noise ``eps`` (T, N, H, A): a_t = μ_θ(s_t) + σ ε_t."""
    T, N, H, A = eps.shape
    obs = np.zeros((T, N, H, env.observation_dim))
    actions = np.zeros((T, N, H, A))
    rewards = np.zeros((T, N, H))
    mask = np.zeros((T, N, H))
    position = env.start((T, N))
    running = np.ones((T, N), dtype=bool)
    for t in range(H):
        obs[:, :, t] = env.observe(position, goals)
        actions[:, :, t] = policy.act(params, obs[:, :, t], eps[:, :, t])
        position_next, reward, reached = env.step(position, actions[:, :, t], goals)
        mask[:, :, t] = running
        rewards[:, :, t] = np.where(running, reward, 0.0)
        position = np.where(running[..., None], position_next, position)
        running &= ~reached
    return Episodes(obs, actions, rewards, mask)


def discounted_returns(rewards, discount):
    """R_t = Σ_{k ≥ t} γ^(k−t) r_k along the last axis (rewards are 0 after the end)."""
    out = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[:-1])
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[..., t] + discount * running                  # R_t = r_t + γ R_{t+1}
        out[..., t] = running
    return out
