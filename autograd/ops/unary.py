"""Element-wise functions. Where the derivative is best said with the output y, the backward
uses ``self.output()``: a Tensor in the graph, so the path through y is differentiated too.
"""
from .. import backend
from ..function import Function
from ._operands import as_tensor


class Exp(Function):
    def forward(self, x):
        return backend.xp.exp(x)

    def backward(self, gy):
        return (gy * self.output(),)                # d eˣ/dx = eˣ = y


class Log(Function):
    def forward(self, x):
        return backend.xp.log(x)

    def backward(self, gy):
        (x,) = self.inputs
        return (gy / x,)                            # d log x/dx = 1/x


class Sqrt(Function):
    def forward(self, x):
        return backend.xp.sqrt(x)

    def backward(self, gy):
        return (gy / (self.output() * 2.0),)        # d √x/dx = 1/(2√x)


class Tanh(Function):
    def forward(self, x):
        return backend.xp.tanh(x)

    def backward(self, gy):
        y = self.output()
        return (gy * (1.0 - y * y),)                # d tanh x/dx = 1 - y²


class Sigmoid(Function):
    def forward(self, x):
        half = x.dtype.type(0.5) if x.dtype.kind == "f" else 0.5   # integers: float64, as tanh
        return half * (backend.xp.tanh(x * half) + 1)   # σ(x) = ½(1 + tanh(x/2)): no overflow

    def backward(self, gy):
        y = self.output()
        return (gy * (y * (1.0 - y)),)              # σ' = σ(1 - σ)


class ReLU(Function):
    def forward(self, x):
        return backend.xp.maximum(x, x.dtype.type(0))

    def backward(self, gy):
        (x,) = self.inputs
        return (ReLUGrad(x.data > 0)(gy),)


class ReLUGrad(Function):
    """g ↦ g · 1[x > 0]: ReLU's vector-Jacobian product. The mask is a constant (ReLU'' = 0
    away from the kink), so the op is linear in g and is its own backward. The mask is a
    boolean array or 0/1 in g's dtype (``LinearReLU`` keeps it so: the product is cheaper)."""

    def __init__(self, mask):
        self.mask = mask

    def forward(self, g):
        return g * self.mask                             # a bool mask multiplies as 0/1 in g.dtype

    def backward(self, gy):
        return (ReLUGrad(self.mask)(gy),)


def exp(x): return Exp()(as_tensor("exp", x))
def log(x): return Log()(as_tensor("log", x))
def sqrt(x): return Sqrt()(as_tensor("sqrt", x))
def tanh(x): return Tanh()(as_tensor("tanh", x))
def sigmoid(x): return Sigmoid()(as_tensor("sigmoid", x))
def relu(x): return ReLU()(as_tensor("relu", x))
