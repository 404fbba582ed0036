"""First- and second-order finite-difference checks of every primitive op of ``autograd``.

Tolerances (stated once for the whole file):
  * derivatives: ``autograd.gradcheck`` / ``autograd.gradgradcheck`` with ``rtol=1e-6``:
    relative error ‖analytic − numeric‖∞ / max(‖analytic‖∞, ‖numeric‖∞, 1e-3) ≤ 1e-6 (the
    floor 1e-3 is the one in autograd/gradcheck.py: below it the check is absolute, at
    1e-9), the numeric side a five-point central difference with h = 1e-3, all in float64
    (its own error is ~1e-10 on these smooth functions, so 1e-6 leaves four orders of margin);
  * forward values against NumPy: ``rtol=1e-12, atol=1e-12`` in float64 (same formula, only
    rounding differs); the float32 astype round trip is compared exactly against NumPy's
    own float32 rounding.
The stencil moves one input by up to ±2h = ±2e-3, so inputs keep clear of what a finite
difference cannot cross: ReLU inputs are at least 0.05 from 0, divisors, logarithms,
square roots and fractional or negative powers see values in [0.5, 2], and max sees values
at least 0.03 apart, positive from 0.5 on, so that the squares it also takes the max of are
at least (0.5 + 0.5)·0.03 = 0.03 apart too (values symmetric about 0 gave ties in x²).
"""
import zlib

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import autograd as ag
from autograd import Tensor
from helpers import host

RTOL = 1e-6
VAL = dict(rtol=1e-12, atol=1e-12)
FEW = settings(max_examples=min(8, settings.default.max_examples))
SOME = settings(max_examples=min(12, settings.default.max_examples))

seeds = st.integers(0, 2**32 - 1)


# ----------------------------------------------------------------------------- helpers
def check(f, arrays, expected=None):
    """Forward value (when ``expected`` is given), then first and second order checks."""
    if expected is not None:
        out = f(*[Tensor(a) for a in arrays])
        assert out.dtype == np.float64
        assert out.shape == np.shape(expected)
        np.testing.assert_allclose(host(out), expected, **VAL)
    assert ag.gradcheck(f, arrays, rtol=RTOL) <= RTOL
    assert ag.gradgradcheck(f, arrays, rtol=RTOL) <= RTOL


def normal(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape, low=0.5, high=2.0):
    return rng.uniform(low, high, size=shape)


def away_from_zero(rng, shape, low=0.05, high=2.0):
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def distinct(rng, shape, spacing=0.05):
    """Distinct values, every pair at least 0.6·spacing = 0.03 apart (no ties within 2h)."""
    n = int(np.prod(shape, dtype=int))
    grid = (rng.permutation(n) - n / 2) * spacing
    return (grid + rng.uniform(-0.2, 0.2, size=n) * spacing).reshape(shape)


def distinct_positive(rng, shape):
    """``distinct`` shifted to start at 0.5: pairs a > b still differ by ≥ 0.03, and so do
    their squares, a² − b² = (a + b)(a − b) ≥ 1 · 0.03."""
    x = distinct(rng, shape)
    return x - x.min() + 0.5


small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4)
FIXED_PAIRS = [((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((), (2, 3)), ((2, 3), ()), ((), ()),
               ((4, 1, 3), (2, 1)), ((1,), (3, 2))]


@st.composite
def shape_and_axis(draw):
    shape = draw(small_shapes)
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"])) if nd else "none"
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-nd, nd - 1))
    else:
        axes = draw(st.lists(st.integers(0, nd - 1), unique=True, min_size=1, max_size=nd))
        axis = tuple(a - nd if draw(st.booleans()) else a for a in axes)   # some negative
    return shape, axis


# ----------------------------------------------------------------------------- arithmetic
BINARY = {"add": (ag.add, np.add), "sub": (ag.sub, np.subtract),
          "mul": (ag.mul, np.multiply), "div": (ag.div, np.divide)}


def _binary_inputs(name, rng, sa, sb):
    a = normal(rng, sa)
    b = away_from_zero(rng, sb, 0.5, 2.0) if name == "div" else normal(rng, sb)
    return a, b


@pytest.mark.parametrize("name", sorted(BINARY))
@SOME
@given(shapes=pairs, seed=seeds)
def test_binary_broadcasting(name, shapes, seed):
    op, ref = BINARY[name]
    (sa, sb), _ = shapes
    a, b = _binary_inputs(name, np.random.default_rng(seed), sa, sb)
    check(op, [a, b], ref(a, b))


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("sa,sb", FIXED_PAIRS)
def test_binary_fixed_broadcast_pairs(name, sa, sb):
    op, ref = BINARY[name]
    a, b = _binary_inputs(name, np.random.default_rng(zlib.crc32(repr((name, sa, sb)).encode())), sa, sb)
    check(op, [a, b], ref(a, b))


@pytest.mark.parametrize("name", sorted(BINARY))
@FEW
@given(shape=small_shapes, seed=seeds, c=st.sampled_from([0.5, -1.5, 3.0]))
def test_binary_with_python_scalar(name, shape, seed, c):
    op, ref = BINARY[name]
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, shape, 0.5, 2.0)
    check(lambda t: op(t, c), [x], ref(x, c))      # tensor ∘ scalar
    check(lambda t: op(c, t), [x], ref(c, x))      # scalar ∘ tensor (the r-operators' path)


@FEW
@given(shape=small_shapes, seed=seeds)
def test_neg(shape, seed):
    x = normal(np.random.default_rng(seed), shape)
    check(ag.neg, [x], -x)
    check(lambda t: -t, [x], -x)


@pytest.mark.parametrize("c", [2, 3, 0.5, -1, -2.5, 1, 0])
@FEW
@given(shape=small_shapes, seed=seeds)
def test_pow_constant(c, shape, seed):
    rng = np.random.default_rng(seed)
    # integer powers ≥ 0 are smooth everywhere; fractional / negative need x > 0
    x = normal(rng, shape) if c in (2, 3, 1, 0) else positive(rng, shape)
    check(lambda t: ag.pow(t, c), [x], np.power(x, float(c)))
    check(lambda t: t ** c, [x], np.power(x, float(c)))


# ----------------------------------------------------------------------------- unary
UNARY = {
    "exp": (ag.exp, np.exp, normal),
    "log": (ag.log, np.log, positive),
    "sqrt": (ag.sqrt, np.sqrt, positive),
    "tanh": (ag.tanh, np.tanh, normal),
    "sigmoid": (ag.sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x)), normal),
    "relu": (ag.relu, lambda x: np.maximum(x, 0.0), away_from_zero),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@SOME
@given(shape=small_shapes, seed=seeds)
def test_unary(name, shape, seed):
    op, ref, draw = UNARY[name]
    x = draw(np.random.default_rng(seed), shape)
    check(op, [x], ref(x))
    # the same op inside a composite, so the second order path meets a non-trivial v
    check(lambda t: op(t) * t, [x], ref(x) * x)


# ----------------------------------------------------------------------------- matmul
@st.composite
def matmul_shapes(draw):
    (ba, bb), _ = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2,
                                                         max_side=3))
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    return ba + (m, k), bb + (k, n)


@SOME
@given(shapes=matmul_shapes(), seed=seeds)
def test_matmul_batched_broadcast(shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = normal(rng, shapes[0]), normal(rng, shapes[1])
    check(ag.matmul, [a, b], np.matmul(a, b))


@SOME
@given(shapes=matmul_shapes(), ta=st.booleans(), tb=st.booleans(), seed=seeds)
def test_matmul_transpose_flags(shapes, ta, tb, seed):
    """op(A) op(B) with the transposes as flags: value, first and second order, each of the
    four combinations (their backward products use the flags too)."""
    rng = np.random.default_rng(seed)
    a, b = normal(rng, shapes[0]), normal(rng, shapes[1])
    a_in = np.ascontiguousarray(a.swapaxes(-1, -2)) if ta else a    # stored transposed
    b_in = np.ascontiguousarray(b.swapaxes(-1, -2)) if tb else b
    check(lambda x, y: ag.matmul(x, y, transpose_a=ta, transpose_b=tb), [a_in, b_in], np.matmul(a, b))


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_transpose_flags_fixed(ta, tb):
    """Every flag combination once on non-square, batch-broadcast shapes (A (2,1,3,4), B (3,4,5))."""
    rng = np.random.default_rng(3)
    a, b = normal(rng, (2, 1, 3, 4)), normal(rng, (3, 4, 5))
    a_in = np.ascontiguousarray(a.swapaxes(-1, -2)) if ta else a
    b_in = np.ascontiguousarray(b.swapaxes(-1, -2)) if tb else b
    check(lambda x, y: ag.matmul(x, y, transpose_a=ta, transpose_b=tb), [a_in, b_in], np.matmul(a, b))


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 2)),
                                   ((3, 1, 4, 5), (2, 5, 6)), ((4, 5), (2, 5, 3)),
                                   ((2, 1, 3), (1, 3, 2))])
def test_matmul_fixed(sa, sb):
    rng = np.random.default_rng(7)
    a, b = normal(rng, sa), normal(rng, sb)
    check(ag.matmul, [a, b], np.matmul(a, b))
    check(lambda x, y: x @ y, [a, b], a @ b)


# ----------------------------------------------------------------------------- reductions
REDUCTIONS = {"sum": (ag.sum, np.sum), "mean": (ag.mean, np.mean),
              "var": (ag.var, np.var), "max": (ag.max, np.max)}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@SOME
@given(sa=shape_and_axis(), keepdims=st.booleans(), seed=seeds)
@example(sa=((4, 3), 0), keepdims=False, seed=367)      # ties in x² when x was symmetric about 0
def test_reductions(name, sa, keepdims, seed):
    op, ref = REDUCTIONS[name]
    shape, axis = sa
    rng = np.random.default_rng(seed)
    x = distinct_positive(rng, shape) if name == "max" else normal(rng, shape)
    check(lambda t: op(t, axis, keepdims), [x], ref(x, axis=axis, keepdims=keepdims))
    # the method spelling, composed with a nonlinearity so the Hessian is not zero
    method = getattr(Tensor, name)
    check(lambda t: method(t * t, axis=axis, keepdims=keepdims),
          [x], ref(x * x, axis=axis, keepdims=keepdims))


def _np_logsumexp(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


@SOME
@given(sa=shape_and_axis(), keepdims=st.booleans(), seed=seeds, scale=st.sampled_from([1.0, 30.0]))
def test_logsumexp(sa, keepdims, seed, scale):
    shape, axis = sa
    x = normal(np.random.default_rng(seed), shape) * scale
    check(lambda t: ag.logsumexp(t, axis, keepdims), [x], _np_logsumexp(x, axis, keepdims))


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@SOME
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), seed=seeds,
       data=st.data())
def test_softmax_family(name, shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = normal(np.random.default_rng(seed), shape) * 3
    lsm = x - _np_logsumexp(x, axis, True)
    expected = lsm if name == "log_softmax" else np.exp(lsm)
    check(lambda t: getattr(ag, name)(t, axis), [x], expected)


def test_softmax_large_logits_finite():
    x = np.array([[1000.0, 0.0, -1000.0], [50.0, 50.0, 49.0]])
    for f in (ag.softmax, ag.log_softmax, lambda t: ag.logsumexp(t, -1)):
        out = f(Tensor(x))
        assert np.all(np.isfinite(host(out)))
    np.testing.assert_allclose(host(ag.softmax(Tensor(x))).sum(-1), 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------- shape ops
@SOME
@given(shape=small_shapes, seed=seeds, data=st.data())
def test_reshape(shape, seed, data):
    x = normal(np.random.default_rng(seed), shape)
    n = x.size
    target = data.draw(st.sampled_from([(n,), (-1,), (1, n), (n, 1, 1), tuple(reversed(shape)), ()
                                        if n == 1 else (n,)]), label="target")
    check(lambda t: ag.reshape(t, target), [x], x.reshape(target))
    check(lambda t: t.reshape(*target) if target else t.reshape(()), [x], x.reshape(target))


@SOME
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=3), seed=seeds,
       data=st.data())
def test_transpose_permute_swapaxes(shape, seed, data):
    x = normal(np.random.default_rng(seed), shape)
    nd = len(shape)
    perm = tuple(data.draw(st.permutations(range(nd)), label="perm"))
    check(lambda t: ag.transpose(t, perm), [x], np.transpose(x, perm))
    check(lambda t: t.permute(*perm), [x], np.transpose(x, perm))
    check(lambda t: t.T, [x], x.T)
    a = data.draw(st.integers(-nd, nd - 1), label="a")
    b = data.draw(st.integers(-nd, nd - 1), label="b")
    check(lambda t: ag.swapaxes(t, a, b), [x], np.swapaxes(x, a, b))


@st.composite
def broadcast_pair(draw):
    """(small, big): ``small`` broadcasts to ``big`` (fewer dims and/or ones)."""
    big = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
    drop = draw(st.integers(0, len(big)))
    small = tuple(1 if draw(st.booleans()) else n for n in big[drop:])
    return small, big


@SOME
@given(shapes=broadcast_pair(), seed=seeds)
def test_broadcast_to_and_sum_to(shapes, seed):
    small, big = shapes
    rng = np.random.default_rng(seed)
    x = normal(rng, small)
    check(lambda t: ag.broadcast_to(t, big), [x], np.broadcast_to(x, big))
    check(lambda t: t.broadcast_to(big) * t.broadcast_to(big), [x], np.broadcast_to(x * x, big))
    y = normal(rng, big)
    lead = len(big) - len(small)
    expected = y.sum(axis=tuple(range(lead))) if lead else y
    expected = expected.sum(axis=tuple(i for i, n in enumerate(small) if n == 1), keepdims=True)
    check(lambda t: ag.sum_to(t, small), [y], expected.reshape(small))


# ----------------------------------------------------------------------------- indexing
def _index_cases(rng, d0, d1):
    rep = rng.integers(0, d0, size=3)
    rep = np.concatenate([rep, rep[:1]])                 # at least one repeated index
    rep1 = np.concatenate([rng.integers(0, d1, size=2)] * 2)
    return {
        "slice": (slice(1, None), slice(None, None, 2)),
        "negative_step": (slice(None, None, -1), slice(-1, None, -2)),
        "int_and_slice": (-1, slice(None, None, -1)),
        "gather_repeated": rep,
        "gather_repeated_list": list(rep),
        "gather_axis1": (slice(None), rep1),
        "gather_pairs_2d": (rep[:, None], rep1[None, :2]),   # (4, 1) with (1, 2) index arrays
        "bool_mask": rng.random((d0, d1, 2)) > 0.5,
        "bool_rows": np.arange(d0) % 2 == 0,
        "none_ellipsis": (None, Ellipsis, 0),
        "negative_int_gather": np.array([-1, 0, -1]),
    }


CASES = list(_index_cases(np.random.default_rng(0), 3, 3))


@pytest.mark.parametrize("case", CASES)
@FEW
@given(d0=st.integers(2, 4), d1=st.integers(2, 4), seed=seeds)
def test_getitem(case, d0, d1, seed):
    rng = np.random.default_rng(seed)
    index = _index_cases(rng, d0, d1)[case]
    x = normal(rng, (d0, d1, 2))
    np_index = np.asarray(index) if isinstance(index, list) else index
    check(lambda t: ag.getitem(t, index), [x], x[np_index])
    check(lambda t: t[index] * t[index], [x], x[np_index] ** 2)


@pytest.mark.parametrize("case", ["slice", "negative_step", "gather_repeated", "gather_axis1",
                                  "gather_pairs_2d", "bool_mask", "none_ellipsis"])
@FEW
@given(d0=st.integers(2, 4), d1=st.integers(2, 4), seed=seeds)
def test_scatter_add(case, d0, d1, seed):
    rng = np.random.default_rng(seed)
    index = _index_cases(rng, d0, d1)[case]
    shape = (d0, d1, 2)
    gshape = np.zeros(shape)[index].shape
    g = normal(rng, gshape)
    expected = np.zeros(shape)
    np.add.at(expected, index, g)                         # repeated positions accumulate
    check(lambda t: ag.scatter_add(t, index, shape), [g], expected)


def test_gather_repeated_index_accumulates_gradient():
    x = Tensor(np.arange(4.0), requires_grad=True)
    (g,) = ag.grad(x[np.array([1, 1, 3, 1])].sum(), [x])
    np.testing.assert_array_equal(host(g), [0.0, 3.0, 0.0, 1.0])


@st.composite
def concat_case(draw):
    base = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    nd = len(base)
    axis = draw(st.integers(-nd, nd - 1))
    k = draw(st.integers(1, 3))
    shapes = []
    for _ in range(k):
        s = list(base)
        s[axis] = draw(st.integers(1, 3))
        shapes.append(tuple(s))
    return shapes, axis


@SOME
@given(case=concat_case(), seed=seeds)
def test_concatenate(case, seed):
    shapes, axis = case
    rng = np.random.default_rng(seed)
    xs = [normal(rng, s) for s in shapes]
    check(lambda *ts: ag.concatenate(ts, axis), xs, np.concatenate(xs, axis))


@SOME
@given(shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3),
       k=st.integers(1, 3), seed=seeds, data=st.data())
def test_stack(shape, k, seed, data):
    nd = len(shape)
    axis = data.draw(st.integers(-(nd + 1), nd), label="axis")
    rng = np.random.default_rng(seed)
    xs = [normal(rng, shape) for _ in range(k)]
    check(lambda *ts: ag.stack(ts, axis), xs, np.stack(xs, axis))


@SOME
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3),
       seed=seeds)
def test_where(shapes, seed):
    sc, sa, sb = shapes.input_shapes
    rng = np.random.default_rng(seed)
    cond = rng.random(sc) > 0.5
    a, b = normal(rng, sa), normal(rng, sb)
    check(lambda x, y: ag.where(cond, x, y), [a, b], np.where(cond, a, b))
    check(lambda x, y: ag.where(Tensor(cond), x * y, y), [a, b], np.where(cond, a * b, b))


# ----------------------------------------------------------------------------- astype
@FEW
@given(shape=small_shapes, seed=seeds)
def test_astype_float64_identity(shape, seed):
    x = normal(np.random.default_rng(seed), shape)
    check(lambda t: ag.astype(t, np.float64), [x], x)
    check(lambda t: t.astype("float64") * t, [x], x * x)


@FEW
@given(shape=small_shapes, seed=seeds)
def test_astype_float32_round_trip_values(shape, seed):
    # values only: a float32 hop is not differentiable to 1e-6 by finite differences
    x = normal(np.random.default_rng(seed), shape)
    t = Tensor(x, requires_grad=True)
    t32 = ag.astype(t, np.float32)
    assert t32.dtype == np.float32
    np.testing.assert_array_equal(host(t32), x.astype(np.float32))
    back = ag.astype(t32, np.float64)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(host(back), x.astype(np.float32).astype(np.float64))
    w = normal(np.random.default_rng(seed + 1), shape)
    (g,) = ag.grad((back * w).sum(), [t])
    assert g.dtype == np.float64                         # gradient comes back in x's dtype
    np.testing.assert_array_equal(host(g), w.astype(np.float32).astype(np.float64))


@pytest.mark.parametrize("c", [0.01, 0.4, -2.0])
@FEW
@given(shape=small_shapes, seed=seeds)
def test_sub_scaled(c, shape, seed):
    """a − c·b (the SGD step as one node), with b broadcast against a."""
    rng = np.random.default_rng(seed)
    a, b = normal(rng, shape), normal(rng, shape[-1:] if shape else ())
    check(lambda s, t: ag.tanh(ag.ops.sub_scaled(s, t, c)), [a, b], np.tanh(a - c * b))


# ----------------------------------------------------------------------------- group_matmul
@pytest.mark.parametrize("check", [ag.gradcheck, ag.gradgradcheck])
def test_group_matmul_first_and_second_order(check):
    """GroupMatMul's backward is itself on swapped axes: checked to second order (float64)."""
    rng = np.random.default_rng(1)
    check(ag.ops.group_matmul, [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 5))])


def test_group_matmul_equals_matmul_on_transposed_views():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 6, 4)).swapaxes(1, 2)          # a stack of transposed views
    b = rng.standard_normal((3, 6, 5))
    out = ag.ops.group_matmul(Tensor(a), Tensor(b))
    np.testing.assert_allclose(host(out.data), np.matmul(a, b), rtol=1e-12)


def test_group_matmul_names_the_shapes_at_fault():
    expected = r"group_matmul: expected a \(G, m, k\) and b \(G, k, n\), got \(2, 3, 4\) and \(3, 4, 5\)"
    with pytest.raises(ValueError, match=expected):
        ag.ops.group_matmul(Tensor(np.ones((2, 3, 4))), Tensor(np.ones((3, 4, 5))))
