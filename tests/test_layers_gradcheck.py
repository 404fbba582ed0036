"""First- and second-order checks of the layers in ``autograd.functional``.

Tolerances (stated once for the whole file):
  * derivatives: ``autograd.gradcheck`` / ``autograd.gradgradcheck`` with ``rtol=1e-6``
    (max-norm relative error against a five-point central difference, h = 1e-3, float64);
  * forward values against direct NumPy loops: ``rtol=1e-10, atol=1e-12`` (float64; the
    summation order differs from im2col + matmul, so not bit-exact);
  * running statistics: ``rtol=1e-12`` (the same arithmetic as the reference);
  * numpy vs numba kernels: ``rtol=1e-12, atol=1e-12`` in float64, ``rtol=1e-5, atol=1e-6``
    in float32 (only the order of the overlap sums may differ).
Max-pool inputs are a random permutation of a grid spaced 0.05 apart plus noise of at most
±0.01, so every pair of values is ≥ 0.03 apart: the ±2e-3 finite-difference stencil never
swaps an arg-max. Batch-norm inputs have per-channel variance in [0.25, 4] so that
1/√(σ² + ε) stays smooth on the stencil's scale.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import autograd as ag
from autograd import Tensor
from autograd import backend
from autograd import functional as F
from helpers import host

RTOL = 1e-6
VAL = dict(rtol=1e-10, atol=1e-12)
FEW = settings(max_examples=min(6, settings.default.max_examples))
SOME = settings(max_examples=min(10, settings.default.max_examples))
seeds = st.integers(0, 2**32 - 1)


def check(f, arrays, expected=None):
    if expected is not None:
        out = f(*[Tensor(a) for a in arrays])
        assert out.shape == np.shape(expected)
        np.testing.assert_allclose(host(out), expected, **VAL)
    assert ag.gradcheck(f, arrays, rtol=RTOL) <= RTOL
    assert ag.gradgradcheck(f, arrays, rtol=RTOL) <= RTOL


def distinct(rng, shape, spacing=0.05):
    n = int(np.prod(shape, dtype=int))
    grid = (rng.permutation(n) - n / 2) * spacing
    return (grid + rng.uniform(-0.2, 0.2, size=n) * spacing).reshape(shape)


# ----------------------------------------------------------------------------- references
def np_conv2d(x, w, b, s, p):
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    OH, OW = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    out = np.zeros((N, O, OH, OW))
    for i in range(OH):
        for j in range(OW):
            patch = xp[:, :, i * s:i * s + kh, j * s:j * s + kw]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return out if b is None else out + b[None, :, None, None]


def np_max_pool(x, k, s):
    *lead, H, W = x.shape
    OH, OW = (H - k) // s + 1, (W - k) // s + 1
    out = np.zeros(tuple(lead) + (OH, OW))
    for i in range(OH):
        for j in range(OW):
            out[..., i, j] = x[..., i * s:i * s + k, j * s:j * s + k].max(axis=(-2, -1))
    return out


def np_batch_norm(x, gamma, beta, eps=1e-5, tasks=False):
    first = 1 if tasks else 0
    axes = tuple(i for i in range(first, x.ndim) if i != first + 1)
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    shape = [1] * x.ndim
    shape[first + 1] = x.shape[first + 1]
    if tasks:
        shape[0] = x.shape[0]
    y = (x - mu) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma.reshape(shape) + beta.reshape(shape)
    return y


def np_log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- linear
@SOME
@given(n=st.integers(1, 4), i=st.integers(1, 4), o=st.integers(1, 3), bias=st.booleans(),
       seed=seeds)
def test_linear_2d(n, i, o, bias, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((n, i)), rng.standard_normal((o, i)), rng.standard_normal(o)
    if bias:
        check(F.linear, [x, w, b], x @ w.T + b)
    else:
        check(F.linear, [x, w], x @ w.T)
    # inside a nonlinearity, so second derivatives through x and w do not vanish
    check(lambda x, w: ag.tanh(F.linear(x, w)), [x, w], np.tanh(x @ w.T))


@SOME
@given(t=st.integers(1, 3), n=st.integers(1, 3), i=st.integers(1, 3), o=st.integers(1, 3),
       bias=st.booleans(), seed=seeds)
def test_linear_task_batched(t, n, i, o, bias, seed):
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(s) for s in ((t, n, i), (t, o, i), (t, o)))
    expected = np.einsum("tni,toi->tno", x, w) + (b[:, None, :] if bias else 0)
    if bias:
        check(F.linear, [x, w, b], expected)
    else:
        check(F.linear, [x, w], expected)
    check(lambda x, w, b: ag.tanh(F.linear(x, w, b)), [x, w, b],
          np.tanh(np.einsum("tni,toi->tno", x, w) + b[:, None, :]))


def linear_grad_mix(x, w, b, gy):
    """A scalar mix of Linear's three gradients (∂x, ∂W, ∂b), built with create_graph=True,
    so it goes through the LinearGrad node: gradcheck of it checks LinearGrad's backward on
    arrays, gradgradcheck its recorded form (third derivatives of the layer)."""
    x, w, b = (t if t.requires_grad else Tensor(t.data, requires_grad=True) for t in (x, w, b))
    with ag.enable_grad():                   # the checkers call f once under no_grad
        y = ag.tanh(F.linear(x, w, b))
        gx, gw, gb = ag.grad(y, [x, w, b], grad_outputs=gy, create_graph=True)
        return (gx * gx).sum() + (gw * w).sum() + (gb * gb).sum() + (gx * x).sum()


@pytest.mark.parametrize("shapes", [((3, 4), (2, 4), (2,)), ((2, 3, 4), (2, 2, 4), (2, 2))],
                         ids=["2d", "tasks"])
def test_linear_third_order(shapes):
    rng = np.random.default_rng(21)
    x, w, b = (rng.standard_normal(s) for s in shapes)
    gy = rng.standard_normal(shapes[0][:-1] + (shapes[1][-2],))
    assert ag.gradcheck(linear_grad_mix, [x, w, b, gy], rtol=RTOL) <= RTOL
    assert ag.gradgradcheck(linear_grad_mix, [x, w, b, gy], rtol=RTOL) <= RTOL


def test_linear_grad_arrays_equal_recorded_ops():
    """LinearGrad's backward on arrays (not recording) and in differentiable ops (recording)
    give the same values for every pattern of missing cotangents (rtol 1e-12)."""
    rng = np.random.default_rng(22)
    x, w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in ((2, 3, 4), (2, 5, 4), (2, 5)))
    gy = Tensor(rng.standard_normal((2, 3, 5)), requires_grad=True)
    outs = ag.grad(F.linear(x, w, b), [x, w, b], grad_outputs=gy, create_graph=True)
    node = outs[0].creator
    assert type(node).__name__ == "LinearGrad" and all(o.creator is node for o in outs)
    cot = [rng.standard_normal(o.shape) for o in outs]
    for present in ("abc", "a", "b", "c", "ab", "bc"):
        args = [Tensor(v, requires_grad=True) if n in present else None for n, v in zip("abc", cot)]
        with ag.no_grad():
            arrays = node.backward(*args)
        recorded = node.backward(*args)
        for got, want in zip(arrays, recorded):
            assert (got is None) == (want is None), present
            if got is not None:
                assert got.shape == want.shape and got.creator is None and want.creator is not None
                np.testing.assert_allclose(host(got), host(want), rtol=1e-12, atol=1e-12, err_msg=present)


# ----------------------------------------------------------------------------- conv2d
@st.composite
def conv_config(draw, tasks=False):
    k = draw(st.integers(1, 3))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, 2))
    h = draw(st.integers(max(1, k - 2 * p), 4))          # only configurations that fit
    w = draw(st.integers(max(1, k - 2 * p), 4))
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    if tasks:
        n, c = 1, draw(st.integers(1, 2))                 # keep the T·N·C·H·W count small
    return n, c, o, h, w, k, s, p


@SOME
@given(cfg=conv_config(), bias=st.booleans(), seed=seeds)
def test_conv2d(cfg, bias, seed):
    n, c, o, h, w_, k, s, p = cfg
    assume(h + 2 * p >= k and w_ + 2 * p >= k)
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((n, c, h, w_)), rng.standard_normal((o, c, k, k)), rng.standard_normal(o)
    if bias:
        check(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p), [x, w, b],
              np_conv2d(x, w, b, s, p))
    else:
        check(lambda x, w: F.conv2d(x, w, stride=s, padding=p), [x, w], np_conv2d(x, w, None, s, p))


@FEW
@given(cfg=conv_config(), seed=seeds)
def test_conv2d_inside_nonlinearity(cfg, seed):
    n, c, o, h, w_, k, s, p = cfg
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, c, h, w_)), rng.standard_normal((o, c, k, k)) * 0.5
    check(lambda x, w: ag.tanh(F.conv2d(x, w, stride=s, padding=p)), [x, w],
          np.tanh(np_conv2d(x, w, None, s, p)))


@FEW
@given(t=st.integers(1, 2), cfg=conv_config(tasks=True), bias=st.booleans(), seed=seeds)
def test_conv2d_task_batched(t, cfg, bias, seed):
    n, c, o, h, w_, k, s, p = cfg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, n, c, h, w_))
    w = rng.standard_normal((t, o, c, k, k))
    b = rng.standard_normal((t, o))
    expected = np.stack([np_conv2d(x[i], w[i], b[i] if bias else None, s, p) for i in range(t)])
    if bias:
        check(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p), [x, w, b], expected)
    else:
        check(lambda x, w: F.conv2d(x, w, stride=s, padding=p), [x, w], expected)


# ----------------------------------------------------------------------------- max_pool2d
@SOME
@given(nc=st.sampled_from([(1, 1), (1, 2), (2, 1)]), k=st.integers(2, 3), s=st.integers(1, 3),
       extra_h=st.integers(0, 2), extra_w=st.integers(0, 2), seed=seeds)
def test_max_pool2d(nc, k, s, extra_h, extra_w, seed):
    n, c = nc
    rng = np.random.default_rng(seed)
    x = distinct(rng, (n, c, k + extra_h, k + extra_w))
    expected = np_max_pool(x, k, s)
    check(lambda x: F.max_pool2d(x, k, s), [x], expected)
    # exp is monotone, so the arg-max positions (and the gaps) survive it
    check(lambda x: F.max_pool2d(ag.exp(x), k, s), [x], np_max_pool(np.exp(x), k, s))


@FEW
@given(t=st.integers(1, 2), k=st.integers(2, 3), s=st.integers(1, 2), seed=seeds)
def test_max_pool2d_task_batched_default_stride(t, k, s, seed):
    rng = np.random.default_rng(seed)
    x = distinct(rng, (t, 1, 1, k + 2, k + 1))
    check(lambda x: F.max_pool2d(x, k), [x], np_max_pool(x, k, k))        # stride = kernel
    check(lambda x: F.max_pool2d(x, (k, k), (s, s)), [x], np_max_pool(x, k, s))


# ----------------------------------------------------------------------------- batch_norm
def bn_input(rng, shape, channel_axis):
    """Per-channel variance drawn in [0.25, 4] and an arbitrary mean."""
    x = rng.standard_normal(shape)
    axes = tuple(i for i in range(len(shape)) if i != channel_axis)
    x = (x - x.mean(axis=axes, keepdims=True)) / x.std(axis=axes, keepdims=True)
    cshape = [1] * len(shape)
    cshape[channel_axis] = shape[channel_axis]
    return x * rng.uniform(0.5, 2.0, cshape) + rng.uniform(-1, 1, cshape)


@SOME
@given(n=st.integers(3, 5), c=st.integers(1, 3), spatial=st.booleans(), affine=st.booleans(),
       seed=seeds)
def test_batch_norm_training(n, c, spatial, affine, seed):
    rng = np.random.default_rng(seed)
    shape = (n, c, 2, 2) if spatial else (n, c)
    x = bn_input(rng, shape, 1)
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    if affine:
        check(lambda x, g, b: F.batch_norm(x, g, b), [x, gamma, beta],
              np_batch_norm(x, gamma, beta))
    else:
        check(lambda x: F.batch_norm(x, None, None), [x], np_batch_norm(x, None, None))


@FEW
@given(t=st.integers(1, 3), n=st.integers(3, 4), c=st.integers(1, 2), spatial=st.booleans(),
       seed=seeds)
def test_batch_norm_tasks(t, n, c, spatial, seed):
    rng = np.random.default_rng(seed)
    shape = (t, n, c, 2, 2) if spatial else (t, n, c)
    x = np.stack([bn_input(rng, shape[1:], 1) for _ in range(t)])
    gamma, beta = rng.uniform(0.5, 1.5, (t, c)), rng.standard_normal((t, c))
    check(lambda x, g, b: F.batch_norm(x, g, b, tasks=True), [x, gamma, beta],
          np_batch_norm(x, gamma, beta, tasks=True))


@FEW
@given(n=st.integers(1, 4), c=st.integers(1, 3), spatial=st.booleans(), seed=seeds)
def test_batch_norm_eval_running_stats(n, c, spatial, seed):
    rng = np.random.default_rng(seed)
    shape = (n, c, 2, 2) if spatial else (n, c)
    x = rng.standard_normal(shape)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    cs = (1, c, 1, 1) if spatial else (1, c)
    expected = (x - rm.reshape(cs)) / np.sqrt(rv.reshape(cs) + 1e-5) * gamma.reshape(cs) + beta.reshape(cs)

    def f(x, g, b):
        return F.batch_norm(x, g, b, running_mean=rm.copy(), running_var=rv.copy(), training=False)
    check(f, [x, gamma, beta], expected)
    # a nonlinearity after it, so the second order path through gamma·x is exercised
    check(lambda x, g, b: ag.tanh(f(x, g, b)), [x, gamma, beta], np.tanh(expected))
    rm0, rv0 = rm.copy(), rv.copy()
    f(Tensor(x), Tensor(gamma), Tensor(beta))
    np.testing.assert_array_equal(rm, rm0)                # eval mode never updates the stats
    np.testing.assert_array_equal(rv, rv0)


@SOME
@given(n=st.integers(2, 5), c=st.integers(1, 3), spatial=st.booleans(), steps=st.integers(1, 3),
       seed=seeds)
def test_batch_norm_running_stats_update(n, c, spatial, steps, seed):
    rng = np.random.default_rng(seed)
    shape = (n, c, 3, 2) if spatial else (n, c)
    rm, rv = backend.xp.zeros(c), backend.xp.ones(c)     # updated in place: on the active backend
    em, ev = np.zeros(c), np.ones(c)
    axes = (0, 2, 3) if spatial else (0,)
    for _ in range(steps):
        x = rng.standard_normal(shape) * 2 + 1
        F.batch_norm(Tensor(x), None, None, running_mean=rm, running_var=rv, training=True)
        em = 0.9 * em + 0.1 * x.mean(axis=axes)
        ev = 0.9 * ev + 0.1 * x.var(axis=axes, ddof=1)    # unbiased, momentum 0.1
    np.testing.assert_allclose(host(rm), em, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(host(rv), ev, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- relu, losses
@FEW
@given(shape=st.sampled_from([(3,), (2, 3), (2, 1, 3)]), seed=seeds)
def test_functional_relu(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.05, 2.0, shape)
    check(F.relu, [x], np.maximum(x, 0))
    check(lambda x: F.relu(x) * x, [x], np.maximum(x, 0) * x)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@SOME
@given(n=st.integers(1, 4), c=st.integers(2, 5), offset=st.sampled_from([0.0, 50.0]), seed=seeds)
def test_cross_entropy(reduction, n, c, offset, seed):
    rng = np.random.default_rng(seed)
    logits = offset + 2 * rng.standard_normal((n, c))        # offset 50: exp would be 5e21
    labels = rng.integers(0, c, n)
    nll = -np_log_softmax(logits)[np.arange(n), labels]
    expected = {"mean": nll.mean(), "sum": nll.sum(), "none": nll}[reduction]
    check(lambda z: F.cross_entropy(z, labels, reduction=reduction), [logits], expected)


@FEW
@given(t=st.integers(1, 3), n=st.integers(1, 3), c=st.integers(2, 4), seed=seeds)
def test_cross_entropy_task_batched_none(t, n, c, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((t, n, c)) * 3
    labels = rng.integers(0, c, (t, n))
    lsm = np_log_softmax(logits)
    expected = -np.take_along_axis(lsm, labels[..., None], -1)[..., 0]
    check(lambda z: F.cross_entropy(z, Tensor(labels), reduction="none"), [logits], expected)


@pytest.mark.parametrize("scale", [50.0, 1000.0])
def test_cross_entropy_huge_logits_stay_finite(scale):
    rng = np.random.default_rng(3)
    logits = scale * rng.standard_normal((4, 5))
    labels = np.array([0, 1, 2, 3])
    z = Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(z, labels)
    assert np.isfinite(loss.item())
    np.testing.assert_allclose(loss.item(), -np_log_softmax(logits)[np.arange(4), labels].mean(),
                               rtol=1e-12)
    (g,) = ag.grad(loss, [z])
    p = np.exp(np_log_softmax(logits))
    expected = (p - np.eye(5)[labels]) / 4                  # ∂ mean CE / ∂ logits
    assert np.all(np.isfinite(host(g)))
    np.testing.assert_allclose(host(g), expected, rtol=1e-10, atol=1e-15)
    if scale == 50.0:                                       # away from total saturation: full check
        assert ag.gradcheck(lambda z: F.cross_entropy(z, labels), [logits], rtol=RTOL) <= RTOL


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@SOME
@given(shape=st.sampled_from([(3,), (2, 3), (2, 2, 2)]), target_tensor=st.booleans(), seed=seeds)
def test_mse_loss(reduction, shape, target_tensor, seed):
    rng = np.random.default_rng(seed)
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    sq = (pred - target) ** 2
    expected = {"mean": sq.mean(), "sum": sq.sum(), "none": sq}[reduction]
    if target_tensor:
        check(lambda p, t: F.mse_loss(p, t, reduction=reduction), [pred, target], expected)
    else:
        check(lambda p: F.mse_loss(p, target, reduction=reduction), [pred], expected)


# ----------------------------------------------------------------------------- kernels
def kernels(name):
    """``with kernels("numba"):`` -- those kernels inside the block, on the NumPy backend, or
    ``kernels("cupy")``: the CuPy backend, whose arrays go to the CuPy kernels; the backend
    and kernels in use before are restored after the block (also when a check fails)."""
    if name == "cupy":
        return ag.settings.using(backend="cupy")
    return ag.settings.using(backend="numpy", kernels=name)


def _conv_pool_outputs_and_grads(x, w, b, s, p, k, dtype):
    xs = [Tensor(a.astype(dtype), requires_grad=True) for a in (x, w, b)]
    y = F.conv2d(xs[0], xs[1], xs[2], stride=s, padding=p)
    z = F.max_pool2d(ag.tanh(y), k, 1)
    loss = (z * z).sum()
    grads = ag.grad(loss, xs, create_graph=True)
    gg = ag.grad(sum((g * g).sum() for g in grads), xs)   # a second-order quantity too
    return host([y, z, *grads, *gg])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@FEW
@given(cfg=conv_config(), seed=seeds)
def test_numpy_and_numba_kernels_agree(dtype, cfg, seed):
    n, c, o, h, w_, k, s, p = cfg
    oh, ow = (h + 2 * p - k) // s + 1, (w_ + 2 * p - k) // s + 1
    assume(oh >= 2 and ow >= 2)
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((n, c, h, w_)), rng.standard_normal((o, c, k, k)), rng.standard_normal(o)
    results = {}
    others = ("numba", "cupy") if backend.name == "cupy" else ("numba",)   # a CuPy session: its kernels too
    for name in ("numpy",) + others:
        with kernels(name):
            results[name] = _conv_pool_outputs_and_grads(x, w, b, s, p, 2, dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    for name in others:
        for a, b_ in zip(results["numpy"], results[name]):
            assert a.dtype == b_.dtype == dtype
            np.testing.assert_allclose(a, b_, err_msg=name, **tol)
