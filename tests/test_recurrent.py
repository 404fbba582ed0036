"""The LSTM cell, the sequence helpers and the cosine similarity: values against NumPy
written out by hand, derivatives against finite differences to first and second order
(float64, relative error ≤ 1e-6, ``autograd.gradcheck``'s bound), shared against
task-stacked weights, and one-sentence errors for bad shapes."""
import numpy as np
import pytest

from autograd import Tensor, gradcheck, gradgradcheck
from autograd import functional as F
from autograd.functional.similarity import cosine_similarity
from helpers import host


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_cell(x, h, c, p):
    """The LSTM step in plain NumPy, gate order i, f, g, o."""
    gates = x @ p["w_ih"].T + h @ p["w_hh"].T + p["b"]
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c), c


def params(rng, d_in=3, hidden=2, recurrent=None, scale=1.0):
    arrays = F.lstm_parameters(rng, d_in, hidden, recurrent)
    arrays["b"] = arrays["b"] + 0.3 * rng.standard_normal(arrays["b"].shape)   # gates not symmetric
    return {k: scale * v if k != "b" else v for k, v in arrays.items()}


def test_lstm_parameters_shapes_and_forget_bias():
    p = F.lstm_parameters(np.random.default_rng(0), 5, 4, recurrent_size=8)
    assert p["w_ih"].shape == (16, 5) and p["w_hh"].shape == (16, 8) and p["b"].shape == (16,)
    np.testing.assert_array_equal(p["b"], [0] * 4 + [1] * 4 + [0] * 8)      # i, f, g, o
    assert np.abs(p["w_ih"]).max() <= 0.5 and np.abs(p["w_hh"]).max() <= 0.5   # ±1/√4


def test_cell_matches_the_equations():
    rng = np.random.default_rng(1)
    p = params(rng, d_in=3, hidden=2, recurrent=4)          # a recurrent input wider than H
    x, h, c = rng.standard_normal((5, 3)), rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    h1, c1 = F.lstm_cell(Tensor(x), Tensor(h), Tensor(c), {k: Tensor(v) for k, v in p.items()})
    h_ref, c_ref = numpy_cell(x, h, c, p)
    np.testing.assert_allclose(host(h1), h_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(host(c1), c_ref, rtol=1e-12, atol=1e-14)


def test_cell_first_and_second_order():
    rng = np.random.default_rng(2)
    p = params(rng, d_in=3, hidden=2, recurrent=3)
    names = list(p)
    inputs = [rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), rng.standard_normal((2, 2))]

    def cell(x, h, c, *weights):
        return F.lstm_cell(x, h, c, dict(zip(names, weights)))
    gradcheck(cell, inputs + [p[k] for k in names])
    gradgradcheck(cell, inputs + [p[k] for k in names])


def test_sequence_matches_a_loop_of_cells_and_runs_backwards():
    rng = np.random.default_rng(3)
    p = params(rng, d_in=3, hidden=2)
    xs = rng.standard_normal((2, 4, 3))                      # batch 2, length 4
    pt = {k: Tensor(v) for k, v in p.items()}
    for reverse in (False, True):
        hs, (h, c) = F.lstm(Tensor(xs), pt, reverse=reverse)
        hr, cr = np.zeros((2, 2)), np.zeros((2, 2))
        expected = np.zeros((2, 4, 2))
        for t in (range(3, -1, -1) if reverse else range(4)):
            hr, cr = numpy_cell(xs[:, t], hr, cr, p)
            expected[:, t] = hr
        np.testing.assert_allclose(host(hs), expected, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(host(h), hr, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(host(c), cr, rtol=1e-12, atol=1e-14)


def test_sequence_and_bidirectional_first_and_second_order():
    rng = np.random.default_rng(4)
    fw, bw = params(rng, 2, 2), params(rng, 2, 2)
    names = list(fw)
    xs = rng.standard_normal((2, 3, 2))

    def run(x, *weights):
        a = dict(zip(names, weights[:3]))
        b = dict(zip(names, weights[3:]))
        ahead, behind = F.bidirectional_lstm(x, a, b)
        return ahead * behind + behind                       # both directions reach the output
    inputs = [xs] + [fw[k] for k in names] + [bw[k] for k in names]
    gradcheck(run, inputs)
    gradgradcheck(run, inputs)

    def from_state(x, h0, c0, *weights):
        hs, (h, c) = F.lstm(x, dict(zip(names, weights)), state=(h0, c0), reverse=True)
        return hs, c
    gradgradcheck(from_state, [xs, rng.standard_normal((2, 2)), rng.standard_normal((2, 2))]
                  + [fw[k] for k in names])


def test_bidirectional_positions_read_the_right_halves():
    """h→ at t has read xs[:t+1] and h← at t has read xs[t:]: changing the last element moves
    every h← but only the last h→."""
    rng = np.random.default_rng(5)
    fw, bw = ({k: Tensor(v) for k, v in params(rng, 2, 3).items()} for _ in range(2))
    xs = rng.standard_normal((1, 4, 2))
    moved = xs.copy()
    moved[:, -1] += 1.0
    a0, b0 = F.bidirectional_lstm(Tensor(xs), fw, bw)
    a1, b1 = F.bidirectional_lstm(Tensor(moved), fw, bw)
    changed_ahead = np.abs(a1.data - a0.data).max(axis=-1)[0] > 1e-9
    changed_behind = np.abs(b1.data - b0.data).max(axis=-1)[0] > 1e-9
    assert changed_ahead.tolist() == [False, False, False, True]
    assert changed_behind.tolist() == [True, True, True, True]


def test_task_stacked_weights_equal_shared_weights_per_task():
    rng = np.random.default_rng(6)
    per_task = [params(rng, 3, 2) for _ in range(2)]
    x, h, c = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 2)), rng.standard_normal((2, 5, 2))
    stacked = {k: Tensor(np.stack([p[k] for p in per_task])) for k in per_task[0]}
    hs, cs = F.lstm_cell(Tensor(x), Tensor(h), Tensor(c), stacked)
    for t, p in enumerate(per_task):
        h_ref, c_ref = numpy_cell(x[t], h[t], c[t], p)
        np.testing.assert_allclose(host(hs)[t], h_ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(host(cs)[t], c_ref, rtol=1e-12, atol=1e-14)
    names = list(stacked)

    def cell(x, *weights):
        return F.lstm_cell(x, Tensor(h[:, :2]), Tensor(c[:, :2]), dict(zip(names, weights)))
    gradgradcheck(cell, [x[:, :2]] + [stacked[k] for k in names])


@pytest.mark.parametrize("shapes, what", [
    (((2, 4), (2, 2), (2, 2)), "x (2, 4)"),                   # x wider than w_ih
    (((2, 3), (2, 5), (2, 2)), "h (2, 5)"),
    (((2, 3), (2, 2), (2, 7)), "c (2, 7)"),
    (((3,), (2,), (2,)), "x (3,)"),                           # no batch axis
])
def test_cell_bad_shapes_are_one_sentence(shapes, what):
    p = {k: Tensor(v) for k, v in params(np.random.default_rng(7), 3, 2).items()}
    x, h, c = (Tensor(np.zeros(s)) for s in shapes)
    with pytest.raises(ValueError, match="lstm_cell: expected") as e:
        F.lstm_cell(x, h, c, p)
    assert what in str(e.value) and "w_ih (8, 3)" in str(e.value)
    with pytest.raises(ValueError, match=r"lstm: expected a batch of sequences xs \(\.\.\., L, D_in\), got \(4, 3\)"):
        F.lstm(Tensor(np.zeros((4, 3))), p)


# --- cosine similarity ------------------------------------------------------------------------

def test_cosine_similarity_by_hand():
    a = np.array([[[3.0, 4.0], [1.0, 0.0]]])
    b = np.array([[[0.0, 2.0], [-1.0, 0.0], [1.0, 1.0]]])
    got = host(cosine_similarity(Tensor(a), Tensor(b)))[0]
    s = 1 / np.sqrt(2)
    expected = [[4 / 5, -3 / 5, 7 / 5 * s], [0.0, -1.0, s]]
    np.testing.assert_allclose(got, expected, rtol=1e-7)      # ε = 1e-8 in the norms
    zero = cosine_similarity(Tensor(np.zeros((1, 2))), Tensor(b[0])).data
    assert np.all(zero == 0.0)                                 # a zero vector: 0, not NaN


def test_cosine_similarity_first_and_second_order():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    gradcheck(cosine_similarity, [a, b])
    gradgradcheck(cosine_similarity, [a, b])


def test_cosine_similarity_bad_shapes():
    with pytest.raises(ValueError, match=r"cosine_similarity: .* got a \(2, 3\) and b \(4, 5\)"):
        cosine_similarity(Tensor(np.zeros((2, 3))), Tensor(np.zeros((4, 5))))
