"""Adam (Kingma & Ba, 2015).

    m ← β₁m + (1 − β₁)g,   v ← β₂v + (1 − β₂)g²
    θ ← θ − η · m̂ / (√v̂ + ε),   m̂ = m/(1 − β₁ᵗ),  v̂ = v/(1 − β₂ᵗ)
"""
import numpy as np

from autograd import backend, kernels

from ._state import arrays_from_state, arrays_to_state, check_grads


def adam_update(p, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step on arrays, in place (t counts from 1). Shared by the outer optimizer
    and Reptile's inner loop, which runs Adam on plain arrays."""
    xp = backend.xp
    m *= beta1
    m += (1 - beta1) * g                                 # m ← β₁m + (1 − β₁)g
    v *= beta2
    v += (1 - beta2) * (g * g)                           # v ← β₂v + (1 − β₂)g²
    step, eps_t = _folded(lr, beta1, beta2, eps, t)
    p -= (step * m / (xp.sqrt(v) + eps_t)).astype(p.dtype)   # θ ← θ − η m̂/(√v̂ + ε)


def _folded(lr, beta1, beta2, eps, t):
    """η√(1−β₂ᵗ)/(1−β₁ᵗ) and ε√(1−β₂ᵗ): the bias corrections folded into the step and ε."""
    return lr * (1 - beta2 ** t) ** 0.5 / (1 - beta1 ** t), eps * (1 - beta2 ** t) ** 0.5


def _compiled():
    """The compiled update (``_adam_numba``) when the kernels setting is Numba, else None."""
    global _kernel
    if kernels.kernels_name() != "numba":
        return None
    if _kernel is None:
        from ._adam_numba import adam_update_arrays
        _kernel = adam_update_arrays
    return _kernel


_kernel = None


def _compilable(dtype, *arrays):
    """Whether the compiled update takes these arrays: NumPy, C-contiguous, all of one float dtype."""
    return dtype in _FLOATS and all(type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous
                                    for a in arrays)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


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
        """One update of every parameter: ``adam_update``, or the same arithmetic compiled
        into one loop per parameter (``_adam_numba``) where the kernels setting is Numba and
        the arrays allow it."""
        check_grads("Adam", self.params, grads)
        self.t += 1
        beta1, beta2 = self.betas
        kernel = _compiled()
        scalars = {}          # dtype -> the update's scalars in that dtype
        for k, p in self.params.items():
            arrays = (p.data, grads[k].data, self.m[k], self.v[k])
            dtype = p.data.dtype
            if kernel is None or not _compilable(dtype, *arrays):
                adam_update(*arrays, self.t, self.lr, beta1, beta2, self.eps)
                continue
            if dtype not in scalars:
                step, eps_t = _folded(self.lr, beta1, beta2, self.eps, self.t)
                scalars[dtype] = tuple(dtype.type(c) for c in (beta1, 1 - beta1, beta2, 1 - beta2, step, eps_t))
            kernel(*arrays, *scalars[dtype])

    def state_dict(self):
        return {"lr": self.lr, "beta1": self.betas[0], "beta2": self.betas[1], "eps": self.eps,
                "t": self.t, **arrays_to_state("m", self.m), **arrays_to_state("v", self.v)}

    def load_state_dict(self, state):
        self.lr, self.eps, self.t = float(state["lr"]), float(state["eps"]), int(state["t"])
        self.betas = (float(state["beta1"]), float(state["beta2"]))
        self.m, self.v = arrays_from_state("m", state), arrays_from_state("v", state)
