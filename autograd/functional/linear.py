"""Fully connected layer y = x Wᵀ + b, with W of shape (out, in) as in the papers' code."""
from ..ops import matmul, reshape, swapaxes
from ..tensor import Tensor


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
    y = matmul(x, swapaxes(w, -1, -2))                  # y = x Wᵀ
    if b is None:
        return y
    if b.shape != w.shape[:-1]:
        raise ValueError(f"linear: bias of shape {tuple(b.shape)} does not match weight "
                         f"{tuple(w.shape)} (expected {tuple(w.shape[:-1])})")
    if b.ndim == 2:
        b = reshape(b, (b.shape[0], 1, b.shape[1]))       # one bias per task
    return y + b
