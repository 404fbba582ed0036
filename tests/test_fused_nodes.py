"""The fused nodes and short ways of the small-network fast path (the sinusoid MAML step),
each against the readable form it replaces and against finite differences:

* ``linear_relu`` (node ``LinearReLU``, its backward ``LinearGrad(mask)``) = relu(linear),
  and its compiled epilogue (bias, gate, ReLU) = the NumPy form;
* ``mean`` of a float tensor (node ``Mean``) = Sum(x) · (1/n), and the backward of both,
  ``Spread`` (one node for reshape, broadcast_to and a product);
* ``mse_loss`` of float tensors (nodes ``SquaredDifference`` and its backward
  ``ScaledDifference``) = d · d with d = p − t;
* ``matmul_arrays``' two short ways (an inner dimension of 1, a right factor broadcast along
  the task axis), its transposed weight gradient ((B Aᵀ)ᵀ for A Bᵀ) and ``sum_rows`` =
  ``xp.matmul`` and the sum over axis −2;
* ``SubScaled``'s backward on the arrays = its recorded form;
* Adam's compiled update = ``adam_update``;
* MAML's meta-gradient on a ReLU MLP with the MSE loss = a per-task textbook computation
  written with the composed ops only.

Tolerances, everything in float64:
  * against the composed ops (values, first, second and third derivatives): the same
    arithmetic, at most summed in another order (``sum_rows``, the batched tasks), so
    ‖fused − composed‖∞ ≤ 1e-12 · max(‖composed‖∞, 1);
  * against finite differences: gradcheck / gradgradcheck's relative error ≤ RTOL = 1e-6
    (five-point stencil, h = 1e-3; every ReLU pre-activation is at least 0.1 from the kink,
    far beyond what a step of 2h moves it, so no stencil crosses a kink);
  * the compiled Adam update against ``adam_update`` and the compiled bias + ReLU against
    its NumPy form: bit for bit (the same operations in the same order in the same dtype,
    float32 and float64).
"""
import importlib

import numpy as np
import pytest

import autograd as ag
from autograd import Tensor, backend
from autograd import functional as F
from autograd.functional.linear import LinearGrad, LinearReLU, sum_rows
from autograd.functional.losses import ScaledDifference, SquaredDifference
from autograd.ops import linalg, matmul, reshape, sum as tsum
from autograd.ops.reduction import Mean, Spread, Sum
from helpers import host
from tinymeta.algorithms import MAML
from tinymeta.models import MLP
from tinymeta.optim import Adam, adam_update
from tinymeta.tasks import SinusoidSampler, SinusoidTasks

linear_module = importlib.import_module("autograd.functional.linear")   # F.linear is the function
RTOL = 1e-6
EXACT = 1e-12
SHAPES = {"2d": ((4, 3), (5, 3), (5,)), "tasks": ((2, 3, 4), (2, 5, 4), (2, 5))}


def assert_close(got, want, what=""):
    """‖got − want‖∞ ≤ 1e-12 · max(‖want‖∞, 1), on the host."""
    got, want = host(got), host(want)
    assert got.shape == want.shape, what
    scale = max(float(np.abs(want).max(initial=0)), 1.0)
    assert float(np.abs(got - want).max(initial=0)) <= EXACT * scale, what


def away_from_kink(shapes, seed, margin=0.1):
    """x, w, b (float64) whose pre-activations x Wᵀ + b are all at least ``margin`` from 0."""
    rng = np.random.default_rng(seed)
    while True:
        x, w, b = (rng.standard_normal(s) for s in shapes)
        z = np.einsum("...ni,...oi->...no", x, w) + (b[..., None, :] if b.ndim == 2 else b)
        if np.abs(z).min() >= margin and (z > 0).any() and (z < 0).any():
            return x, w, b


def composed_linear_relu(x, w, b):
    """relu(x Wᵀ + b) from the composed ops: the readable form of ``linear_relu``."""
    b = reshape(b, b.shape[:-1] + (1, b.shape[-1])) if b.ndim == 2 else b
    return ag.relu(matmul(x, w, transpose_b=True) + b)


def derivatives(f, arrays, seed=0):
    """f's value, its gradient and a second- and third-order quantity, each a list of arrays:
    y; ∇ₓ(c · y); ∇ₓ Σ (∇ₓ(c · y))² and ∇ₓ Σ (that)², for a fixed random cotangent c."""
    xs = [Tensor(a, requires_grad=True) for a in arrays]
    y = f(*xs)
    c = Tensor(np.random.default_rng(seed).standard_normal(y.shape))
    g1 = ag.grad((y * c).sum(), xs, create_graph=True)
    g2 = ag.grad(sum((g * g).sum() for g in g1), xs, create_graph=True, allow_unused=True)
    g2 = [g for g in g2 if g is not None]
    g3 = ag.grad(sum((g * g).sum() for g in g2), xs, allow_unused=True)
    return [y, *g1, *g2, *[g for g in g3 if g is not None]]


def assert_same_derivatives(fused, composed, arrays):
    got, want = derivatives(fused, arrays), derivatives(composed, arrays)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert_close(a, b, f"quantity {i}")


def check_fd(f, arrays):
    assert ag.gradcheck(f, arrays, rtol=RTOL) <= RTOL
    assert ag.gradgradcheck(f, arrays, rtol=RTOL) <= RTOL


# ----------------------------------------------------------------------------- linear_relu
@pytest.mark.parametrize("which", list(SHAPES))
def test_linear_relu_equals_relu_of_linear_to_third_order(which):
    arrays = away_from_kink(SHAPES[which], seed=1)
    y = F.linear_relu(*[Tensor(a, requires_grad=True) for a in arrays])
    assert type(y.creator) is LinearReLU
    assert_same_derivatives(F.linear_relu, composed_linear_relu, arrays)
    # inside a smooth function, so that second derivatives through x and W do not vanish
    assert_same_derivatives(lambda x, w, b: ag.tanh(F.linear_relu(x, w, b)),
                            lambda x, w, b: ag.tanh(composed_linear_relu(x, w, b)), arrays)


@pytest.mark.parametrize("which", list(SHAPES))
def test_linear_relu_finite_differences(which):
    arrays = away_from_kink(SHAPES[which], seed=2)
    check_fd(F.linear_relu, arrays)
    check_fd(lambda x, w, b: ag.tanh(F.linear_relu(x, w, b)), arrays)


def gated_grad_mix(x, w, b, gy):
    """A scalar mix of LinearReLU's three gradients built with create_graph=True, so they
    come from the node LinearGrad(mask): gradcheck of it checks that node's backward on
    arrays, gradgradcheck its recorded form (third derivatives of the layer)."""
    x, w, b = (t if t.requires_grad else Tensor(t.data, requires_grad=True) for t in (x, w, b))
    with ag.enable_grad():                   # the checkers call f once under no_grad
        y = ag.tanh(F.linear_relu(x, w, b))
        gx, gw, gb = ag.grad(y, [x, w, b], grad_outputs=gy, create_graph=True)
        return (gx * gx).sum() + (gw * w).sum() + (gb * gb).sum() + (gx * x).sum()


@pytest.mark.parametrize("which", list(SHAPES))
def test_gated_linear_grad_third_order(which):
    x, w, b = away_from_kink(SHAPES[which], seed=3)
    gy = np.random.default_rng(4).standard_normal(x.shape[:-1] + (w.shape[-2],))
    check_fd(gated_grad_mix, [x, w, b, gy])


@pytest.mark.parametrize("x_requires_grad", [True, False])
def test_gated_linear_grad_arrays_equal_recorded_ops(x_requires_grad):
    """LinearGrad(mask)'s backward on arrays (not recording) and in differentiable ops
    (recording) give the same values for every pattern of missing cotangents, also when
    x needs no gradient (it then gets none)."""
    rng = np.random.default_rng(5)
    x, w, b = away_from_kink(SHAPES["tasks"], seed=5)
    x = Tensor(x, requires_grad=x_requires_grad)
    w, b = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
    gy = Tensor(rng.standard_normal((2, 3, 5)), requires_grad=True)
    wrt = [x, w, b] if x_requires_grad else [w, b]
    outs = ag.grad(F.linear_relu(x, w, b), wrt, grad_outputs=gy, create_graph=True)
    node = outs[0].creator
    assert type(node) is LinearGrad and node.mask is not None
    cot = [rng.standard_normal(s) for s in ((2, 3, 4), (2, 5, 4), (2, 5))]
    for present in ("abc", "a", "b", "c", "ab", "bc"):
        args = [Tensor(v, requires_grad=True) if n in present else None for n, v in zip("abc", cot)]
        with ag.no_grad():
            arrays = node.backward(*args)
        recorded = node.backward(*args)
        for i, (got, want) in enumerate(zip(arrays, recorded)):
            assert (got is None) == (want is None), present
            if i == 1 and not x_requires_grad:
                assert got is None, present
            if got is not None:
                assert got.creator is None and want.creator is not None
                assert_close(got, want, present)


def test_linear_relu_backward_arrays_equal_recorded():
    x, w, b = (Tensor(a, requires_grad=True) for a in away_from_kink(SHAPES["tasks"], seed=6))
    y = F.linear_relu(x, w, b)
    gy = Tensor(np.random.default_rng(6).standard_normal(y.shape))
    with ag.no_grad():
        arrays = y.creator.backward(gy)
    recorded = LinearGrad(y.creator.mask)(gy, x, w)
    for got, want in zip(arrays, recorded):
        assert_close(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", ["2d", "shared", "per-task"])
def test_compiled_bias_relu_equals_numpy_bit_for_bit(dtype, bias):
    """LinearReLU's epilogue (z + b, the gate, the ReLU) as a compiled loop gives the bits of
    the NumPy form, NaN, ±inf and ±0 included."""
    if backend.name != "numpy":
        pytest.skip("the compiled epilogue runs on NumPy arrays only")
    rng = np.random.default_rng(23)
    shape = (5, 7) if bias == "2d" else (3, 5, 7)
    z = rng.standard_normal(shape).astype(dtype)
    z.reshape(-1, 7)[:5, 0] = [np.nan, np.inf, -np.inf, -0.0, 0.0]   # in column 0, whose bias is −0
    row = rng.standard_normal(7).astype(dtype)
    row[0] = -0.0
    b = {"2d": row, "shared": np.broadcast_to(row, (3, 7)),
         "per-task": np.concatenate([row[None], rng.standard_normal((2, 7)).astype(dtype)])}[bias]
    with ag.settings.using(kernels="numba"):
        mask, y = linear_module._bias_relu(z.copy(), b)
    want_mask, want_y = linear_module._bias_relu_arrays(z.copy(), b)
    assert mask.dtype == y.dtype == dtype
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(y, want_y)
    assert np.array_equal(np.signbit(y), np.signbit(want_y))            # -0.0 stays -0.0


def test_linear_relu_same_with_numpy_and_numba_kernels():
    arrays = away_from_kink(SHAPES["tasks"], seed=24)
    results = []
    for name in ("numpy", "numba"):
        with ag.settings.using(kernels=name):
            results.append(derivatives(F.linear_relu, arrays))
    for got, want in zip(*results):
        assert_close(got, want)


def test_linear_relu_refuses_a_missing_bias_and_bad_shapes():
    x, w = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match="bias is required"):
        F.linear_relu(x, w, None)
    with pytest.raises(ValueError, match="linear_relu: bias of shape"):
        F.linear_relu(x, w, Tensor(np.ones(3)))
    with pytest.raises(ValueError, match="linear_relu: input has 3 features"):
        F.linear_relu(x, Tensor(np.ones((4, 2))), Tensor(np.ones(4)))


# ----------------------------------------------------------------------------- matmul, sums
@pytest.mark.parametrize("a_shape,b_shape", [((4, 1), (1, 5)), ((3, 4, 1), (3, 1, 5)),
                                             ((3, 4, 1), (1, 5)), ((1, 1), (3, 1, 5))])
def test_matmul_arrays_outer_product_equals_matmul(a_shape, b_shape):
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    got = linalg.matmul_arrays(backend.from_numpy(a), backend.from_numpy(b))
    np.testing.assert_array_equal(host(got), np.matmul(a, b))     # no sum: the same products


@pytest.mark.parametrize("transposed", [False, True])
def test_matmul_arrays_task_broadcast_factor_equals_matmul(transposed):
    rng = np.random.default_rng(8)
    a, w = rng.standard_normal((3, 4, 5)), rng.standard_normal((6, 5) if transposed else (5, 6))
    wb = backend.xp.broadcast_to(backend.from_numpy(w), (3,) + w.shape)
    b = wb.swapaxes(-1, -2) if transposed else wb                   # stride 0 along the tasks
    got = host(linalg.matmul_arrays(backend.from_numpy(a), b))
    want = np.matmul(a, np.broadcast_to(w.T if transposed else w, (3, 5, 6)))
    assert got.shape == want.shape
    assert_close(got, want)


@pytest.mark.parametrize("g_shape,cols_shape,dtype,flips", [
    ((2, 64, 1200), (2, 576, 1200), np.float32, True),   # a convolution's weight gradient G colsᵀ
    ((32, 1100), (20, 1100), np.float32, True),          # 2-D
    ((2, 64, 245), (2, 576, 245), np.float32, True),     # the support set's (5 images of 7x7)
    ((2, 64, 1200), (2, 9, 1200), np.float32, False),    # too few columns in the result
    ((2, 65, 1200), (2, 576, 1200), np.float32, False),  # too many rows
    ((2, 64, 200), (2, 576, 200), np.float32, False),    # too short an inner dimension
    ((2, 64, 1200), (2, 576, 1200), np.float64, False)]) # float64: slower flipped
def test_matmul_arrays_flipped_weight_gradient_equals_matmul(g_shape, cols_shape, dtype, flips):
    """A Bᵀ computed as (B Aᵀ)ᵀ where it applies (matmul_arrays' docstring): the same sums,
    maybe in another order, and a row-major result like np.matmul's. Against the exact
    product (float64 of the same values), each entry within the rounding bound of a K-term
    dot product, γ_K Σₖ |aₖ bₖ| with γ_K = K u / (1 − K u) (Higham, Theorem 3.1)."""
    rng = np.random.default_rng(10)
    g, cols = rng.standard_normal(g_shape).astype(dtype), rng.standard_normal(cols_shape).astype(dtype)
    a, b = backend.from_numpy(g), backend.from_numpy(cols).swapaxes(-1, -2)
    assert linalg._flip(a, b) == (flips and backend.name == "numpy")
    got = linalg.matmul_arrays(a, b)
    assert got.flags.c_contiguous and got.dtype == dtype
    g64, cols64 = g.astype(np.float64), cols.astype(np.float64)
    exact = np.matmul(g64, cols64.swapaxes(-1, -2))
    K, u = g.shape[-1], np.finfo(dtype).eps / 2
    bound = K * u / (1 - K * u) * np.matmul(np.abs(g64), np.abs(cols64).swapaxes(-1, -2))
    assert np.all(np.abs(host(got) - exact) <= bound)
    assert not linalg._flip(a, backend.xp.ascontiguousarray(b))   # only a transposed view


@pytest.mark.parametrize("shape", [(5, 3), (1, 3), (2, 4, 3), (2, 1, 3)])
def test_sum_rows_equals_sum_over_axis_minus_two(shape):
    g = np.random.default_rng(9).standard_normal(shape)
    got = host(sum_rows(backend.from_numpy(g)))
    assert got.shape == g.sum(axis=-2).shape
    assert_close(got, g.sum(axis=-2))


def test_matmul_with_an_inner_dimension_of_one_finite_differences():
    rng = np.random.default_rng(10)
    check_fd(lambda a, b: ag.tanh(matmul(a, b, transpose_b=True)),
             [rng.standard_normal((2, 3, 1)), rng.standard_normal((2, 4, 1))])


# ----------------------------------------------------------------------------- sub_scaled
@pytest.mark.parametrize("a_shape,b_shape", [((2, 3), (2, 3)), ((3,), (2, 3)), ((2, 3), (3,))])
def test_sub_scaled_backward_arrays_equal_recorded(a_shape, b_shape):
    """SubScaled's backward: −c·gy on the arrays when nothing is recorded, the op otherwise."""
    rng = np.random.default_rng(21)
    a, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in (a_shape, b_shape))
    y = ag.ops.sub_scaled(a, b, 0.3)
    gy = Tensor(rng.standard_normal(y.shape), requires_grad=True)
    with ag.no_grad():
        arrays = y.creator.backward(gy)
    recorded = y.creator.backward(gy)
    for x, got, want in zip((a, b), arrays, recorded):
        assert got.shape == want.shape == x.shape
        assert_close(got, want)
    check_fd(lambda a, b: ag.tanh(ag.ops.sub_scaled(a, b, 0.3)) * b, [host(a), host(b)])


# ----------------------------------------------------------------------------- mean
@pytest.mark.parametrize("axis,keepdims", [(None, False), ((1, 2), False), (1, True), (-1, False), ((), False)])
def test_mean_node_equals_sum_times_reciprocal_count(axis, keepdims):
    x = np.random.default_rng(11).standard_normal((2, 3, 4))

    def composed(t):
        axes = ag.ops.reduction._normalize_axis("mean", axis, t.ndim)
        n = int(np.prod([t.shape[a] for a in axes], dtype=int))
        return ag.tanh(Sum(axes, keepdims)(t) * (1.0 / n))

    y = ag.ops.mean(Tensor(x, requires_grad=True), axis, keepdims)
    assert type(y.creator) is Mean
    assert_same_derivatives(lambda t: ag.tanh(ag.ops.mean(t, axis, keepdims)), composed, [x])
    check_fd(lambda t: ag.tanh(ag.ops.mean(t, axis, keepdims)), [x])


def test_mean_backward_arrays_equal_recorded():
    x = Tensor(np.random.default_rng(12).standard_normal((2, 3, 4)), requires_grad=True)
    y = ag.ops.mean(x, (1, 2))
    gy = Tensor(np.random.default_rng(13).standard_normal(y.shape))
    with ag.no_grad():
        (got,) = y.creator.backward(gy)
    with ag.enable_grad():
        (want,) = y.creator.backward(gy)
    assert got.shape == want.shape == x.shape
    assert_close(got, want)


def spread_mix(reduce):
    """A scalar of the gradient of tanh(reduce(x)) built with create_graph=True, so it goes
    through the node Spread: gradcheck checks Spread's backward (a Sum or Mean node),
    gradgradcheck one order higher."""
    def f(x):
        x = x if x.requires_grad else Tensor(x.data, requires_grad=True)
        with ag.enable_grad():
            y = ag.tanh(reduce(x))
            g = ag.grad((y * y).sum(), x, create_graph=True)
            assert type(g.creator.inputs[0].creator) is Spread or type(g.creator) is Spread
            return (g * g * x).sum()
    return f


@pytest.mark.parametrize("reduce", [lambda x: ag.ops.mean(x, (1, 2)), lambda x: tsum(x, 1),
                                    lambda x: ag.ops.mean(x, 0, keepdims=True)],
                         ids=["mean", "sum", "mean-keepdims"])
def test_spread_is_the_exact_backward_of_sum_and_mean(reduce):
    x = np.random.default_rng(20).standard_normal((2, 3, 4))
    y = reduce(Tensor(x, requires_grad=True))
    (g,) = y.creator.backward(Tensor(np.ones(y.shape), requires_grad=True))
    assert type(g.creator) is Spread and type(y.creator) in (Sum, Mean)
    check_fd(spread_mix(reduce), [x])


def test_mean_of_integers_is_float64_as_numpy():
    y = ag.ops.mean(Tensor(np.arange(6).reshape(2, 3)), axis=1)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(host(y), [1.0, 4.0])


# ----------------------------------------------------------------------------- mse_loss
def composed_squared_difference(p, t):
    d = p - t
    return d * d


@pytest.mark.parametrize("target_requires_grad", [False, True])
def test_squared_difference_equals_composed_to_third_order(target_requires_grad):
    rng = np.random.default_rng(14)
    p, t = rng.standard_normal((2, 3, 1)), rng.standard_normal((2, 3, 1))
    y = F.mse_loss(Tensor(p, requires_grad=True), Tensor(t), reduction="none")
    assert type(y.creator) is SquaredDifference
    if target_requires_grad:
        fused = lambda p, t: ag.tanh(F.mse_loss(p, t, reduction="none"))     # noqa: E731
        composed = lambda p, t: ag.tanh(composed_squared_difference(p, t))  # noqa: E731
        arrays = [p, t]
    else:
        target = Tensor(t)
        fused = lambda p: ag.tanh(F.mse_loss(p, target, reduction="none"))     # noqa: E731
        composed = lambda p: ag.tanh(composed_squared_difference(p, target))  # noqa: E731
        arrays = [p]
    assert_same_derivatives(fused, composed, arrays)
    check_fd(fused, arrays)


def scaled_difference_mix(g, p, t):
    """A scalar function of ScaledDifference's output built through SquaredDifference's
    recorded backward: gradcheck checks ScaledDifference's backward on arrays,
    gradgradcheck its recorded form."""
    g, p, t = (v if v.requires_grad else Tensor(v.data, requires_grad=True) for v in (g, p, t))
    with ag.enable_grad():
        y = F.mse_loss(p, t, reduction="none")
        gp, gt = ag.grad(y, [p, t], grad_outputs=g, create_graph=True)
        assert type(gp.creator) is ScaledDifference
        return ag.tanh(gp * gt + gp * p).sum()


def test_scaled_difference_finite_differences():
    rng = np.random.default_rng(15)
    check_fd(scaled_difference_mix, [rng.standard_normal((2, 3)) for _ in range(3)])


@pytest.mark.parametrize("requires", ["gpt", "gp", "gt", "pt", "p", "t"])
def test_scaled_difference_arrays_equal_recorded(requires):
    """ScaledDifference's backward on arrays and recorded give the same values, and a
    gradient exactly for the inputs that require one."""
    rng = np.random.default_rng(16)
    g, p, t = (Tensor(rng.standard_normal((2, 3)), requires_grad=n in requires) for n in "gpt")
    y = F.mse_loss(p, t, reduction="none")
    wrt = [v for v in (p, t) if v.requires_grad]
    first = ag.grad(y, wrt, grad_outputs=g, create_graph=True)[0]
    node = first.creator if p.requires_grad else first.creator.inputs[0].creator   # ∂t = −2 g (p − t)
    assert type(node) is ScaledDifference
    a = Tensor(rng.standard_normal((2, 3)))
    with ag.no_grad():
        arrays = node.backward(a)
    with ag.enable_grad():
        recorded = node.backward(a)
    for v, got, want in zip((g, p, t), arrays, recorded):
        assert (got is None) == (want is None) == (not v.requires_grad)
        if got is not None:
            assert_close(got, want)


def test_mse_loss_dtype_mismatch_is_still_refused():
    p = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="dtype mismatch"):
        F.mse_loss(p, Tensor(np.ones(3)))


# ----------------------------------------------------------------------------- Adam
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_adam_equals_adam_update_bit_for_bit(dtype):
    if backend.name != "numpy":
        pytest.skip("the compiled update runs on NumPy arrays only")
    rng = np.random.default_rng(17)
    shapes = {"w": (4, 3), "b": (4,), "s": (), "big": (101, 99)}    # big: the vectorised loop
    start = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    steps = [{k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()} for _ in range(4)]
    params = {k: Tensor(a.copy(), requires_grad=True) for k, a in start.items()}
    ref = {k: a.copy() for k, a in start.items()}
    m = {k: np.zeros_like(a) for k, a in start.items()}
    v = {k: np.zeros_like(a) for k, a in start.items()}
    with ag.settings.using(kernels="numba"):
        opt = Adam(params, lr=0.01, betas=(0.8, 0.99), eps=1e-6)
        for t, g in enumerate(steps, start=1):
            grads = {k: Tensor(a) for k, a in g.items()}
            grads["w"] = Tensor(np.asfortranarray(g["w"]))   # not C-contiguous: the NumPy update
            opt.step(grads)
            for k in ref:
                adam_update(ref[k], g[k], m[k], v[k], t, 0.01, 0.8, 0.99, 1e-6)
    for k in ref:
        assert params[k].data.dtype == dtype
        np.testing.assert_array_equal(params[k].data, ref[k], err_msg=k)
        np.testing.assert_array_equal(opt.m[k], m[k], err_msg=k)
        np.testing.assert_array_equal(opt.v[k], v[k], err_msg=k)


# ----------------------------------------------------------------------------- MAML
def textbook_meta_gradient(params, batch, alpha):
    """MAML's meta-gradient task by task, from the composed ops only (relu of matmul + b,
    (p − y)·(p − y), Sum · (1/n)): θ'ᵢ = θ − α ∇L_support, meta-loss (1/T) Σᵢ L_query(θ'ᵢ)."""
    names = list(params)

    def net(p, x):
        h = x
        for i in range(3):
            w, b = p[f"w{i}"], p[f"b{i}"]
            h = matmul(h, w, transpose_b=True) + b
            if i < 2:
                h = ag.relu(h)
        return h

    def loss(p, x, y):
        d = net(p, x) - y
        return tsum(d * d) * (1.0 / d.size)

    T = len(batch.support_x)
    total = None
    for t in range(T):
        xs, ys, xq, yq = (Tensor(getattr(batch, k)[t]) for k in ("support_x", "support_y", "query_x", "query_y"))
        g = ag.grad(loss(params, xs, ys), [params[k] for k in names], create_graph=True)
        fast = {k: params[k] - alpha * gk for k, gk in zip(names, g)}
        term = loss(fast, xq, yq)
        total = term if total is None else total + term
    return dict(zip(names, ag.grad(total * (1.0 / T), [params[k] for k in names])))


@pytest.mark.parametrize("batched", [True, False])
def test_maml_meta_gradient_on_a_relu_mlp_equals_the_textbook_one(batched):
    model = MLP([1, 8, 8, 1], init_std=0.5)
    params = model.init(np.random.default_rng(18))
    batch = SinusoidSampler(SinusoidTasks(), 5, 4, rng=np.random.default_rng(19)).sample_batch(3)
    learner = MAML(model, params, F.mse_loss, inner_lr=0.05, batched=batched)
    _, got = learner.meta_gradients(batch)
    want = textbook_meta_gradient(params, batch, 0.05)
    for k in params:
        assert_close(got[k], want[k], k)
