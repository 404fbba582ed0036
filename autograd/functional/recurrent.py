"""Recurrent layers: the LSTM cell, an LSTM run over a sequence, and a bidirectional LSTM.

Every line is an engine op whose backward is itself written in ops (matmul, add, sigmoid,
tanh, mul, getitem, stack), so derivatives of any order are exact: an LSTM can sit inside
a MAML inner loop, or be the meta-learner itself.

One step of the LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al.
2000), for an input x, a recurrent input h and a cell c:

    [i; f; g; o] = W_ih x + W_hh h + b         gate order i, f, g, o (as in PyTorch)
    c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
    h' = σ(o) ⊙ tanh(c')

Parameters are a dict ``{"w_ih": (4H, D_in), "w_hh": (4H, H_in), "b": (4H,)}``, W laid out
(out, in) like ``linear``'s. H_in is usually H; it may differ when the recurrent input is
wider than the state (Matching Networks feed [h, r], 2H wide, back into the cell).

Shapes: x (..., D_in), h (..., H_in), c (..., H), at least two axes (a batch). The weights
are shared by every leading axis, or they carry a leading task axis as the other layers do
(``w_ih`` (T, 4H, D_in), ``w_hh`` (T, 4H, H_in), ``b`` (T, 4H) with x (T, B, D_in)).
"""
import numpy as np

from .. import backend
from ..ops import getitem, matmul, reshape, sigmoid, stack, tanh
from ..tensor import Tensor


def lstm_parameters(rng, input_size, hidden_size, recurrent_size=None):
    """Initial LSTM parameters as NumPy arrays (wrap them with ``Tensor``): weights uniform in
    ±1/√H (PyTorch's default), biases zero except the forget gate's, which starts at 1 so the
    cell remembers by default (Jozefowicz et al. 2015)."""
    H = int(hidden_size)
    recurrent_size = H if recurrent_size is None else int(recurrent_size)
    bound = 1.0 / np.sqrt(H)
    b = np.zeros(4 * H)
    b[H:2 * H] = 1.0                                            # the forget gate f
    return {"w_ih": rng.uniform(-bound, bound, (4 * H, int(input_size))),
            "w_hh": rng.uniform(-bound, bound, (4 * H, recurrent_size)),
            "b": b}


def _check(x, h, c, params):
    w_ih, w_hh, b = params["w_ih"], params["w_hh"], params["b"]
    H = w_ih.shape[-2] // 4
    ok = (w_ih.shape[-2] == 4 * H == w_hh.shape[-2] and b.shape == w_ih.shape[:-1]
          and x.shape[-1] == w_ih.shape[-1] and h.shape[-1] == w_hh.shape[-1] and c.shape[-1] == H
          and x.ndim >= 2 and (w_ih.ndim == 2 or x.ndim == w_ih.ndim))
    if not ok:
        raise ValueError(f"lstm_cell: expected x (..., D_in), h (..., H_in), c (..., H) with w_ih "
                         f"(4H, D_in), w_hh (4H, H_in), b (4H,) (or all with a leading task axis); got "
                         f"x {tuple(x.shape)}, h {tuple(h.shape)}, c {tuple(c.shape)}, w_ih "
                         f"{tuple(w_ih.shape)}, w_hh {tuple(w_hh.shape)}, b {tuple(b.shape)}")
    return H


def lstm_cell(x, h, c, params):
    """One LSTM step: (h', c') from the input x, the recurrent input h and the cell c."""
    H = _check(x, h, c, params)
    b = params["b"]
    if b.ndim > 1:                                              # task-stacked: (T, 4H) → (T, 1, 4H)
        b = reshape(b, b.shape[:-1] + (1,) + b.shape[-1:])
    gates = (matmul(x, params["w_ih"], transpose_b=True)
             + matmul(h, params["w_hh"], transpose_b=True) + b)  # [i; f; g; o] = W_ih x + W_hh h + b
    i, f, g, o = (getitem(gates, (Ellipsis, slice(k * H, (k + 1) * H))) for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * tanh(g)                   # c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
    h = sigmoid(o) * tanh(c)                                    # h' = σ(o) ⊙ tanh(c')
    return h, c


def zero_state(xs, params):
    """h = c = 0 for a sequence xs (..., L, D_in): each (..., H)."""
    H = params["w_ih"].shape[-2] // 4
    zeros = backend.xp.zeros(xs.shape[:-2] + (H,), dtype=xs.dtype)
    return Tensor.constant(zeros), Tensor.constant(zeros)


def lstm(xs, params, state=None, reverse=False):
    """The LSTM run along the sequence axis of xs (..., L, D_in), from ``state`` = (h, c)
    (default zeros), last step first when ``reverse``. Returns (hs, (h, c)): hs (..., L, H)
    with hs[..., t, :] the state after reading xs[..., t, :], and the final state."""
    if xs.ndim < 3:
        raise ValueError(f"lstm: expected a batch of sequences xs (..., L, D_in), got {tuple(xs.shape)}")
    h, c = zero_state(xs, params) if state is None else state
    steps = range(xs.shape[-2] - 1, -1, -1) if reverse else range(xs.shape[-2])
    hs = {}
    for t in steps:
        h, c = lstm_cell(getitem(xs, (Ellipsis, t, slice(None))), h, c, params)
        hs[t] = h
    return stack([hs[t] for t in range(xs.shape[-2])], axis=-2), (h, c)


def bidirectional_lstm(xs, forward, backward):
    """Two LSTMs over xs (..., L, D_in), one reading it forwards and one backwards, each from
    zeros: (h→, h←), each (..., L, H), where position t of h← has read xs[t:] and of h→ xs[:t+1]."""
    ahead, _ = lstm(xs, forward)
    behind, _ = lstm(xs, backward, reverse=True)
    return ahead, behind

