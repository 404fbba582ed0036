"""The Gaussian MLP policy of the MAML paper's RL experiments, and the two Gaussian formulas
its losses need.

    π_θ(a | s) = N(a; μ_θ(s), diag(σ²)),   μ_θ an MLP (2-100-100-2, ReLU),  log σ learned,
                                          the same for every state

Initialisation as in the official code (rllab's GaussianMLPPolicy): Glorot-uniform weights,
zero biases, σ = 1. Parameters always carry a leading task axis here (``w0`` (T, 100, 2),
``log_std`` (T, 2)), since every RL learner runs a meta-batch as one computation.
"""
import math

import numpy as np

from autograd import Tensor, backend, no_grad
from autograd.ops import exp, reshape, sum as tsum

from ..models import MLP
from ..models.init import glorot_uniform
from ..parameters import leaves

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(a, mean, log_std):
    """log N(a; μ, diag(σ²)) = −½ Σ_d ((a − μ)/σ)² − Σ_d log σ − (D/2) log 2π, over the last axis."""
    z = (a - mean) * exp(-log_std)
    return -0.5 * tsum(z * z, axis=-1) - tsum(log_std, axis=-1) - 0.5 * a.shape[-1] * LOG_2PI


def gaussian_kl(mean0, log_std0, mean1, log_std1):
    """KL(N(μ₀, σ₀²) ‖ N(μ₁, σ₁²)) = Σ_d [log σ₁ − log σ₀ + (σ₀² + (μ₀ − μ₁)²) / (2σ₁²) − ½]."""
    d = mean0 - mean1
    var_ratio = exp(2.0 * (log_std0 - log_std1))                          # σ₀² / σ₁²
    return tsum(log_std1 - log_std0 + 0.5 * (var_ratio + d * d * exp(-2.0 * log_std1)) - 0.5, axis=-1)


class GaussianMLPPolicy:
    def __init__(self, observation_dim, action_dim, hidden=(100, 100), init_std=1.0):
        self.mean_net = MLP([observation_dim, *hidden, action_dim], activation="relu")
        self.observation_dim, self.action_dim = int(observation_dim), int(action_dim)
        self.init_std = float(init_std)

    def init(self, rng, dtype=np.float64):
        """θ: Glorot-uniform weights, zero biases, log σ = log(init_std); without a task axis."""
        sizes = self.mean_net.sizes
        arrays = {}
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            arrays[f"w{i}"] = glorot_uniform(rng, (n_out, n_in))
            arrays[f"b{i}"] = np.zeros(n_out)
        arrays["log_std"] = np.full(self.action_dim, math.log(self.init_std))
        return leaves(arrays, dtype)

    def __call__(self, params, obs, mode="train"):
        """(μ_θ(s) of shape (T, M, A), log σ of shape (T, 1, A)) for observations (T, M, S)."""
        if obs.shape[-1] != self.observation_dim or obs.ndim != 3:
            raise ValueError(f"GaussianMLPPolicy: observations must be (tasks, states, "
                             f"{self.observation_dim}), got {tuple(obs.shape)}")
        log_std = params["log_std"]
        return self.mean_net(params, obs, mode), reshape(log_std, (log_std.shape[0], 1, self.action_dim))

    def log_prob(self, params, obs, actions):
        """log π_θ(a | s): (T, M)."""
        mean, log_std = self(params, obs)
        return gaussian_log_prob(actions, mean, log_std)

    def act(self, params, obs, noise):
        """a = μ_θ(s) + σ ε for observations (T, N, S) and standard normal noise (T, N, A), as
        arrays; no graph is recorded."""
        with no_grad():
            mean, log_std = self(params, Tensor.constant(backend.from_numpy(obs, dtype=params["log_std"].dtype)))
            a = mean.data + backend.xp.exp(log_std.data) * backend.from_numpy(noise, dtype=mean.dtype)
        return backend.to_numpy(a)

    def state_dict(self):
        """No state besides the parameters."""
        return {}

    def load_state_dict(self, state):
        if state:
            raise ValueError(f"GaussianMLPPolicy.load_state_dict: the policy has no state, got {sorted(state)}")
