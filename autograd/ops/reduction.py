"""Reductions over axes: sum, mean, var, max, and the softmax family built from them."""
from .. import backend
from ..function import Function
from ..tensor import Tensor
from ._operands import as_tensor
from .shape import broadcast_to, reshape


def _normalize_axis(op, axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % ndim)
    return tuple(sorted(out))


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    """Σ x over ``axes``. Its backward copies gy back along them (``Spread``), whose own
    backward is this sum again, so derivatives of every order are exact."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.in_shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        return (Spread(self.axes, self.keepdims, self.in_shape, 1)(gy),)   # ∂Σx/∂xᵢ = 1


def sum(x, axis=None, keepdims=False):
    x = as_tensor("sum", x)
    return Sum(_normalize_axis("sum", axis, x.ndim), keepdims)(x)


def _count(shape, axes):
    n = 1
    for a in axes:
        n *= shape[a]
    return n


class Mean(Function):
    """The mean over ``axes`` of a float tensor as one node: Σx · (1/n), the values of
    ``Sum(axes)(x) * (1/n)``, which records two. Its backward is ``Spread`` with 1/n."""

    def __init__(self, axes, keepdims, n):
        self.axes, self.keepdims, self.n = axes, keepdims, n

    def forward(self, x):
        self.in_shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims) * x.dtype.type(1.0 / self.n)   # Σx · (1/n)

    def backward(self, gy):
        return (Spread(self.axes, self.keepdims, self.in_shape, self.n)(gy),)   # ∂/∂xᵢ = 1/n


class Spread(Function):
    """g ↦ g · (1/n) copied along ``axes`` back to ``shape``: the backward of ``Sum`` (n = 1)
    and of ``Mean`` (n the count) over those axes, as one node where reshape, broadcast_to
    (and a product) record three. It is linear in g and its adjoint is that sum or mean,
    so its backward is a ``Sum`` or ``Mean`` node again."""

    def __init__(self, axes, keepdims, shape, n):
        self.axes, self.keepdims, self.shape, self.n = axes, keepdims, shape, n

    def forward(self, g):
        if self.n != 1:
            g = g * g.dtype.type(1.0 / self.n)                                  # g · (1/n)
        kept = _kept_shape(self.shape, self.axes)                               # the summed axes put back
        return backend.xp.broadcast_to(g.reshape(kept), self.shape)

    def backward(self, gy):
        if self.n == 1:
            return (Sum(self.axes, self.keepdims)(gy),)
        return (Mean(self.axes, self.keepdims, self.n)(gy),)


def mean(x, axis=None, keepdims=False):
    x = as_tensor("mean", x)
    axes = _normalize_axis("mean", axis, x.ndim)
    if x.dtype.kind == "f":
        return Mean(axes, keepdims, _count(x.shape, axes))(x)
    return Sum(axes, keepdims)(x) * (1.0 / _count(x.shape, axes))   # integers: float64, as NumPy


def var(x, axis=None, keepdims=False):
    """Biased variance mean((x - mean x)²), composed of differentiable ops."""
    x = as_tensor("var", x)
    axes = _normalize_axis("var", axis, x.ndim)
    centered = x - mean(x, axes, keepdims=True)
    return mean(centered * centered, axes, keepdims)


class Max(Function):
    """max over axes; the gradient goes to the arg-max (split evenly between ties)."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.in_shape = x.shape
        return x.max(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        (x,) = self.inputs
        kept = _kept_shape(self.in_shape, self.axes)
        y = self.output().data.reshape(kept)
        winners = (x.data == y).astype(x.dtype)                   # a constant selection
        winners /= winners.sum(axis=self.axes, keepdims=True)
        gy = broadcast_to(reshape(gy, kept), self.in_shape)
        return (gy * Tensor.constant(winners),)


def max(x, axis=None, keepdims=False):
    x = as_tensor("max", x)
    return Max(_normalize_axis("max", axis, x.ndim), keepdims)(x)


def logsumexp(x, axis=-1, keepdims=False):
    """log Σ exp(x), stable: m + log Σ exp(x - m) holds for any constant m; we take m = max x."""
    x = as_tensor("logsumexp", x)
    axes = _normalize_axis("logsumexp", axis, x.ndim)
    m = Tensor.constant(x.data.max(axis=axes, keepdims=True))
    out = log(sum(exp(x - m), axes, keepdims=True)) + m
    return out if keepdims else reshape(out, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def log_softmax(x, axis=-1):
    x = as_tensor("log_softmax", x)
    return x - logsumexp(x, axis, keepdims=True)      # log softmax(x) = x - log Σ eˣ


def softmax(x, axis=-1):
    x = as_tensor("softmax", x)
    return exp(log_softmax(x, axis))


from .unary import exp, log  # noqa: E402
