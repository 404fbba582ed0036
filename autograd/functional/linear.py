"""Fully connected layer y = x Wᵀ + b, with W of shape (out, in) as in the papers' code."""
from .. import backend
from ..function import Function
from ..ops import matmul, sum


def linear(x, w, b=None):
    """x (N, in) with w (out, in), b (out,); or batched over tasks: x (T, N, in), w (T, out, in), b (T, out)."""
    if w.ndim not in (2, 3) or x.ndim != w.ndim:
        raise ValueError(f"linear: expected x (N, in) with w (out, in), or x (T, N, in) with "
                         f"w (T, out, in); got x {tuple(x.shape)} and w {tuple(w.shape)}")
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features but the weight expects "
                         f"{w.shape[-1]} (x {tuple(x.shape)}, w {tuple(w.shape)})")
    if w.ndim == 3 and x.shape[0] != w.shape[0]:
        raise ValueError(f"linear: x has {x.shape[0]} tasks but w has {w.shape[0]} "
                         f"(x {tuple(x.shape)}, w {tuple(w.shape)})")
    if b is None:
        return matmul(x, w, transpose_b=True)              # y = x Wᵀ
    if b.shape != w.shape[:-1]:
        raise ValueError(f"linear: bias of shape {tuple(b.shape)} does not match weight "
                         f"{tuple(w.shape)} (expected {tuple(w.shape[:-1])})")
    if x.dtype != w.dtype or x.dtype != b.dtype:
        raise TypeError(f"linear: dtype mismatch, x {x.dtype}, w {w.dtype}, b {b.dtype}; "
                        "convert with .astype() first")
    return Linear()(x, w, b)


class Linear(Function):
    """y = x Wᵀ + b as one node: fewer nodes in the graph than matmul, transpose and add,
    which matters for small networks where the per-op overhead dominates. Its backward is
    written with differentiable ops, so it is differentiable again."""

    def forward(self, x, w, b):
        y = backend.xp.matmul(x, w.swapaxes(-1, -2))
        y += b[..., None, :] if b.ndim == 2 else b
        return y

    def backward(self, gy):
        x, w, b = self.inputs
        gx = matmul(gy, w) if x.requires_grad else None                          # ∂L/∂x = G W
        gw = matmul(gy, x, transpose_a=True) if w.requires_grad else None        # ∂L/∂W = Gᵀ x
        gb = sum(gy, axis=-2) if b.requires_grad else None                       # ∂L/∂b = Σₙ G
        return gx, gw, gb
