"""+, -, *, /, negation and powers by a constant, with NumPy broadcasting.

When an input was broadcast in the forward pass, its gradient is summed back to its own
shape with ``sum_to`` (itself differentiable: its backward is ``broadcast_to``).
"""
from .. import backend, mode
from ..function import Function
from ..tensor import Tensor
from ._operands import as_tensor, binary_operands, broadcast_error
from .shape import sum_to


def _broadcasting(op, f, a, b):
    try:
        return f(a, b)
    except ValueError:
        raise broadcast_error(op, a.shape, b.shape) from None


def _same_kind(c, x):
    """The number c in x's dtype when x holds floats (float32 stays float32); else c itself,
    so that integers follow NumPy (2 ** 0.5 is a float, never truncated to 2 ** 0)."""
    return x.dtype.type(c) if x.dtype.kind == "f" else c


class Add(Function):
    def forward(self, a, b):
        return _broadcasting("add", backend.xp.add, a, b)

    def backward(self, gy):
        a, b = self.inputs
        return sum_to(gy, a.shape), sum_to(gy, b.shape)


class Sub(Function):
    def forward(self, a, b):
        return _broadcasting("sub", backend.xp.subtract, a, b)

    def backward(self, gy):
        a, b = self.inputs
        return sum_to(gy, a.shape), sum_to(neg(gy), b.shape)


class Mul(Function):
    def forward(self, a, b):
        return _broadcasting("mul", backend.xp.multiply, a, b)

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(gy * b, a.shape) if a.requires_grad else None   # ∂(ab)/∂a = b
        gb = sum_to(gy * a, b.shape) if b.requires_grad else None   # ∂(ab)/∂b = a
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        return _broadcasting("div", backend.xp.divide, a, b)

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(gy / b, a.shape) if a.requires_grad else None            # ∂(a/b)/∂a = 1/b
        gb = sum_to(neg(gy * a / (b * b)), b.shape) if b.requires_grad else None  # ∂(a/b)/∂b = -a/b²
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return (neg(gy),)


class PowConst(Function):
    """x ** c for a constant exponent c."""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x ** _same_kind(self.c, x)

    def backward(self, gy):
        (x,) = self.inputs
        if self.c == 2:
            return (gy * (x * 2.0),)
        return (gy * (pow(x, self.c - 1) * float(self.c)),)   # d xᶜ/dx = c·xᶜ⁻¹


class SubScaled(Function):
    """a − c·b for a constant number c: a gradient step θ − α g as one node instead of two."""

    def __init__(self, c):
        self.c = c

    def forward(self, a, b):
        return _broadcasting("sub_scaled", lambda a, b: a - b * _same_kind(self.c, a), a, b)

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(gy, a.shape) if a.requires_grad else None
        if not b.requires_grad:
            return ga, None
        if mode.is_grad_enabled() or b.shape != gy.shape:
            return ga, sum_to(gy * (-self.c), b.shape)                  # ∂(a − cb)/∂b = −c
        return ga, Tensor.constant(gy.data * gy.dtype.type(-self.c))  # the same, on the arrays


def sub_scaled(a, b, c):
    """a − c·b, c a Python number (e.g. the SGD step θ − α g)."""
    a, b = binary_operands("sub_scaled", a, b)
    return SubScaled(float(c))(a, b)


def add(a, b):
    a, b = binary_operands("add", a, b)
    return Add()(a, b)


def sub(a, b):
    a, b = binary_operands("sub", a, b)
    return Sub()(a, b)


def mul(a, b):
    a, b = binary_operands("mul", a, b)
    return Mul()(a, b)


def div(a, b):
    a, b = binary_operands("div", a, b)
    return Div()(a, b)


def neg(x):
    return Neg()(as_tensor("neg", x))


def pow(x, c):
    if not isinstance(c, (int, float)):
        raise TypeError(f"pow: only a constant Python number is supported as exponent, got "
                        f"{type(c).__name__}; use exp(c * log(x)) for a tensor exponent")
    x = as_tensor("pow", x)
    if x.dtype.kind in "biu" and isinstance(c, int) and c < 0:
        raise ValueError(f"pow: an integer tensor ({x.dtype}) to the negative power {c} is not an "
                         "integer, so convert it with .astype() first")
    if c == 1:
        return x
    return PowConst(c)(x)
