"""Engine basics: Tensor attributes, dtype preservation, recording modes, accumulation,
create_graph, higher-order derivatives.

Tolerances: derivative values are compared with ``rtol=1e-12`` in float64 (closed forms,
only rounding differs) and ``rtol=1e-5`` in float32; dtype checks are exact.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autograd as ag
from autograd import Tensor
from autograd import functional as F
from helpers import host

seeds = st.integers(0, 2**32 - 1)


# ----------------------------------------------------------------------------- Tensor basics
def test_tensor_attributes():
    a = np.arange(6.0).reshape(2, 3)
    t = Tensor(a, requires_grad=True, name="w")
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and len(t) == 2
    assert t.dtype == np.float64 and t.name == "w"
    assert t.requires_grad and t.is_leaf and t.creator is None and t.grad is None
    np.testing.assert_array_equal(t.numpy(), a)
    assert isinstance(t.numpy(), np.ndarray)
    assert Tensor(3.5).item() == 3.5
    assert "requires_grad=True" in repr(t) and "requires_grad" not in repr(Tensor(a))
    u = t * 2.0
    assert not u.is_leaf and u.creator is not None and u.requires_grad
    assert isinstance(t > 2.0, ag.backend.xp.ndarray) and (t > 2.0).dtype == bool   # comparisons: no graph


def test_tensors_and_nodes_hash_and_compare_by_identity():
    """The engine keys its sets and dicts by tensors and nodes: neither may define __eq__
    (an element-wise == would make them unhashable, or worse, equal by value)."""
    from autograd.functional import Labels
    for cls in (Tensor, Labels, ag.Function):
        assert cls.__eq__ is object.__eq__ and cls.__hash__ is object.__hash__, cls
    a, b = Tensor(np.ones(2)), Tensor(np.ones(2))
    assert len({a, b, a}) == 2


def test_tensor_constructor_dtypes():
    assert ag.tensor(1.5).dtype == np.float64              # Python floats -> float64
    assert ag.tensor([1.0, 2.0]).dtype == np.float64
    assert ag.tensor([1, 2]).dtype.kind == "i"
    assert Tensor(np.ones(2, np.float32)).dtype == np.float32   # arrays keep their dtype
    assert Tensor([1, 2], dtype=np.float32).dtype == np.float32
    t = Tensor(np.ones(2, np.float32)).requires_grad_()
    assert t.requires_grad
    with pytest.raises(TypeError):
        Tensor(np.arange(2)).requires_grad_()


# ----------------------------------------------------------------------------- dtypes
def _families(rng, dtype):
    """(name, function of one float tensor x of shape (2, 1, 3, 4)) covering every op family."""
    w = Tensor(rng.standard_normal((2, 1, 2, 2)).astype(dtype))
    lw = Tensor(rng.standard_normal((5, 4)).astype(dtype))
    labels = np.array([[0, 1, 2], [3, 4, 0]])
    c = Tensor(rng.standard_normal((4,)).astype(dtype))
    return [
        ("add", lambda x: x + c), ("sub", lambda x: c - x), ("mul", lambda x: x * c),
        ("div", lambda x: x / (c * c + 1.0)), ("neg", lambda x: -x), ("pow2", lambda x: x ** 2),
        ("pow_half", lambda x: (x * x + 1.0) ** 0.5), ("pow_neg", lambda x: (x * x + 1.0) ** -1),
        ("exp", ag.exp), ("log", lambda x: ag.log(x * x + 1.0)), ("sqrt", lambda x: ag.sqrt(x * x + 1.0)),
        ("tanh", ag.tanh), ("sigmoid", ag.sigmoid), ("relu", ag.relu),
        ("sum", lambda x: x.sum(axis=(0, -1))), ("mean", lambda x: x.mean(axis=1, keepdims=True)),
        ("var", lambda x: x.var(axis=-1)), ("max", lambda x: x.max(axis=2)),
        ("logsumexp", lambda x: ag.logsumexp(x, -1)), ("log_softmax", ag.log_softmax),
        ("softmax", lambda x: ag.softmax(x, 0)),
        ("reshape", lambda x: x.reshape(6, 4)), ("transpose", lambda x: x.transpose(3, 1, 0, 2)),
        ("swapaxes", lambda x: x.swapaxes(0, -1)), ("broadcast_to", lambda x: x.broadcast_to((5, 2, 1, 3, 4))),
        ("sum_to", lambda x: ag.sum_to(x, (1, 3, 1))), ("getitem", lambda x: x[:, 0, ::-1, np.array([1, 1, 3])]),
        ("mask", lambda x: x[x.data > 0]), ("scatter_add", lambda x: ag.scatter_add(x[0, 0], np.array([0, 0, 2]), (4, 4))),
        ("concatenate", lambda x: ag.concatenate([x, x * 2.0], axis=-2)), ("stack", lambda x: ag.stack([x, x], 1)),
        ("where", lambda x: ag.where(x.data > 0, x, c)), ("matmul", lambda x: x @ ag.swapaxes(lw, 0, 1)),
        ("astype_same", lambda x: x.astype(dtype)),
        ("linear", lambda x: F.linear(x.reshape(6, 4), lw)),
        ("conv2d", lambda x: F.conv2d(x.reshape(2, 1, 3, 4), w, padding=1)),
        ("max_pool2d", lambda x: F.max_pool2d(x, 2, 1)),
        ("batch_norm", lambda x: F.batch_norm(x.reshape(2, 3, 2, 2), None, None)),
        ("cross_entropy", lambda x: F.cross_entropy(x.reshape(2, 3, 4), labels % 4)),
        ("mse_loss", lambda x: F.mse_loss(x, np.zeros((2, 1, 3, 4)))),
    ]


FAMILY_NAMES = [name for name, _ in _families(np.random.default_rng(0), np.float64)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_dtype_preserved_through_every_op_family(name, dtype):
    rng = np.random.default_rng(1)
    f = dict(_families(rng, dtype))[name]
    x = Tensor(rng.standard_normal((2, 1, 3, 4)).astype(dtype), requires_grad=True)
    y = f(x)
    assert y.dtype == dtype, f"{name}: output {y.dtype} for input {dtype}"
    (g,) = ag.grad((y * y).sum(), [x], create_graph=True)
    assert g.dtype == dtype, f"{name}: gradient {g.dtype} for input {dtype}"
    (gg,) = ag.grad((g * g).sum(), [x], allow_unused=True)
    assert gg is None or gg.dtype == dtype, f"{name}: second derivative {gg.dtype}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_python_scalars_take_the_tensor_dtype(dtype):
    t = Tensor(np.array([1.0, 2.0], dtype=dtype), requires_grad=True)
    for out in (t * 2.0, 2.0 * t, t + 1, 1 - t, t / 3.0, 3.0 / t, t ** 2, t ** 0.5, t - 0.5,
                t * np.float64(2.0), ag.where(np.array([True, False]), t, 0.0)):
        assert out.dtype == dtype
    np.testing.assert_array_equal(host(t * 2.0), np.array([2.0, 4.0], dtype=dtype))


INTEGER_CASES = {   # name: (tinymeta, NumPy) on the integer array [[1, 2, 3], [4, 5, 7]]
    "mul_half": (lambda t: t * 0.5, lambda a: a * 0.5),
    "half_rmul": (lambda t: 0.5 * t, lambda a: 0.5 * a),
    "add_float": (lambda t: t + 0.25, lambda a: a + 0.25),
    "rsub_float": (lambda t: 1.5 - t, lambda a: 1.5 - a),
    "div_int": (lambda t: t / 2, lambda a: a / 2),
    "rdiv": (lambda t: 1.0 / t, lambda a: 1.0 / a),
    "mul_int": (lambda t: t * 3, lambda a: a * 3),
    "pow_half": (lambda t: t ** 0.5, lambda a: a ** 0.5),
    "pow_int": (lambda t: t ** 2, lambda a: a ** 2),
    "mean": (lambda t: t.mean(), np.mean),
    "mean_axis": (lambda t: t.mean(axis=1), lambda a: a.mean(axis=1)),
    "var": (lambda t: t.var(axis=0), lambda a: a.var(axis=0)),
    "sum": (lambda t: t.sum(), np.sum),
    "max": (lambda t: t.max(axis=1), lambda a: a.max(axis=1)),
    "exp": (ag.exp, np.exp),
    "sigmoid": (ag.sigmoid, lambda a: 1.0 / (1.0 + np.exp(-a))),
    "log_softmax": (ag.log_softmax, lambda a: a - np.log(np.exp(a).sum(axis=-1, keepdims=True))),
    "sub_scaled": (lambda t: ag.ops.sub_scaled(t, t, 0.5), lambda a: a - 0.5 * a),
    "add_float64_tensor": (lambda t: t + Tensor(np.full(3, 0.5)), lambda a: a + np.full(3, 0.5)),
    "matmul_float64": (lambda t: t @ Tensor(np.eye(3) * 0.5), lambda a: a @ (np.eye(3) * 0.5)),
    "batch_norm": (lambda t: F.batch_norm(t, None, None),
                   lambda a: (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5)),
    "mse_loss": (lambda t: F.mse_loss(t, [[0.5] * 3] * 2), lambda a: ((a - 0.5) ** 2).mean()),
}


@pytest.mark.parametrize("name", sorted(INTEGER_CASES))
def test_integer_tensors_follow_numpy_never_truncated(name):
    """An integer tensor meeting a float number, a float64 tensor or a mean gives NumPy's
    dtype and values (rtol 1e-12: only the rounding of stable formulas differs): ``Tensor([1, 2,
    3]) * 0.5`` is [0.5, 1.0, 1.5], not
    truncated to [0, 0, 0]."""
    ours, numpy_ = INTEGER_CASES[name]
    a = np.array([[1, 2, 3], [4, 5, 7]])
    got, want = ours(Tensor(a)), numpy_(a)
    assert got.dtype == np.asarray(want).dtype, name
    np.testing.assert_allclose(host(got), want, rtol=1e-12, atol=0)


def test_astype_float32_round_trip_gradient_dtype():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x.astype(np.float32)
    assert y.dtype == np.float32 and y.creator is not None
    (g,) = ag.grad((y * y).sum(), [x])
    assert g.dtype == np.float64
    np.testing.assert_allclose(host(g), 2 * host(x), rtol=1e-7)


# ----------------------------------------------------------------------------- recording modes
def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    assert ag.is_grad_enabled()
    with ag.no_grad():
        assert not ag.is_grad_enabled()
        y = ag.exp(x) * 2.0 + x
        with ag.enable_grad():
            z = x * 3.0
    assert ag.is_grad_enabled()
    assert y.creator is None and not y.requires_grad
    assert z.creator is not None and z.requires_grad           # enable_grad wins inside
    with ag.set_grad_enabled(False):
        assert (x * x).creator is None


def test_no_grad_restores_state_after_exception():
    with pytest.raises(RuntimeError):
        with ag.no_grad():
            raise RuntimeError("boom")
    assert ag.is_grad_enabled()


def test_detach():
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = x * x
    d = y.detach()
    assert d.creator is None and not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(host(d), host(y))
    (g,) = ag.grad((y.detach() * x).sum(), [x])             # the detached factor is a constant
    np.testing.assert_allclose(host(g), host(x) ** 2, rtol=1e-12)


# ----------------------------------------------------------------------------- accumulation
def test_backward_accumulates_into_grad_over_two_calls():
    x = Tensor(np.array([0.5, -1.0]), requires_grad=True)
    c = Tensor(np.array([3.0, 4.0]))                          # no requires_grad: never touched
    (ag.tanh(x) * c).sum().backward()
    first = host(x.grad).copy()
    np.testing.assert_allclose(first, (1 - np.tanh(host(x)) ** 2) * host(c), rtol=1e-12)
    (ag.tanh(x) * c).sum().backward()
    np.testing.assert_allclose(host(x.grad), 2 * first, rtol=1e-12)
    assert c.grad is None
    assert x.grad.creator is None and not x.grad.requires_grad    # plain values by default


def test_backward_create_graph_keeps_grad_differentiable():
    x = Tensor(np.array([0.5, 2.0]), requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad and x.grad.creator is not None
    (gg,) = ag.grad(x.grad.sum(), [x])
    np.testing.assert_allclose(host(gg), 6 * host(x), rtol=1e-12)


@settings(max_examples=min(10, settings.default.max_examples))
@given(seed=seeds)
def test_diamond_graph_accumulates_every_path(seed):
    rng = np.random.default_rng(seed)
    xv = rng.standard_normal(4)
    x = Tensor(xv, requires_grad=True)
    a = x * 2.0                     # x -> a -> out
    b = ag.exp(x)                   # x -> b -> out
    out = (a * b + x * x + a).sum()  # x used directly, a used twice
    (g,) = ag.grad(out, [x])
    expected = 2 * np.exp(xv) + 2 * xv * np.exp(xv) + 2 * xv + 2
    np.testing.assert_allclose(host(g), expected, rtol=1e-12)


def test_same_tensor_several_times_in_one_op():
    x = Tensor(np.array([1.5, -0.5]), requires_grad=True)
    (g,) = ag.grad((x * x * x).sum(), [x])
    np.testing.assert_allclose(host(g), 3 * host(x) ** 2, rtol=1e-12)
    (g,) = ag.grad(ag.concatenate([x, x, x]).sum(), [x])
    np.testing.assert_array_equal(host(g), [3.0, 3.0])


def test_multiple_outputs_in_grad():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (g,) = ag.grad([(x * x).sum(), (x * 3.0).sum()], [x])
    np.testing.assert_allclose(host(g), 2 * host(x) + 3, rtol=1e-12)


# ----------------------------------------------------------------------------- create_graph
def test_create_graph_results_are_in_the_graph():
    x = Tensor(np.array([0.3, -0.7]), requires_grad=True)
    y = (ag.tanh(x) * x).sum()
    (g,) = ag.grad(y, [x], create_graph=True)
    assert g.requires_grad and g.creator is not None
    (h,) = ag.grad((ag.tanh(x) * x).sum(), [x], create_graph=False)
    assert not h.requires_grad and h.creator is None
    np.testing.assert_allclose(host(g), host(h), rtol=1e-15)


@settings(max_examples=min(10, settings.default.max_examples))
@given(xs=st.lists(st.floats(-3, 3), min_size=1, max_size=4))
def test_third_derivative_of_x4(xs):
    xv = np.array(xs)
    x = Tensor(xv, requires_grad=True)
    (g1,) = ag.grad((x ** 4).sum(), [x], create_graph=True)
    np.testing.assert_allclose(host(g1), 4 * xv ** 3, rtol=1e-12, atol=1e-12)
    (g2,) = ag.grad(g1.sum(), [x], create_graph=True)
    np.testing.assert_allclose(host(g2), 12 * xv ** 2, rtol=1e-12, atol=1e-12)
    (g3,) = ag.grad(g2.sum(), [x], create_graph=True)
    np.testing.assert_allclose(host(g3), 24 * xv, rtol=1e-12, atol=1e-12)
    (g4,) = ag.grad(g3.sum(), [x])
    np.testing.assert_allclose(host(g4), 24.0, rtol=1e-12)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_third_derivative_keeps_dtype(dtype, rtol):
    x = Tensor(np.array([0.5, -1.5], dtype=dtype), requires_grad=True)
    g = (x ** 4).sum()
    for _ in range(3):
        (g,) = ag.grad(g.sum(), [x], create_graph=True)
        assert g.dtype == dtype
    np.testing.assert_allclose(host(g), 24 * host(x), rtol=rtol)


# ----------------------------------------------------------------------------- nodes with several outputs
class SumAndProduct(ag.Function):
    """(a, b) -> (a + b, a·b): a test node with two outputs. Its backward takes one
    gradient per output (None for an unused one) and is written with differentiable ops."""
    calls = 0

    def forward(self, a, b):
        return a + b, a * b

    def backward(self, gs, gp):
        SumAndProduct.calls += 1
        a, b = self.inputs
        ga = gb = None
        if gs is not None:
            ga, gb = gs, gs                                 # ∂(a+b)/∂a = ∂(a+b)/∂b = 1
        if gp is not None:
            ga = gp * b if ga is None else ga + gp * b      # ∂(ab)/∂a = b
            gb = gp * a if gb is None else gb + gp * a      # ∂(ab)/∂b = a
        return ga, gb


def two_output_loss(a, b):
    """The outputs reach the loss along paths of different lengths (s through three more
    ops, p directly and through s), so the walk meets them far apart."""
    s, p = SumAndProduct()(a, b)
    return (ag.exp(ag.tanh(s * 0.3)) * p).sum() + (p * p).sum()


def test_several_outputs_values_and_one_backward_call():
    rng = np.random.default_rng(0)
    a0, b0 = rng.standard_normal(4), rng.standard_normal(4)
    a, b = Tensor(a0, requires_grad=True), Tensor(b0, requires_grad=True)
    s, p = SumAndProduct()(a, b)
    assert s.creator is p.creator and s.requires_grad and p.requires_grad
    np.testing.assert_allclose(host(s), a0 + b0, rtol=1e-12)
    SumAndProduct.calls = 0
    ga, gb = ag.grad(two_output_loss(a, b), [a, b])
    assert SumAndProduct.calls == 1                         # once, with both gradients
    e = np.exp(np.tanh(0.3 * (a0 + b0)))
    de = e * (1 - np.tanh(0.3 * (a0 + b0)) ** 2) * 0.3      # d/ds of exp(tanh(0.3 s))
    gs, gp = de * a0 * b0, e + 2 * a0 * b0                  # ∂L/∂s, ∂L/∂p
    np.testing.assert_allclose(host(ga), gs + gp * b0, rtol=1e-12)
    np.testing.assert_allclose(host(gb), gs + gp * a0, rtol=1e-12)


def test_several_outputs_one_unused():
    a, b = Tensor(np.array([1.0, 2.0]), requires_grad=True), Tensor(np.array([3.0, -1.0]), requires_grad=True)
    s, p = SumAndProduct()(a, b)
    ga, gb = ag.grad((p * p).sum(), [a, b], retain_graph=True)   # s never used: its gradient is None
    np.testing.assert_allclose(host(ga), 2 * host(p) * host(b), rtol=1e-12)
    np.testing.assert_allclose(host(gb), 2 * host(p) * host(a), rtol=1e-12)
    assert ag.grad(p.sum(), s, allow_unused=True, retain_graph=True) is None   # a sibling is not upstream
    gp = ag.grad((p * p).sum(), p)                           # an output as the target
    np.testing.assert_allclose(host(gp), 2 * host(p), rtol=1e-12)


def test_several_outputs_first_and_second_order():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(3), rng.standard_normal(3)
    assert ag.gradcheck(two_output_loss, [a, b], rtol=1e-6) <= 1e-6
    assert ag.gradgradcheck(two_output_loss, [a, b], rtol=1e-6) <= 1e-6
    f = lambda a, b: SumAndProduct()(a, b)                  # noqa: E731  (both outputs returned)
    assert ag.gradgradcheck(f, [a, b], rtol=1e-6) <= 1e-6


class FreedAbove(ag.Function):
    """Identity whose backward records which of the watched tensors are still alive."""
    alive = None

    def __init__(self, watched):
        self.watched = watched                              # weak references

    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        FreedAbove.alive = [r() is not None for r in self.watched]
        return (gy,)


def test_walk_frees_the_activations_it_has_passed():
    """Once the backward walk has passed an activation and the nodes that saved it have
    run, nothing keeps it: by the time the walk reaches the first op, the later ones are
    gone (the engine used to keep them all until the end of the pass)."""
    import weakref
    x = Tensor(np.linspace(0.1, 0.5, 5), requires_grad=True)
    watched = []
    node = FreedAbove(watched)
    h1 = ag.exp(node(x))
    h2 = ag.exp(h1)
    watched += [weakref.ref(h1), weakref.ref(h2)]
    loss = h2.sum()
    del h1, h2
    (g,) = ag.grad(loss, [x])
    assert FreedAbove.alive == [False, False]
    np.testing.assert_allclose(host(g), np.exp(np.exp(host(x))) * np.exp(host(x)), rtol=1e-12)


class ExpAndDouble(ag.Function):
    """a -> (exp(a), 2a), whose backward reads its first output (∂exp(a)/∂a = exp(a))."""
    def forward(self, a):
        return np.exp(a), 2 * a

    def backward(self, ge, gd):
        e = self.outputs[0]()
        ga = None if ge is None else ge * e
        if gd is not None:
            ga = 2 * gd if ga is None else ga + 2 * gd
        return (ga,)


def test_several_outputs_kept_alive_until_their_node_runs():
    """The walk passes e long before d (d goes through four more ops); the node's backward
    still finds e, though nothing but the walk holds it."""
    a0 = np.array([0.3, -0.2, 0.1])
    a = Tensor(a0, requires_grad=True)
    e, d = ExpAndDouble()(a)
    loss = e.sum() + ag.tanh(ag.tanh(ag.tanh(ag.tanh(d)))).sum()
    del e, d
    (ga,) = ag.grad(loss, [a])
    chain, u = 2.0, 2 * a0                                  # d/da of tanh⁴(2a), link by link
    for _ in range(4):
        chain = chain * (1 - np.tanh(u) ** 2)
        u = np.tanh(u)
    np.testing.assert_allclose(host(ga), np.exp(a0) + chain, rtol=1e-12)


def test_several_outputs_graph_freed_after_backward():
    a, b = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2), requires_grad=True)
    s, p = SumAndProduct()(a, b)
    ag.grad((s * p).sum(), [a])
    with pytest.raises(ag.GraphFreedError, match="SumAndProduct"):
        ag.grad(p.sum(), [a])
