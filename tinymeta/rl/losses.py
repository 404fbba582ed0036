"""The policy-gradient objectives of MAML for RL (Finn et al., 2017, Algorithm 3), per task,
each an average over the task's valid time steps (M of them):

    inner step (REINFORCE):  L_T(θ)  = −(1/M) Σ_t log π_θ(a_t | s_t) Â_t
    meta-objective (TRPO):   L̃_T(θ') = −(1/M) Σ_t [π_θ'(a_t | s_t) / π_old(a_t | s_t)] Â_t
    trust region:            KL_T(θ') = (1/M) Σ_t KL(π_old(· | s_t) ‖ π_θ'(· | s_t))

``PolicyGradientData`` holds one task batch's trajectories as the constants of these losses,
in the policy's layout (T, N·H, ...).
"""
from dataclasses import dataclass

import numpy as np

from autograd import Tensor, backend
from autograd.ops import exp, sum as tsum

from .policy import gaussian_kl, gaussian_log_prob


def constant(array, dtype):
    return Tensor.constant(backend.from_numpy(np.ascontiguousarray(array), dtype=dtype))


@dataclass
class PolicyGradientData:
    observations: Tensor          # (T, M, S)
    actions: Tensor               # (T, M, A)
    weights: Tensor               # (T, M)  1/M on valid steps, 0 after the end
    weighted_advantages: Tensor   # (T, M)  Â_t / M

    @classmethod
    def from_episodes(cls, episodes, advantages, dtype):
        T = len(episodes.mask)
        mask = episodes.mask.reshape(T, -1)
        weights = mask / mask.sum(axis=-1, keepdims=True)                 # the mean over valid steps
        return cls(constant(episodes.flat("observations"), dtype), constant(episodes.flat("actions"), dtype),
                   constant(weights, dtype), constant(advantages.reshape(T, -1) * weights, dtype))


def reinforce_loss(policy, params, data):
    """L_T(θ) = −(1/M) Σ_t log π_θ(a_t | s_t) Â_t for every task: (T,)."""
    log_prob = policy.log_prob(params, data.observations, data.actions)
    return -tsum(log_prob * data.weighted_advantages, axis=-1)


def surrogate_loss(log_prob, old_log_prob, data):
    """L̃_T = −(1/M) Σ_t exp(log π_θ' − log π_old) Â_t for every task: (T,)."""
    ratio = exp(log_prob - old_log_prob)                                  # π_θ'(a|s) / π_old(a|s)
    return -tsum(ratio * data.weighted_advantages, axis=-1)


def mean_kl(mean, log_std, old_mean, old_log_std, data):
    """(1/M) Σ_t KL(π_old(· | s_t) ‖ π_θ'(· | s_t)) for every task: (T,)."""
    return tsum(gaussian_kl(old_mean, old_log_std, mean, log_std) * data.weights, axis=-1)
