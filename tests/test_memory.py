"""The LRUA memory of ``autograd.functional.memory``: addressing against hand-computed cases
(reads sum to one, LRUA picks the least-used slot and clears it before writing), derivatives
against finite differences to first and second order (float64, relative error ≤ 1e-6,
``autograd.gradcheck``'s bound), and one-sentence errors for bad shapes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from autograd import Tensor, gradcheck, gradgradcheck
from autograd.functional import memory
from helpers import host


def test_content_weights_by_hand():
    M = np.array([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])            # one memory of 3 slots
    k = np.array([[[2.0, 0.0]]])                                      # one head, along slot 0
    cos = np.array([1.0, 0.0, 1.0 / np.sqrt(2.0)])                    # cos(k, M(i)) by hand
    expected = np.exp(cos) / np.exp(cos).sum()
    w = memory.content_weights(Tensor(k), Tensor(M))
    np.testing.assert_allclose(host(w)[0, 0], expected, rtol=1e-7)


def test_key_strength_sharpens_the_weights_by_hand():
    M = np.array([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    k = np.array([[[2.0, 0.0], [0.0, 1.0]]])                         # two heads
    beta = np.array([[5.0, 0.5]])
    cos = np.array([[1.0, 0.0, 1.0 / np.sqrt(2.0)], [0.0, 1.0, 1.0 / np.sqrt(2.0)]])
    expected = np.exp(beta[0][:, None] * cos) / np.exp(beta[0][:, None] * cos).sum(axis=1, keepdims=True)
    w = host(memory.content_weights(Tensor(k), Tensor(M), Tensor(beta)))
    np.testing.assert_allclose(w[0], expected, rtol=1e-7)
    plain = host(memory.content_weights(Tensor(k), Tensor(M)))
    assert w[0, 0].max() > plain[0, 0].max() and w[0, 1].max() < plain[0, 1].max()
    ones = host(memory.content_weights(Tensor(k), Tensor(M), Tensor(np.ones((1, 2)))))
    np.testing.assert_allclose(ones, plain, rtol=1e-12)               # β = 1 is the paper's read


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(2, 6), st.integers(0, 10**6))
def test_reads_sum_to_one_and_read_is_the_weighted_sum(batch, heads, slots, seed):
    rng = np.random.default_rng(seed)
    M, k = rng.standard_normal((batch, slots, 3)), rng.standard_normal((batch, heads, 3))
    w = host(memory.content_weights(Tensor(k), Tensor(M)))
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-12)
    assert (w > 0).all()
    r = host(memory.read(Tensor(w), Tensor(M)))
    np.testing.assert_allclose(r[0, 0], sum(w[0, 0, i] * M[0, i] for i in range(slots)), rtol=1e-12)


def test_least_used_picks_the_least_used_slots_in_order():
    usage = np.array([[0.5, 0.1, 0.9, 0.05], [0.0, 0.0, 1.0, 1.0]])
    lu = host(memory.least_used(usage, heads=2))
    np.testing.assert_array_equal(lu[0], [[0, 0, 0, 1], [0, 1, 0, 0]])     # 0.05 first, then 0.1
    np.testing.assert_array_equal(lu[1], [[1, 0, 0, 0], [0, 1, 0, 0]])     # a tie: the lower slot


def test_lrua_write_by_hand():
    M = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    k = np.array([[[10.0, 20.0]]])
    w_r = np.array([[[0.2, 0.3, 0.5]]])
    w_lu = np.array([[[0.0, 1.0, 0.0]]])                              # slot 1 is the least used
    alpha = np.array([[np.log(3.0)]])                                 # σ(α) = 3/4
    new, w_w = memory.lrua_write(Tensor(M), Tensor(k), Tensor(w_r), Tensor(w_lu), Tensor(alpha))
    expected_w = 0.75 * w_r + 0.25 * w_lu                             # [0.15, 0.475, 0.375]
    np.testing.assert_allclose(host(w_w), expected_w, rtol=1e-12)
    expected_M = np.array([[1 + 0.15 * 10, 2 + 0.15 * 20],
                           [0 + 0.475 * 10, 0 + 0.475 * 20],          # cleared, then written
                           [5 + 0.375 * 10, 6 + 0.375 * 20]])
    np.testing.assert_allclose(host(new)[0], expected_M, rtol=1e-12)


def test_a_write_through_the_least_used_gate_lands_in_the_least_used_slot():
    usage = np.array([[0.9, 0.2, 0.0, 0.7]])
    M = np.ones((1, 4, 2))
    lu = memory.least_used(usage, heads=1)
    far = Tensor(np.array([[-50.0]]))                                 # σ(α) ≈ 0: all on w^lu
    new, w_w = memory.lrua_write(Tensor(M), Tensor(np.array([[[7.0, -7.0]]])),
                                 Tensor(np.full((1, 1, 4), 0.25)), lu, far)
    np.testing.assert_allclose(host(new)[0, 2], [7.0, -7.0], atol=1e-12)  # slot 2: cleared, key written
    np.testing.assert_allclose(np.delete(host(new)[0], 2, axis=0), 1.0, atol=1e-12)   # others untouched


def test_usage_update_by_hand():
    u = np.array([[1.0, 0.0, 2.0]])
    w_r = np.array([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]]])
    w_w = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    new = memory.usage_update(Tensor(u), Tensor(w_r), Tensor(w_w), 0.95)
    np.testing.assert_allclose(host(new), [[0.95 + 0.5 + 1.0, 0.5 + 1.0, 1.9 + 1.0]], rtol=1e-12)


def _inputs(seed, batch=2, heads=2, slots=3, width=2):
    rng = np.random.default_rng(seed)
    w_r = rng.dirichlet(np.ones(slots), size=(batch, heads))
    lu = host(memory.least_used(rng.random((batch, slots)), heads))
    return (rng.standard_normal((batch, slots, width)), rng.standard_normal((batch, heads, width)),
            w_r, lu, rng.standard_normal((batch, heads)), rng.random((batch, slots)))


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_content_read_first_and_second_order(check):
    M, k, *_ = _inputs(3)
    check(lambda k, M: memory.read(memory.content_weights(k, M), M), [k, M])


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_content_read_with_key_strength_first_and_second_order(check):
    M, k, _w_r, _lu, alpha, _ = _inputs(7)
    check(lambda k, M, beta: memory.read(memory.content_weights(k, M, beta), M), [k, M, 1.0 + alpha ** 2])


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_lrua_write_first_and_second_order(check):
    M, k, w_r, lu, alpha, _ = _inputs(4)
    check(lambda M, k, w_r, alpha: memory.lrua_write(M, k, w_r, Tensor(lu), alpha)[0], [M, k, w_r, alpha])
    check(lambda M, k, w_r, alpha: memory.lrua_write(M, k, w_r, Tensor(lu), alpha)[1], [M, k, w_r, alpha])


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_usage_update_first_and_second_order(check):
    M, k, w_r, lu, alpha, u = _inputs(5)
    check(lambda u, w_r, w_w: memory.usage_update(u, w_r, w_w, 0.95), [u, w_r, 0.5 * lu + 0.1])


def test_bad_shapes_name_the_op_and_the_shapes():
    M, k, w_r, lu, alpha, u = (Tensor(a) for a in _inputs(6))
    with pytest.raises(ValueError, match=r"content_weights: .*keys \(2, 2, 3\)"):
        memory.content_weights(Tensor(np.ones((2, 2, 3))), M)
    with pytest.raises(ValueError, match=r"content_weights: .*strength \(2, 3\)"):
        memory.content_weights(k, M, Tensor(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"lrua_write: .*alpha \(2, 3\)"):
        memory.lrua_write(M, k, w_r, lu, Tensor(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"least_used: 4 heads"):
        memory.least_used(u, 4)
    with pytest.raises(ValueError, match=r"usage_update: .*usage \(2, 2\)"):
        memory.usage_update(Tensor(np.ones((2, 2))), w_r, w_r, 0.95)
