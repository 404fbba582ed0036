"""Matrix products, 2-D and batched (NumPy matmul broadcasting over leading axes)."""
from .. import backend
from ..function import Function
from ._operands import binary_operands
from .shape import sum_to, swapaxes


class MatMul(Function):
    def forward(self, a, b):
        return backend.xp.matmul(a, b)

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(matmul(gy, swapaxes(b, -1, -2)), a.shape) if a.requires_grad else None  # ∂L/∂A = G Bᵀ
        gb = sum_to(matmul(swapaxes(a, -1, -2), gy), b.shape) if b.requires_grad else None  # ∂L/∂B = Aᵀ G
        return ga, gb


def matmul(a, b):
    a, b = binary_operands("matmul", a, b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul: both operands need at least 2 dimensions, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)} (reshape vectors to (n, 1) or (1, n))")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: inner dimensions differ, {tuple(a.shape)} @ {tuple(b.shape)} "
                         f"({a.shape[-1]} != {b.shape[-2]})")
    try:
        return MatMul()(a, b)
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of {tuple(a.shape)} and {tuple(b.shape)} "
                         "cannot be broadcast together") from None
