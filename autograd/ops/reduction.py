"""Reductions over axes: sum, mean, var, max, and the softmax family built from them."""
from .. import backend, mode
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
    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.in_shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        gy = reshape(gy, _kept_shape(self.in_shape, self.axes))   # put the summed axes back
        return (broadcast_to(gy, self.in_shape),)                 # ∂Σx/∂xᵢ = 1


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
    ``Sum(axes)(x) * (1/n)``, which records two. Its backward spreads gy · (1/n) back over
    the summed axes: ``broadcast_to(reshape(gy * (1/n)))`` when the engine records, the
    same on arrays when it does not."""

    def __init__(self, axes, keepdims, n):
        self.axes, self.keepdims, self.n = axes, keepdims, n

    def forward(self, x):
        self.in_shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims) * x.dtype.type(1.0 / self.n)   # Σx · (1/n)

    def backward(self, gy):
        kept = _kept_shape(self.in_shape, self.axes)
        if mode.is_grad_enabled():
            return (broadcast_to(reshape(gy * (1.0 / self.n), kept), self.in_shape),)      # ∂/∂xᵢ = 1/n
        g = gy.data * gy.dtype.type(1.0 / self.n)
        return (Tensor.constant(backend.xp.broadcast_to(g.reshape(kept), self.in_shape)),)


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
