"""The linear feature baseline of the official code (rllab's LinearFeatureBaseline), fitted
by least squares to each task's own trajectories, and the advantages it gives.

Features of the state s_t at time t (u = t/100, observations clipped to ±10):

    φ(s_t, t) = (s, s², u, u², u³, 1)

and b(s_t, t) = φᵀc with c = argmin Σ_valid (φᵀc − R_t)² + λ‖c‖², λ = 1e-5, solved per task:
c = (ΦᵀΦ + λI)⁻¹ ΦᵀR. With γ-discounted returns-to-go R_t, the advantage is
A_t = R_t − b(s_t, t) (generalized advantage estimation with λ = 1, as in the official code),
then centred and scaled per task to mean 0 and standard deviation 1 over the valid steps.
"""
import numpy as np

from .rollouts import discounted_returns


def features(observations):
    """φ for observations (T, N, H, S): (T, N, H, 2S + 4)."""
    o = np.clip(observations, -10.0, 10.0)
    H = observations.shape[2]
    u = np.broadcast_to((np.arange(H) / 100.0)[:, None], o.shape[:-1] + (1,))
    return np.concatenate([o, o ** 2, u, u ** 2, u ** 3, np.ones_like(u)], axis=-1)


class LinearFeatureBaseline:
    def __init__(self, ridge=1e-5):
        self.ridge = float(ridge)

    def fit(self, observations, returns, mask):
        """Coefficients c (T, F) of each task's ridge regression of R on φ over its valid steps."""
        phi = features(observations) * mask[..., None]                    # rows of ended steps: 0
        T, F = phi.shape[0], phi.shape[-1]
        phi = phi.reshape(T, -1, F)
        r = (returns * mask).reshape(T, -1)
        gram = np.einsum("tmf,tmg->tfg", phi, phi) + self.ridge * np.eye(F)   # ΦᵀΦ + λI
        return np.linalg.solve(gram, np.einsum("tmf,tm->tf", phi, r)[..., None])[..., 0]   # (ΦᵀΦ + λI)⁻¹ΦᵀR

    @staticmethod
    def predict(coefficients, observations):
        """b(s_t, t) = φᵀc: (T, N, H)."""
        return np.einsum("tnhf,tf->tnh", features(observations), coefficients)


def advantages(episodes, discount, baseline):
    """Â_t per task, centred and scaled over its valid steps: (T, N, H), 0 after the end."""
    returns = discounted_returns(episodes.rewards, discount)               # R_t
    values = baseline.predict(baseline.fit(episodes.observations, returns, episodes.mask),
                              episodes.observations)
    m = episodes.mask
    a = (returns - values) * m                                            # A_t = R_t − b(s_t, t)
    count = m.sum(axis=(1, 2), keepdims=True)
    mean = a.sum(axis=(1, 2), keepdims=True) / count
    std = np.sqrt((((a - mean) * m) ** 2).sum(axis=(1, 2), keepdims=True) / count)
    return (a - mean) / (std + 1e-8) * m                                  # (A − mean) / (std + 1e-8)
