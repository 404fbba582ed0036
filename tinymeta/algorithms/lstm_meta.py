"""The LSTM meta-learner (Ravi & Larochelle, 2017): an LSTM that *is* the optimizer of
another network.

The learner's parameters θ, flattened to one vector, are the cell state of an LSTM. Each
inner step t on the support set takes the gradient ∇_t = ∇θ L_t(θ_{t−1}) and the loss L_t and
updates every coordinate alike (coordinate-wise weight sharing):

    i_t = σ(W_I · [∇̃_t, L̃_t, θ_{t−1}, i_{t−1}] + b_I)     input gate: a learned step size
    f_t = σ(W_F · [∇̃_t, L̃_t, θ_{t−1}, f_{t−1}] + b_F)     forget gate: learned shrinking
    c_t = f_t ⊙ c_{t−1} + i_t ⊙ (−∇_t),   θ_t = c_t           with c_0 = θ_0, learned

where ∇̃, L̃ are Andrychowicz et al.'s preprocessing x ↦ (log|x|/p, sign x) if |x| ≥ e^{−p},
else (−1, e^p x), p = 10. With f = 1 and i = α this is exactly a gradient step. b_F starts in
U(4, 5) (f ≈ 1: remember θ) and b_I in U(−5, −4) (a small step). The meta-objective is the
query loss at θ_T, differentiated with respect to θ_0, W and b; as in the paper, the
gradient's and the loss's dependence on the meta-learner are ignored (they are inputs, not
graph), so only first derivatives are taken. The paper also puts a plain LSTM in front of the
gates; here the gates read the preprocessed inputs directly, as the equations above state.
"""
import numpy as np

from autograd import Tensor, backend, grad
from autograd.ops import concatenate, getitem, matmul, reshape, sigmoid, sum as tsum

from ..parameters import detached
from .base import MetaLearner

P = 10.0          # the preprocessing's scale p


def preprocess(x, p=P):
    """(log|x|/p, sign x) where |x| ≥ e^{−p}, else (−1, e^p x): two arrays shaped like x."""
    x = np.asarray(x)
    big = np.abs(x) >= np.exp(-p)
    first = np.where(big, np.log(np.where(big, np.abs(x), 1.0)) / p, -1.0)
    second = np.where(big, np.sign(x), np.exp(p) * x)
    return first.astype(x.dtype), second.astype(x.dtype)


def flatten(params, names):
    """θ as one vector per task: {name: (T, ...)} → (T, P)."""
    return concatenate([reshape(params[k], params[k].shape[:1] + (-1,)) for k in names], axis=-1)


def unflatten(theta, like, names):
    """The inverse of ``flatten``: (T, P) → {name: (T, ...)} shaped as ``like`` (without T)."""
    out, start = {}, 0
    for k in names:
        size = int(np.prod(like[k].shape))
        out[k] = reshape(getitem(theta, (slice(None), slice(start, start + size))), theta.shape[:1] + tuple(like[k].shape))
        start += size
    return out


def gate(w, b, features, previous):
    """W · [features, previous gate] + b, the gate before σ, for every coordinate: features
    (T, P, 5), previous (T, P)."""
    inputs = concatenate([features, reshape(previous, previous.shape + (1,))], axis=-1)   # (T, P, 6)
    return reshape(matmul(inputs, reshape(w, (6, 1))), previous.shape) + b


def lstm_update(theta, gradient, loss, i_prev, f_prev, meta):
    """One step of the meta-learner: (θ_t, i_t, f_t) from θ_{t−1} (T, P), the gradient (T, P)
    and loss (T,) arrays, the previous gates and ``meta`` = {w_i, b_i, w_f, b_f}."""
    g1, g2 = preprocess(gradient)
    l1, l2 = preprocess(loss)
    shape = gradient.shape
    constant = Tensor.constant(backend.from_numpy(np.stack([g1, g2, np.broadcast_to(l1[:, None], shape),
                                         np.broadcast_to(l2[:, None], shape)], axis=-1)))   # ∇̃, L̃
    features = concatenate([constant, reshape(theta, shape + (1,))], axis=-1)              # [∇̃, L̃, θ]
    i = sigmoid(gate(meta["w_i"], meta["b_i"], features, i_prev))   # i_t = σ(W_I·[∇̃, L̃, θ, i_{t−1}] + b_I)
    f = sigmoid(gate(meta["w_f"], meta["b_f"], features, f_prev))   # f_t = σ(W_F·[∇̃, L̃, θ, f_{t−1}] + b_F)
    theta = f * theta - i * Tensor.constant(backend.from_numpy(gradient))                # c_t = f_t ⊙ c_{t−1} + i_t ⊙ (−∇_t)
    return theta, i, f


def meta_learner_parameters(rng, dtype=np.float32):
    """W_I, W_F (6,) uniform in ±0.01; b_F ~ U(4, 5), b_I ~ U(−5, −4), each (1,) (the paper's
    initialisation)."""
    arrays = {"w_i": rng.uniform(-0.01, 0.01, 6), "b_i": rng.uniform(-5, -4, 1),
              "w_f": rng.uniform(-0.01, 0.01, 6), "b_f": rng.uniform(4, 5, 1)}
    return {"meta/" + k: Tensor(np.asarray(v, dtype=dtype), requires_grad=True) for k, v in arrays.items()}


class LSTMMetaLearner(MetaLearner):
    """``LSTMMetaLearner(model, params, loss_fn, inner_steps, rng=...)``: θ_0 = ``params`` and the
    gates' W, b are learned; ``adapt``/``evaluate`` run the learned update (``inner_lr`` unused)."""

    def __init__(self, model, params, loss_fn, inner_steps=5, optimizer=None, rng=None, meta=None):
        dtype = next(iter(params.values())).dtype
        self.inner_steps = int(inner_steps)
        self.meta = meta or meta_learner_parameters(np.random.default_rng(rng), dtype)
        self._meta = {**params, **self.meta}
        super().__init__(model, params, loss_fn, optimizer, batched=True)

    def meta_parameters(self):
        return self._meta

    def gates(self):
        return {k.split("/")[1]: v for k, v in self.meta.items()}

    def updates(self, fast, x, y, steps):
        """θ_0, θ_1, …, θ_steps of every task (task-stacked dicts); the graph runs through θ
        and the gates, never through ∇_t or L_t."""
        names = list(self.params)
        theta = flatten(fast, names)
        zeros = Tensor.constant(backend.xp.zeros(theta.shape, dtype=theta.dtype))
        i, f = zeros, zeros                                            # i_0 = f_0 = 0
        yield fast
        for k in range(steps):
            losses = self.task_losses(fast, x, y, "adapt")            # L_t per task
            gradient = grad(tsum(losses), [fast[n] for n in names])   # ∇_t, a constant
            g = np.concatenate([backend.to_numpy(a.data).reshape(len(a.data), -1) for a in gradient], axis=-1)
            theta, i, f = lstm_update(theta, g, backend.to_numpy(losses.data), i, f, self.gates())
            fast = unflatten(theta, self.params, names)
            yield fast

    def meta_gradients(self, batch):
        """(query loss at θ_T, its gradient with respect to θ_0 and the gates)."""
        xs, ys = self.inputs(batch, "support")
        xq, yq = self.inputs(batch, "query")
        for fast in self.updates(self.tasks_view(self.params, self.n_tasks(batch)), xs, ys, self.inner_steps):
            pass
        loss = self.query_loss(fast, xq, yq)
        names = list(self._meta)
        return loss, dict(zip(names, grad(loss, [self._meta[k] for k in names])))

    def adapt_steps(self, fast, x, y, steps, inner_lr=None):
        """θ after 0, 1, …, ``steps`` learned updates, no graph kept."""
        for theta in self.updates(fast, x, y, steps):
            yield detached(theta)
