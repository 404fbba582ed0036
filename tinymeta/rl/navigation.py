"""The 2D navigation tasks of the MAML paper (Section 5.3): a point robot that must walk to
a goal it cannot see, batched over tasks and trajectories.

A task is a goal g uniform in [−0.5, 0.5]². The robot starts at (0, 0) and observes its
position. The policy's action a is in units of the top speed, as rllab's ``normalize``
wrapper made it in the official code: the velocity is 0.1 · clip(a, −1, 1), so each
coordinate moves at most 0.1 per step. The reward is the official code's

    r_t = −‖p_{t+1} − g‖              (the distance, not the squared distance of the paper's text)

and a trajectory ends after 100 steps, or as soon as the robot is within 0.01 of the goal
in both coordinates (the official ``done``); the reward of that last step still counts.
The oracle of Figure 4 also observes the goal: observation (p, g).

``GoalSampler`` is the task stream of the run layer: each task comes with its own seed for
the rollouts' noise, so a task's trajectories depend only on its seed, never on which batch
or chunk it is evaluated in, and the sampler's random state is all a resumed run needs.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class GoalBatch:
    goals: np.ndarray       # (T, 2)
    seeds: np.ndarray       # (T,) the seed of each task's rollout noise

    def __len__(self):
        return len(self.goals)


class GoalSampler:
    """A seeded stream of goal batches: ``sample_batch(n)``, ``get_state()``, ``set_state()``."""

    def __init__(self, low=-0.5, high=0.5, rng=None):
        self.low, self.high = float(low), float(high)
        self.rng = np.random.default_rng(rng)

    def sample_batch(self, n):
        goals = self.rng.uniform(self.low, self.high, size=(n, 2))      # g ~ U[−0.5, 0.5]²
        seeds = self.rng.integers(0, 2 ** 63, size=n)
        return GoalBatch(goals, seeds)

    def get_state(self):
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state


class PointNavigation:
    """The point robot, on arrays with any leading axes (tasks, trajectories)."""

    def __init__(self, horizon=100, max_speed=0.1, success_radius=0.01, oracle=False):
        self.horizon, self.max_speed = int(horizon), float(max_speed)
        self.success_radius, self.oracle = float(success_radius), bool(oracle)
        self.action_dim = 2
        self.observation_dim = 4 if oracle else 2

    def start(self, shape):
        """Positions (*shape, 2) at the origin."""
        return np.zeros(tuple(shape) + (2,))

    def observe(self, positions, goals):
        """p, or (p, g) for the oracle; goals (T, 2) broadcast over the trajectory axis."""
        if not self.oracle:
            return positions
        g = np.broadcast_to(goals[:, None, :], positions.shape)
        return np.concatenate([positions, g], axis=-1)

    def step(self, positions, actions, goals):
        """(next positions, rewards, reached) for positions and actions (T, N, 2), goals (T, 2)."""
        velocity = self.max_speed * np.clip(actions, -1.0, 1.0)           # v = 0.1 · clip(a, −1, 1)
        nxt = positions + velocity                                        # p_{t+1} = p_t + v
        offset = nxt - goals[:, None, :]
        reward = -np.sqrt((offset ** 2).sum(axis=-1))                     # r = −‖p_{t+1} − g‖
        reached = (np.abs(offset) < self.success_radius).all(axis=-1)     # the official done
        return nxt, reward, reached
