"""Multi-layer perceptron, e.g. the sinusoid network 1-40-40-1 with ReLU."""
import numpy as np

from autograd import functional as F
from autograd.ops import relu, tanh

from ..parameters import leaves
from .init import check_mode, truncated_normal

ACTIVATIONS = {"relu": relu, "tanh": tanh}


class MLP:
    """``MLP([1, 40, 40, 1])``: linear layers with an activation between them.

    Initialisation as in the MAML code's ``construct_fc_weights``: weights from a truncated
    normal with std 0.01, biases zero. Weights are (out, in).
    """

    def __init__(self, sizes, activation="relu", init_std=0.01):
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"MLP: sizes must list at least an input and an output width, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.sizes = [int(s) for s in sizes]
        self.activation = ACTIVATIONS[activation]
        self.init_std = init_std
        self.head = (f"w{len(sizes) - 2}", f"b{len(sizes) - 2}")   # the last layer's names

    def init(self, rng, dtype=np.float64):
        arrays = {}
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            arrays[f"w{i}"] = truncated_normal(rng, (n_out, n_in), self.init_std)
            arrays[f"b{i}"] = np.zeros(n_out)
        return leaves(arrays, dtype)

    def __call__(self, params, x, mode="train"):
        """x (N, in) → (N, out); with task-stacked params, x (T, N, in) → (T, N, out).
        ``mode`` is accepted for the model interface; an MLP behaves the same in all."""
        check_mode("MLP", mode)
        h = x
        last = len(self.sizes) - 2
        for i in range(last + 1):
            w, b = params[f"w{i}"], params[f"b{i}"]
            if i == last:
                h = F.linear(h, w, b)                            # h = h Wᵢᵀ + bᵢ
            elif self.activation is relu:
                h = F.linear_relu(h, w, b)                       # h = relu(h Wᵢᵀ + bᵢ), one node
            else:
                h = self.activation(F.linear(h, w, b))
        return h

    def state_dict(self):
        """No state besides the parameters."""
        return {}

    def load_state_dict(self, state):
        if state:
            raise ValueError(f"MLP.load_state_dict: an MLP has no state, got {sorted(state)}")
