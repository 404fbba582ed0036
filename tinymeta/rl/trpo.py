"""Trust-region policy optimisation (Schulman et al., 2015) as the meta-optimizer of MAML for
RL, the way the official code takes the step (rllab's ConjugateGradientOptimizer):

    maximise the surrogate subject to  KL̄(θ_old, θ) ≤ δ          (δ = 0.01, the mean KL)

1. g = ∇L̃ (the meta-gradient), and d ≈ F⁻¹g by ``conjugate_gradient`` on Fisher-vector
   products F v (with damping: (F + λI) v, λ = 1e-5), never forming F;
2. the step that spends the whole trust region to second order: s = √(2δ / dᵀFd) · d, since
   KL(θ_old, θ_old − s) ≈ ½ sᵀF s;
3. backtracking line search: θ = θ_old − 0.8ᵏ s for k = 0, 1, …, 14, accepting the first
   that lowers the surrogate and keeps KL ≤ δ; if none does, θ stays θ_old.

The vectors of CG live on the host in float64, flattened over the parameters in their order.
"""
import math

import numpy as np

from autograd import backend


def conjugate_gradient(matrix_product, b, iterations=10, tolerance=1e-10):
    """x ≈ A⁻¹b for a symmetric positive definite A known only through v ↦ A v
    (Hestenes & Stiefel, 1952); stops early once ‖r‖² < ``tolerance``."""
    x = np.zeros_like(b)
    r = b.copy()                                   # r = b − A x
    p = r.copy()
    rr = r @ r
    for _ in range(iterations):
        if rr < tolerance:
            break
        Ap = matrix_product(p)
        alpha = rr / (p @ Ap)                      # α = rᵀr / pᵀAp
        x += alpha * p
        r -= alpha * Ap
        rr_next = r @ r
        p = r + (rr_next / rr) * p                 # β = r'ᵀr' / rᵀr
        rr = rr_next
    return x


def flatten(arrays):
    """One float64 host vector from a sequence of arrays."""
    return np.concatenate([np.asarray(backend.to_numpy(a), dtype=np.float64).ravel() for a in arrays])


def unflatten(vector, like):
    """The pieces of ``vector`` shaped like the arrays ``like``."""
    out, start = [], 0
    for a in like:
        n = int(np.prod(a.shape))
        out.append(vector[start:start + n].reshape(a.shape))
        start += n
    return out


class TRPO:
    """The trust-region step on ``params`` (name → Tensor). Not an ``optimizer.step(grads)``:
    a step also needs the Fisher-vector product and the surrogate and KL at trial points,
    which the learner supplies as functions."""

    def __init__(self, params, max_kl=0.01, damping=1e-5, cg_iterations=10, backtrack_ratio=0.8,
                 max_backtracks=15):
        if not max_kl > 0:
            raise ValueError(f"TRPO: max_kl must be positive, got {max_kl}")
        if not 0 < backtrack_ratio < 1:
            raise ValueError(f"TRPO: backtrack_ratio must lie in (0, 1), got {backtrack_ratio}")
        self.params, self.max_kl, self.damping = params, float(max_kl), float(damping)
        self.cg_iterations, self.backtrack_ratio = int(cg_iterations), float(backtrack_ratio)
        self.max_backtracks = int(max_backtracks)

    def get_flat(self):
        return flatten([p.data for p in self.params.values()])

    def set_flat(self, vector):
        for p, v in zip(self.params.values(), unflatten(vector, list(self.params.values()))):
            p.data[...] = backend.from_numpy(v, dtype=p.dtype)

    def step(self, grads, loss_before, fisher_product, loss_and_kl):
        """One step. ``grads``: name → ∇L̃; ``fisher_product(v) -> F v`` on flat vectors;
        ``loss_and_kl() -> (L̃, KL̄)`` at the current parameters. Returns what happened."""
        g = flatten([grads[k].data for k in self.params])

        def damped(v):
            return fisher_product(v) + self.damping * v                  # (F + λI) v
        d = conjugate_gradient(damped, g, self.cg_iterations)            # d ≈ F⁻¹ g
        scale = math.sqrt(2.0 * self.max_kl / (d @ damped(d) + 1e-8))    # ½ (scale·d)ᵀF(scale·d) = δ
        theta_old = self.get_flat()
        loss = kl = float("nan")
        for k in range(self.max_backtracks):
            self.set_flat(theta_old - self.backtrack_ratio ** k * scale * d)   # θ = θ_old − 0.8ᵏ s
            loss, kl = loss_and_kl()
            if loss < loss_before and kl <= self.max_kl:
                return {"accepted": True, "backtracks": k, "loss": loss, "kl": kl}
        self.set_flat(theta_old)
        return {"accepted": False, "backtracks": self.max_backtracks, "loss": loss, "kl": kl}

    def state_dict(self):
        return {"max_kl": self.max_kl, "damping": self.damping, "cg_iterations": self.cg_iterations,
                "backtrack_ratio": self.backtrack_ratio, "max_backtracks": self.max_backtracks}

    def load_state_dict(self, state):
        self.max_kl, self.damping = float(state["max_kl"]), float(state["damping"])
        self.cg_iterations, self.backtrack_ratio = int(state["cg_iterations"]), float(state["backtrack_ratio"])
        self.max_backtracks = int(state["max_backtracks"])
