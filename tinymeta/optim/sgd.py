"""Stochastic gradient descent with optional momentum: v ← μv + g, θ ← θ − ηv."""
from autograd import backend

from ._state import arrays_from_state, arrays_to_state, check_grads


class SGD:
    def __init__(self, params, lr, momentum=0.0):
        if lr <= 0:
            raise ValueError(f"SGD: learning rate must be positive, got {lr}")
        self.params, self.lr, self.momentum = params, float(lr), float(momentum)
        self.velocity = {k: backend.xp.zeros_like(p.data) for k, p in params.items()} if momentum else {}

    def step(self, grads):
        check_grads("SGD", self.params, grads)
        for k, p in self.params.items():
            g = grads[k].data
            if self.momentum:
                v = self.velocity[k]
                v *= self.momentum
                v += g                                   # v ← μv + g
                g = v
            p.data -= self.lr * g                        # θ ← θ − η g

    def state_dict(self):
        return {"lr": self.lr, "momentum": self.momentum, **arrays_to_state("velocity", self.velocity)}

    def load_state_dict(self, state):
        self.lr, self.momentum = float(state["lr"]), float(state["momentum"])
        self.velocity = arrays_from_state("velocity", state)
