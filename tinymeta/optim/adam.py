"""Adam (Kingma & Ba, 2015).

    m ← β₁m + (1 − β₁)g,   v ← β₂v + (1 − β₂)g²
    θ ← θ − η · m̂ / (√v̂ + ε),   m̂ = m/(1 − β₁ᵗ),  v̂ = v/(1 − β₂ᵗ)
"""
from autograd import backend

from ._state import arrays_from_state, arrays_to_state, check_grads


def adam_update(p, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step on arrays, in place (t counts from 1). Shared by the outer optimizer
    and Reptile's inner loop, which runs Adam on plain arrays."""
    xp = backend.xp
    m *= beta1
    m += (1 - beta1) * g                                 # m ← β₁m + (1 − β₁)g
    v *= beta2
    v += (1 - beta2) * (g * g)                           # v ← β₂v + (1 − β₂)g²
    step = lr * (1 - beta2 ** t) ** 0.5 / (1 - beta1 ** t)
    p -= (step * m / (xp.sqrt(v) + eps * (1 - beta2 ** t) ** 0.5)).astype(p.dtype)   # θ ← θ − η m̂/(√v̂ + ε)


class Adam:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        if lr <= 0:
            raise ValueError(f"Adam: learning rate must be positive, got {lr}")
        self.params, self.lr, self.betas, self.eps = params, float(lr), tuple(betas), float(eps)
        xp = backend.xp
        self.m = {k: xp.zeros_like(p.data) for k, p in params.items()}
        self.v = {k: xp.zeros_like(p.data) for k, p in params.items()}
        self.t = 0

    def step(self, grads):
        check_grads("Adam", self.params, grads)
        self.t += 1
        for k, p in self.params.items():
            adam_update(p.data, grads[k].data, self.m[k], self.v[k], self.t, self.lr, *self.betas, self.eps)

    def state_dict(self):
        return {"lr": self.lr, "beta1": self.betas[0], "beta2": self.betas[1], "eps": self.eps,
                "t": self.t, **arrays_to_state("m", self.m), **arrays_to_state("v", self.v)}

    def load_state_dict(self, state):
        self.lr, self.eps, self.t = float(state["lr"]), float(state["eps"]), int(state["t"])
        self.betas = (float(state["beta1"]), float(state["beta2"]))
        self.m, self.v = arrays_from_state("m", state), arrays_from_state("v", state)
