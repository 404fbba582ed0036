"""Fully connected layer y = x Wᵀ + b, with W of shape (out, in) as in the papers' code."""
from .. import backend, mode
from ..function import Function
from ..ops import broadcast_to, linalg, matmul, reshape
from ..ops._operands import operands
from ..tensor import Tensor


def linear(x, w, b=None):
    """x (N, in) with w (out, in), b (out,); or batched over tasks: x (T, N, in), w (T, out, in), b (T, out)."""
    x, w, b = operands("linear", x, w, b)
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
    return Linear()(x, w, b)


class Linear(Function):
    """y = x Wᵀ + b as one node: fewer nodes in the graph than matmul, transpose and add,
    which matters for small networks where the per-op overhead dominates.

    Its backward is the node ``LinearGrad`` when the engine records (create_graph=True, as
    in MAML's inner loop), so the gradient can be differentiated again; when it does not,
    only the values are needed and they are computed on the arrays directly."""

    def forward(self, x, w, b):
        y = linalg.matmul_arrays(x, w.swapaxes(-1, -2))
        y += b[..., None, :] if b.ndim == 2 else b
        return y

    def backward(self, gy):
        x, w, b = self.inputs
        if mode.is_grad_enabled():
            return LinearGrad()(gy, x, w)
        g, mm = gy.data, linalg.matmul_arrays
        gx = Tensor.constant(mm(g, w.data)) if x.requires_grad else None                  # G W
        gw = Tensor.constant(mm(g.swapaxes(-1, -2), x.data)) if w.requires_grad else None  # Gᵀ x
        gb = Tensor.constant(g.sum(axis=-2)) if b.requires_grad else None                 # Σₙ G
        return gx, gw, gb


class LinearGrad(Function):
    """The backward of ``Linear`` as one node with three outputs:
    (G, x, W) -> (∂x, ∂W, ∂b) = (G W, Gᵀ x, Σₙ G).

    Each output is bilinear in (G, x, W), so its backward, for cotangents A, B, c of
    (∂x, ∂W, ∂b), is read off the products:
        ∂G = A Wᵀ + x Bᵀ + c,   ∂x = G B,   ∂W = Gᵀ A
    computed on the arrays when the engine does not record (MAML's outer step) and with
    differentiable ops when it does (third order).
    """

    def forward(self, g, x, w):
        mm = linalg.matmul_arrays
        return mm(g, w), mm(g.swapaxes(-1, -2), x), g.sum(axis=-2)

    def backward(self, a, bw, c):
        g, x, w = self.inputs
        if mode.is_grad_enabled():
            gg = _add(_add(None if a is None else matmul(a, w, transpose_b=True),        # A Wᵀ
                           None if bw is None else matmul(x, bw, transpose_b=True)),     # x Bᵀ
                      None if c is None else broadcast_to(reshape(c, c.shape[:-1] + (1, c.shape[-1])),
                                                          g.shape))                      # c
            gx = None if bw is None else matmul(g, bw)                                   # G B
            gw = None if a is None else matmul(g, a, transpose_a=True)                   # Gᵀ A
            return gg, gx, gw
        mm = linalg.matmul_arrays
        gg = None
        if a is not None:
            gg = mm(a.data, w.data.swapaxes(-1, -2))
        if bw is not None:
            t = mm(x.data, bw.data.swapaxes(-1, -2))
            gg = t if gg is None else gg + t
        if c is not None:
            cb = c.data[..., None, :]
            gg = backend.xp.broadcast_to(cb, g.shape).copy() if gg is None else gg + cb
        gx = None if bw is None else mm(g.data, bw.data)
        gw = None if a is None else mm(g.data.swapaxes(-1, -2), a.data)
        return tuple(None if v is None else Tensor.constant(v) for v in (gg, gx, gw))


def _add(a, b):
    """a + b where either may be None (a zero)."""
    if a is None:
        return b
    return a if b is None else a + b
