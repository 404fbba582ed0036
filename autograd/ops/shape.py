"""Ops that move values around without arithmetic: reshape, transpose, broadcast, sum_to.

Each one's backward is another op of this file: reshape ↔ reshape, transpose ↔ inverse
transpose, broadcast_to ↔ sum_to. So their higher derivatives are exact by construction.
"""
from .. import backend
from ..function import Function
from ._operands import as_tensor


class Reshape(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape {tuple(x.shape)} ({x.size} values) "
                             f"into {self.shape}") from None

    def backward(self, gy):
        return (reshape(gy, self.in_shape),)


def reshape(x, shape):
    x = as_tensor("reshape", x)
    if tuple(shape) == x.shape:
        return x
    return Reshape(shape)(x)


class Transpose(Function):
    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        if self.axes is None:
            self.axes = tuple(reversed(range(x.ndim)))
        elif any(a < 0 for a in self.axes):
            self.axes = tuple(a % x.ndim if -x.ndim <= a else a for a in self.axes)
        if sorted(self.axes) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes {self.axes} are not a permutation for shape "
                             f"{tuple(x.shape)}")
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return (transpose(gy, tuple(inverse)),)


def transpose(x, axes=None):
    return Transpose(None if axes is None else tuple(int(a) for a in axes))(as_tensor("transpose", x))


def swapaxes(x, a, b):
    x = as_tensor("swapaxes", x)
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, axes)


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return backend.xp.broadcast_to(x, self.shape)
        except ValueError:
            raise ValueError(f"broadcast_to: cannot broadcast {tuple(x.shape)} to {self.shape}") from None

    def backward(self, gy):
        return (sum_to(gy, self.in_shape),)


def broadcast_to(x, shape):
    x = as_tensor("broadcast_to", x)
    if tuple(shape) == x.shape:
        return x
    return BroadcastTo(shape)(x)


def _sum_to_axes(in_shape, shape):
    """Axes to sum so that an array of ``in_shape`` reduces to ``shape`` (broadcast's adjoint)."""
    lead = len(in_shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and in_shape[lead + i] != 1)
    return axes, lead


class SumTo(Function):
    """Sum a broadcast array back down to ``shape``: the gradient of broadcasting."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        axes, lead = _sum_to_axes(x.shape, self.shape)
        y = x.sum(axis=axes, keepdims=True)
        if lead:
            y = y.reshape(self.shape)
        return y

    def backward(self, gy):
        return (broadcast_to(gy, self.in_shape),)


def sum_to(x, shape):
    x = as_tensor("sum_to", x)
    shape = tuple(shape)
    if x.shape == shape:
        return x
    return SumTo(shape)(x)


class AsType(Function):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.in_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return (astype(gy, self.in_dtype),)


def astype(x, dtype):
    """An explicit float32 ↔ float64 conversion (differentiable)."""
    x = as_tensor("astype", x)
    if backend.xp.dtype(dtype) == x.dtype:
        return x
    return AsType(dtype)(x)
