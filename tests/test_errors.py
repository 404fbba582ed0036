"""Every user-facing error: its type and the words of its message.

Tolerances: none (these tests compare exception types and message text with
``pytest.raises(match=...)``); the gradcheck-failure cases use the default
``rtol=1e-6`` of ``autograd.gradcheck`` / ``gradgradcheck``, and the errors they must report
are O(1) relative errors, far above it.
"""
import re
import sys

import numpy as np
import pytest

import autograd as ag
from autograd import Tensor
from autograd import backend
from autograd import functional as F
from helpers import host


def T(shape, dtype=np.float64, requires_grad=True, seed=0):
    rng = np.random.default_rng(seed)
    return Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=requires_grad)


# ----------------------------------------------------------------------------- shapes / dtypes
@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
def test_binary_shape_mismatch_names_op_and_both_shapes(name):
    with pytest.raises(ValueError, match=re.escape(f"{name}: shapes (2, 3) and (4,) cannot be broadcast")):
        getattr(ag, name)(T((2, 3)), T((4,)))


def test_operator_shape_mismatch_goes_through_the_same_check():
    with pytest.raises(ValueError, match=re.escape("mul: shapes (3, 2) and (3,)")):
        T((3, 2)) * T((3,))


def test_matmul_inner_dimension_mismatch():
    with pytest.raises(ValueError, match=re.escape("matmul: inner dimensions differ, (2, 3) @ (4, 5) (3 != 4)")):
        ag.matmul(T((2, 3)), T((4, 5)))


def test_matmul_batch_mismatch_and_vectors():
    with pytest.raises(ValueError, match=re.escape("matmul: batch dimensions of (2, 3, 4) and (5, 4, 2)")):
        ag.matmul(T((2, 3, 4)), T((5, 4, 2)))
    with pytest.raises(ValueError, match=re.escape("matmul: both operands need at least 2 dimensions, got (3,)")):
        ag.matmul(T((3,)), T((3, 2)))


@pytest.mark.parametrize("name", ["add", "mul", "matmul", "where_"])
def test_float32_float64_mixing_is_a_type_error_naming_both_dtypes(name):
    a, b = T((2, 2), np.float32), T((2, 2), np.float64)
    with pytest.raises(TypeError, match=r"dtype mismatch, float32 \(2, 2\) and float64 \(2, 2\)"):
        if name == "where_":
            ag.where(np.ones((2, 2), bool), a, b)
        else:
            getattr(ag, name)(a, b)


def test_mixing_with_numpy_array_of_other_dtype():
    with pytest.raises(TypeError, match="float64 .* float32"):
        T((2,), np.float64) + np.ones(2, np.float32)


def test_int_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="only float32/float64 tensors can require grad, got int64"):
        Tensor(np.arange(3), requires_grad=True)


@pytest.mark.parametrize("given,what", [
    ("abc", "str 'abc'"),
    (None, "NoneType None"),
    (np.array([object(), 1]), "an array of dtype object and shape (2,)"),
    (np.array(["a", "b"]), "an array of dtype <U1 and shape (2,)"),
    ([1.0, "x"], "list [1.0, 'x']"),
], ids=["str", "None", "object-array", "str-array", "mixed-list"])
def test_tensor_refuses_what_does_not_hold_numbers(given, what):
    message = f"Tensor: expected a Tensor, numbers or a numeric array, got {what}"
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        Tensor(given)


def test_tensor_refuses_a_ragged_list_in_one_sentence():
    with pytest.raises(TypeError, match=r"^Tensor: cannot make a numeric array from list \[\[1\], \[1, 2\]\] \(.*\)$"):
        Tensor([[1], [1, 2]])


def _array_entry_points():
    """(op, input shape, call taking the op's data operand): every public op and layer."""
    rng = np.random.default_rng(5)
    w3, w4 = rng.standard_normal((4, 3)), rng.standard_normal((2, 1, 2, 2))
    g2, b2 = np.ones((1, 2)), np.zeros((1, 2))
    s = (2, 2, 3)
    return [
        ("neg", s, ag.neg), ("exp", s, ag.exp), ("log", s, ag.log), ("sqrt", s, ag.sqrt),
        ("tanh", s, ag.tanh), ("sigmoid", s, ag.sigmoid), ("relu", s, ag.relu), ("sum", s, ag.sum),
        ("mean", s, ag.mean), ("var", s, ag.var), ("max", s, ag.max), ("logsumexp", s, ag.logsumexp),
        ("log_softmax", s, ag.log_softmax), ("softmax", s, ag.softmax),
        ("reshape", s, lambda x: ag.reshape(x, (-1,))), ("transpose", s, ag.transpose),
        ("swapaxes", s, lambda x: ag.swapaxes(x, 0, -1)),
        ("broadcast_to", s, lambda x: ag.broadcast_to(x, (2,) + s)),
        ("sum_to", s, lambda x: ag.sum_to(x, (1, 1, 3))), ("astype", s, lambda x: ag.astype(x, np.float32)),
        ("getitem", s, lambda x: ag.getitem(x, (0, slice(None)))),
        ("scatter_add", s, lambda x: ag.scatter_add(x, 0, (2,) + s)),
        ("concatenate", s, lambda x: ag.concatenate([x, x])), ("stack", s, lambda x: ag.stack([x, x])),
        ("where", s, lambda x: ag.where(np.ones(s, bool), x, 0.0)),
        ("pow", s, lambda x: ag.pow(x, 2)), ("mul", s, lambda x: ag.mul(x, 2.0)),
        ("matmul", s, lambda x: ag.matmul(x, w3.T)),
        ("linear", s, lambda x: F.linear(x, np.stack([w3, w3]))),
        ("mse_loss", s, lambda x: F.mse_loss(x, np.zeros(s))),
        ("cross_entropy", s, lambda x: F.cross_entropy(x, np.zeros((2, 2), int))),
        ("conv2d", (1, 1, 3, 3), lambda x: F.conv2d(x, w4)),
        ("max_pool2d", s, lambda x: F.max_pool2d(x, 2, 1)),
        ("batch_norm", (4, 3), lambda x: F.batch_norm(x, None, None)),
        ("batch_norm_relu", (1, 2, 3), lambda x: F.batch_norm_relu(x, g2, b2)),
    ]


ENTRY_POINTS = [name for name, _, _ in _array_entry_points()]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_op_takes_an_array_as_a_constant_and_refuses_a_string(name):
    """Each public op and layer takes a NumPy array where it takes a Tensor (a constant:
    the same values, nothing recorded), and refuses what does not hold numbers with one
    sentence naming the op. (An array used to reach the kernels as ndarray.data, a memoryview.)"""
    shape, f = {n: (s, f) for n, s, f in _array_entry_points()}[name]
    x = np.abs(np.random.default_rng(6).standard_normal(shape)) + 0.5
    want = f(Tensor(x))
    got = f(x)
    assert isinstance(got, Tensor) and got.creator is None and not got.requires_grad
    np.testing.assert_array_equal(host(got), host(want))
    with pytest.raises(TypeError, match=f"^{name}: expected a Tensor, numbers or a numeric array, got str 'abc'$"):
        f("abc")


def test_integer_tensor_meets_float32_by_numpy_rule_or_is_refused():
    x32 = Tensor(np.ones(2, np.float32))
    assert (x32 + np.array([1, 2], np.int16)).dtype == np.float32     # NumPy: int16 + float32 -> float32
    with pytest.raises(TypeError, match=re.escape("add: dtype mismatch, float32 (2,) and int64 (2,)")):
        x32 + np.array([1, 2])                                         # NumPy: float64, an up-cast
    with pytest.raises(ValueError, match=r"^pow: an integer tensor \(int64\) to the negative power -1 is not "
                                         r"an integer, so convert it with \.astype\(\) first$"):
        Tensor([1, 2]) ** -1


def test_reshape_impossible():
    with pytest.raises(ValueError, match=re.escape("reshape: cannot reshape (2, 3) (6 values) into (4,)")):
        T((2, 3)).reshape(4)


def test_getitem_out_of_range():
    with pytest.raises(IndexError, match=re.escape("getitem: index 5 does not fit shape (3,)")):
        T((3,))[5]
    with pytest.raises(IndexError, match=r"getitem: .* does not fit shape \(3, 2\)"):
        T((3, 2))[np.array([0, 3])]


@pytest.mark.parametrize("where", ["host", "device", "tensor", "list"])
def test_index_arrays_out_of_range_raise_on_every_backend(where):
    """NumPy raises for an index array entry outside [−n, n); CuPy would wrap it around
    silently, so getitem and scatter_add check the range themselves, naming the axis."""
    def put(a):
        return {"host": a, "device": backend.from_numpy(a), "tensor": Tensor(a), "list": a.tolist()}[where]
    msg = "getitem: an integer index array with values in [0, 3] does not fit shape (2, 3) on axis 0 (valid: -2 to 1)"
    with pytest.raises(IndexError, match=re.escape(msg)):
        T((2, 3))[put(np.array([0, 3]))]
    with pytest.raises(IndexError, match=re.escape("values in [-4, 1] does not fit shape (2, 3) on axis 1 (valid: -3 to 2)")):
        T((2, 3))[:, put(np.array([1, -4]))]
    with pytest.raises(IndexError, match=re.escape("on axis 2 (valid: -4 to 3)")):
        T((2, 3, 4))[..., put(np.array([4]))]                       # after an Ellipsis
    with pytest.raises(IndexError, match=re.escape("scatter_add: an integer index array with values in [0, 2] "
                                                   "does not fit shape (2, 3) on axis 0")):
        ag.scatter_add(T((3, 3)), put(np.array([0, 2, 1])), (2, 3))
    x = T((2, 3))
    np.testing.assert_array_equal(host(x[put(np.array([-2, 1]))]), host(x)[[0, 1]])   # in range: fine


def test_pow_with_tensor_exponent():
    with pytest.raises(TypeError, match="pow: only a constant Python number is supported as exponent, got Tensor"):
        T((2,)) ** T((2,))


def test_reduction_axis_out_of_range():
    with pytest.raises(ValueError, match="sum: axis 2 is out of range for a tensor with 2 dimensions"):
        T((2, 3)).sum(axis=2)


# ----------------------------------------------------------------------------- grad API
def test_grad_of_non_scalar_needs_grad_outputs():
    x = T((3,))
    with pytest.raises(ValueError, match=re.escape("grad: output of shape (3,) is not a scalar; pass grad_outputs")):
        ag.grad(x * 2.0, x)
    with pytest.raises(ValueError, match=re.escape("backward: output of shape (3,) is not a scalar")):
        (x * 2.0).backward()


def test_grad_outputs_wrong_shape_or_dtype():
    x = T((3,))
    with pytest.raises(ValueError, match=re.escape("grad_output of shape (2,) does not match its output of shape (3,)")):
        ag.grad(x * 2.0, x, grad_outputs=Tensor(np.ones(2)))
    with pytest.raises(TypeError, match="grad_output dtype float32 differs from its output's float64"):
        ag.grad(x * 2.0, x, grad_outputs=Tensor(np.ones(3, np.float32)))


def test_grad_wrt_input_not_in_graph():
    x, unused = T((3,)), T((2,))
    with pytest.raises(ValueError, match=re.escape("grad: input 1 (shape (2,)) is not in the graph of the outputs")):
        ag.grad((x * x).sum(), [x, unused])
    gx, gu = ag.grad((x * x).sum(), [x, unused], allow_unused=True)
    assert gu is None
    np.testing.assert_allclose(host(gx), 2 * host(x), rtol=1e-15)


def test_grad_wrt_tensor_without_requires_grad():
    x, c = T((3,)), T((3,), requires_grad=False)
    with pytest.raises(ValueError, match=re.escape("grad: an input of shape (3,) does not require grad")):
        ag.grad((x * c).sum(), [c])


def test_grad_inputs_must_be_tensors():
    x = T((3,))
    with pytest.raises(TypeError, match="grad: inputs must be Tensors, got ndarray"):
        ag.grad(x.sum(), [x.data])


# Regression: an earlier engine skipped freed nodes while ordering the graph, so a second
# pass never reached Function.saved_inputs(): grad() raised a misleading "not in the graph"
# ValueError and Tensor.backward() silently did nothing.
def test_grad_twice_through_freed_graph_raises_graph_freed_error():
    x = T((3,))
    y = (ag.exp(x) * x).sum()
    ag.grad(y, x)
    with pytest.raises(ag.GraphFreedError, match="retain_graph=True"):
        ag.grad(y, x)


def test_backward_twice_through_freed_graph_raises_graph_freed_error():
    x = T((3,))
    y = (ag.exp(x) * x).sum()
    y.backward()
    with pytest.raises(ag.GraphFreedError, match="retain_graph=True"):
        y.backward()


def test_graph_freed_error_message_when_a_freed_node_is_reached():
    # the error itself exists and mentions retain_graph: reach a freed node directly
    x = T((3,))
    y = ag.exp(x)
    (y * 1.0).sum().backward()
    assert y.creator.freed
    with pytest.raises(ag.GraphFreedError, match="retain_graph=True"):
        y.creator.saved_inputs()
    assert issubclass(ag.GraphFreedError, RuntimeError)


@pytest.mark.parametrize("api", ["grad", "backward"])
def test_retain_graph_allows_a_second_pass(api):
    x = T((3,))
    y = (ag.exp(x) * x).sum()
    expected = np.exp(host(x)) * (1 + host(x))
    if api == "grad":
        g1 = ag.grad(y, x, retain_graph=True)
        g2 = ag.grad(y, x)
        np.testing.assert_allclose(host(g1), expected, rtol=1e-14)
        np.testing.assert_allclose(host(g2), expected, rtol=1e-14)
    else:
        y.backward(retain_graph=True)
        y.backward()
        np.testing.assert_allclose(host(x.grad), 2 * expected, rtol=1e-14)


# ----------------------------------------------------------------------------- layers
def test_conv2d_channel_mismatch():
    with pytest.raises(ValueError, match=re.escape("conv2d: input has 3 channels but the weight expects 2")):
        F.conv2d(T((1, 3, 5, 5)), T((4, 2, 3, 3)))


def test_conv2d_kernel_too_large():
    with pytest.raises(ValueError, match=re.escape("conv2d: kernel 5x5 with padding 0 does not fit input 3x3")):
        F.conv2d(T((1, 1, 3, 3)), T((1, 1, 5, 5)))


def test_conv2d_bad_bias_and_task_mismatch():
    with pytest.raises(ValueError, match=re.escape("conv2d: bias of shape (3,) does not match weight (2, 1, 1, 1)")):
        F.conv2d(T((1, 1, 2, 2)), T((2, 1, 1, 1)), T((3,)))
    with pytest.raises(ValueError, match="conv2d: x has 2 tasks but w has 3"):
        F.conv2d(T((2, 1, 1, 3, 3)), T((3, 1, 1, 2, 2)))


def test_max_pool_kernel_too_large():
    with pytest.raises(ValueError, match=re.escape("max_pool2d: kernel 3x3 is larger than the input 2x2")):
        F.max_pool2d(T((1, 1, 2, 2)), 3)


def test_linear_feature_mismatch():
    with pytest.raises(ValueError, match=re.escape("linear: input has 3 features but the weight expects 4")):
        F.linear(T((2, 3)), T((5, 4)))
    with pytest.raises(ValueError, match=re.escape("linear: bias of shape (4,) does not match weight (5, 3)")):
        F.linear(T((2, 3)), T((5, 3)), T((4,)))


def test_cross_entropy_label_out_of_range():
    with pytest.raises(ValueError, match=re.escape("cross_entropy: labels must lie in [0, 3), got values in [0, 3]")):
        F.cross_entropy(T((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=re.escape("got values in [-1, 1]")):
        F.cross_entropy(T((2, 3)), np.array([-1, 1]))


def test_labels_carry_their_range_and_refuse_floats():
    """``Labels`` read their range once, where they are made: cross_entropy checks it."""
    labels = F.Labels(np.array([[0, 3]]))
    assert (labels.low, labels.high) == (0, 3) and labels.dtype == np.int64
    assert (F.Labels(np.zeros((2, 0), np.int64)).low, F.Labels(np.zeros((2, 0), np.int64)).high) == (0, -1)
    with pytest.raises(ValueError, match=re.escape("cross_entropy: labels must lie in [0, 3), got values in [0, 3]")):
        F.cross_entropy(T((1, 2, 3)), labels)
    with pytest.raises(TypeError, match="^Labels: class labels must be integers, got float64$"):
        F.Labels(np.array([0.0, 1.0]))


def test_cross_entropy_label_wrong_shape():
    with pytest.raises(ValueError, match=re.escape("cross_entropy: labels of shape (3,) do not match logits (2, 3) "
                                                   "(expected labels of shape (2,))")):
        F.cross_entropy(T((2, 3)), np.array([0, 1, 2]))


def test_cross_entropy_float_labels():
    with pytest.raises(TypeError, match="cross_entropy: labels must be integers, got float64"):
        F.cross_entropy(T((2, 3)), np.array([0.0, 1.0]))


def test_bad_reduction():
    with pytest.raises(ValueError, match="mse_loss: reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        F.mse_loss(T((2,)), np.zeros(2), reduction="avg")


def test_batch_norm_bad_gamma_shape():
    with pytest.raises(ValueError, match=re.escape("batch_norm: gamma of shape (4,) does not match (3,) for x (2, 3)")):
        F.batch_norm(T((2, 3)), T((4,)), T((3,)))
    with pytest.raises(ValueError, match=re.escape("batch_norm: beta of shape (3,) does not match (2, 3)")):
        F.batch_norm(T((2, 4, 3)), T((2, 3)), T((3,)), tasks=True)
    with pytest.raises(ValueError, match="training=False needs running_mean and running_var"):
        F.batch_norm(T((2, 3)), None, None, training=False)


def test_batch_norm_relu_bad_cancelled_bias_shape():
    with pytest.raises(ValueError, match=re.escape("batch_norm_relu: cancelled_bias of shape (2,) does not match "
                                                   "x (1, 2, 3) (expected (1, 2))")):
        F.batch_norm_relu(T((1, 2, 3)), T((1, 2)), T((1, 2)), cancelled_bias=T((2,)))


def test_hvp_vector_shape_mismatch():
    with pytest.raises(ValueError, match=re.escape("hvp: vector of shape (2,) does not match its input of shape (3,)")):
        ag.hvp(lambda x: (x * x).sum(), [np.ones(3)], [np.ones(2)])
    with pytest.raises(ValueError, match=re.escape("hvp: f must return a scalar, got shape (3,)")):
        ag.hvp(lambda x: x * x, [np.ones(3)], [np.ones(3)])


# ----------------------------------------------------------------------------- backends
def test_set_backend_cupy_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)                # as if CuPy were not installed
    before = (backend.name, backend.xp)
    with pytest.raises(backend.BackendUnavailable, match=r"set_backend\('cupy'\): CuPy is not installed"):
        ag.set_backend("cupy")
    assert (backend.name, backend.xp) == before                   # nothing changed


def test_set_backend_bogus():
    before = backend.name
    with pytest.raises(ValueError, match=r"set_backend: unknown backend 'bogus'; choose 'numpy' or 'cupy'"):
        ag.set_backend("bogus")
    assert backend.name == before                                # nothing changed


# ----------------------------------------------------------------------------- the checker can fail
class WrongSquare(ag.Function):
    """x² with the derivative 3x instead of 2x."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * x * 3.0,)


class RawSquare(ag.Function):
    """x² with a first derivative that is right but built from a raw array: the product
    with ``Tensor(x.data * 2)`` is a constant to the engine, so ∂(backward)/∂x is lost."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * Tensor(x.data * 2),)


class GoodSquare(ag.Function):
    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * (x * 2.0),)


X = np.array([[0.3, -1.2, 2.0], [1.5, -0.7, 0.9]])


def test_gradcheck_catches_a_wrong_backward():
    with pytest.raises(ag.GradcheckError, match=r"gradcheck: input 0 \(shape \(2, 3\)\): relative error .* > 1e-06"):
        ag.gradcheck(lambda x: WrongSquare()(x), [X])
    err = ag.gradcheck(lambda x: WrongSquare()(x), [X], raise_exception=False)
    assert err > 0.3                                     # |3x − 2x| / |3x| = 1/3


def test_gradgradcheck_catches_a_raw_array_in_backward():
    # first order is right, so gradcheck passes ...
    assert ag.gradcheck(lambda x: RawSquare()(x), [X]) <= 1e-6
    # ... but the second-order path through x was cut
    with pytest.raises(ag.GradcheckError, match=r"gradcheck: input 0 \(shape \(2, 3\)\): relative error"):
        ag.gradgradcheck(lambda x: RawSquare()(x), [X])
    # the same Function written with differentiable ops passes both
    assert ag.gradcheck(lambda x: GoodSquare()(x), [X]) <= 1e-6
    assert ag.gradgradcheck(lambda x: GoodSquare()(x), [X]) <= 1e-6
