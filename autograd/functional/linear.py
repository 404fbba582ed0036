"""Fully connected layer y = x Wᵀ + b, with W of shape (out, in) as in the papers' code, and
the hidden layer of an MLP, relu(x Wᵀ + b), as one node."""
import numpy

from .. import backend, kernels, mode
from ..function import Function
from ..ops import broadcast_to, linalg, matmul, reshape
from ..ops._operands import operands
from ..ops.unary import ReLUGrad
from ..tensor import Tensor


def _check(op, x, w, b):
    if w.ndim not in (2, 3) or x.ndim != w.ndim:
        raise ValueError(f"{op}: expected x (N, in) with w (out, in), or x (T, N, in) with "
                         f"w (T, out, in); got x {tuple(x.shape)} and w {tuple(w.shape)}")
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"{op}: input has {x.shape[-1]} features but the weight expects "
                         f"{w.shape[-1]} (x {tuple(x.shape)}, w {tuple(w.shape)})")
    if w.ndim == 3 and x.shape[0] != w.shape[0]:
        raise ValueError(f"{op}: x has {x.shape[0]} tasks but w has {w.shape[0]} "
                         f"(x {tuple(x.shape)}, w {tuple(w.shape)})")
    if b is not None and b.shape != w.shape[:-1]:
        raise ValueError(f"{op}: bias of shape {tuple(b.shape)} does not match weight "
                         f"{tuple(w.shape)} (expected {tuple(w.shape[:-1])})")


def linear(x, w, b=None):
    """x (N, in) with w (out, in), b (out,); or batched over tasks: x (T, N, in), w (T, out, in), b (T, out)."""
    x, w, b = operands("linear", x, w, b)
    _check("linear", x, w, b)
    if b is None:
        return matmul(x, w, transpose_b=True)              # y = x Wᵀ
    return Linear()(x, w, b)


def linear_relu(x, w, b):
    """relu(x Wᵀ + b) as one node (``LinearReLU``); shapes as in ``linear``, the bias required."""
    x, w, b = operands("linear_relu", x, w, b)
    if b is None:
        raise ValueError("linear_relu: the bias is required (use relu(linear(x, w)) without one)")
    _check("linear_relu", x, w, b)
    return LinearReLU()(x, w, b)


def _affine(x, w, b):
    """x Wᵀ + b on arrays (b broadcast over the rows; over each task's rows with a task axis)."""
    y = linalg.matmul_arrays(x, w.swapaxes(-1, -2))
    y += b[..., None, :] if b.ndim == 2 else b
    return y


def _linear_vjp(g, x, w, b):
    """Linear's backward on arrays, for a gradient array g of y: (G W, Gᵀ x, Σₙ G), each
    only for an input that requires grad (no graph is recorded: only the values are wanted)."""
    mm = linalg.matmul_arrays
    gx = Tensor.constant(mm(g, w.data)) if x.requires_grad else None                  # G W
    gw = Tensor.constant(mm(g.swapaxes(-1, -2), x.data)) if w.requires_grad else None  # Gᵀ x
    gb = Tensor.constant(sum_rows(g)) if b.requires_grad else None                    # Σₙ G
    return gx, gw, gb


def sum_rows(g):
    """Σₙ g[..., n, :], the sum over the second-to-last axis, as the product (1 … 1) g: one
    matrix product per task, which at the sizes of an MLP costs a third of NumPy's
    reduction over a middle axis (the sum is the same, added in another order)."""
    ones = backend.xp.ones((1, g.shape[-2]), dtype=g.dtype)
    return linalg.matmul_arrays(ones, g)[..., 0, :]


class Linear(Function):
    """y = x Wᵀ + b as one node: fewer nodes in the graph than matmul, transpose and add,
    which matters for small networks where the per-op overhead dominates.

    Its backward is the node ``LinearGrad`` when the engine records (create_graph=True, as
    in MAML's inner loop), so the gradient can be differentiated again; when it does not,
    only the values are needed and they are computed on the arrays directly."""

    def forward(self, x, w, b):
        return _affine(x, w, b)                            # y = x Wᵀ + b

    def backward(self, gy):
        x, w, b = self.inputs
        if mode.is_grad_enabled():
            return LinearGrad()(gy, x, w)
        return _linear_vjp(gy.data, x, w, b)


class LinearReLU(Function):
    """y = max(x Wᵀ + b, 0) as one node: an MLP's hidden layer, one node where
    ``relu(linear(x, w, b))`` makes two (and its backward one where they make two).

    The gate m = 1[x Wᵀ + b > 0] is kept from the forward pass as a constant, 0/1 in the
    dtype: ReLU'' = 0 away from the kink, as in ``ReLUGrad``. The backward is Linear's for
    the gated gradient G ⊙ m: the node ``LinearGrad(m)`` when the engine records, arrays
    when it does not."""

    def forward(self, x, w, b):
        z = linalg.matmul_arrays(x, w.swapaxes(-1, -2))   # x Wᵀ
        self.mask, y = _bias_relu(z, b)                    # m = 1[x Wᵀ + b > 0], y = max(x Wᵀ + b, 0)
        return y

    def backward(self, gy):
        x, w, b = self.inputs
        if mode.is_grad_enabled():
            return LinearGrad(self.mask)(gy, x, w)
        return _linear_vjp(gy.data * self.mask, x, w, b)  # G ⊙ m through Linear's backward


def _bias_relu_arrays(z, b):
    """(m, y) for z + b, computed in z: the gate m = 1[z + b > 0] (0/1 in the dtype) and
    y = max(z + b, 0), as ReLU (a NaN stays NaN)."""
    z += b[..., None, :] if b.ndim == 2 else b                      # z + b
    mask = (z > 0).astype(z.dtype)                                   # m
    return mask, backend.xp.maximum(z, z.dtype.type(0), out=z)      # y


def _bias_relu(z, b):
    """``_bias_relu_arrays``, or the same arithmetic as one compiled loop
    (``_bias_relu_numba``) where the kernels setting is Numba and the arrays allow it."""
    kernel = _compiled_bias_relu()
    if kernel is None or type(z) is not numpy.ndarray or type(b) is not numpy.ndarray \
            or z.dtype not in _FLOATS or b.dtype != z.dtype or not z.flags.c_contiguous:
        return _bias_relu_arrays(z, b)
    tasks = z.reshape((-1,) + z.shape[-2:])                          # (T, N, O); (1, N, O) without tasks
    rows = b.reshape(1, -1) if b.ndim == 1 else (b[:1] if b.strides[0] == 0 else b)   # one bias, or one per task
    mask = numpy.empty_like(z)
    kernel(tasks, numpy.ascontiguousarray(rows), mask.reshape(tasks.shape))
    return mask, z


def _compiled_bias_relu():
    global _bias_relu_kernel
    if kernels.kernels_name() != "numba":
        return None
    if _bias_relu_kernel is None:
        from ._bias_relu_numba import bias_relu
        _bias_relu_kernel = bias_relu
    return _bias_relu_kernel


_bias_relu_kernel = None
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


class LinearGrad(Function):
    """The backward of ``Linear`` as one node with three outputs:
    (G, x, W) -> (∂x, ∂W, ∂b) = (G W, Gᵀ x, Σₙ G);
    with a gate m (``LinearGrad(m)``, the backward of ``LinearReLU``) the same for the gated
    gradient Ĝ = G ⊙ m in place of G.

    Each output is bilinear in (Ĝ, x, W) and Ĝ is linear in G, so its backward, for
    cotangents A, B, c of (∂x, ∂W, ∂b), is read off the products:
        ∂G = m ⊙ (A Wᵀ + x Bᵀ + c),   ∂x = Ĝ B,   ∂W = Ĝᵀ A
    computed on the arrays when the engine does not record (MAML's outer step) and with
    differentiable ops when it does (third order): there Ĝ and the gate of ∂G are
    ``ReLUGrad(m)`` nodes, ``relu``'s own backward. Only the inputs that require grad get one.
    """

    def __init__(self, mask=None):
        self.mask = mask

    def forward(self, g, x, w):
        if self.mask is not None:
            g = g * self.mask                                              # Ĝ = G ⊙ m
        mm = linalg.matmul_arrays
        return mm(g, w), mm(g.swapaxes(-1, -2), x), sum_rows(g)

    def backward(self, a, bw, c):
        g, x, w = self.inputs
        gate = self.mask
        want_gx = bw is not None and x.requires_grad
        want_gw = a is not None and w.requires_grad
        if mode.is_grad_enabled():
            gg = None
            if g.requires_grad:
                gg = _add(_add(None if a is None else matmul(a, w, transpose_b=True),        # A Wᵀ
                               None if bw is None else matmul(x, bw, transpose_b=True)),     # x Bᵀ
                          None if c is None else broadcast_to(reshape(c, c.shape[:-1] + (1, c.shape[-1])),
                                                              g.shape))                      # c
                if gate is not None and gg is not None:
                    gg = ReLUGrad(gate)(gg)                                                  # m ⊙ (…)
            gx = gw = None
            if want_gx or want_gw:
                gated = g if gate is None else ReLUGrad(gate)(g)                             # Ĝ
                gx = matmul(gated, bw) if want_gx else None                                  # Ĝ B
                gw = matmul(gated, a, transpose_a=True) if want_gw else None                 # Ĝᵀ A
            return gg, gx, gw
        mm = linalg.matmul_arrays
        gg = None
        if g.requires_grad:
            if a is not None:
                gg = mm(a.data, w.data.swapaxes(-1, -2))                               # A Wᵀ
            if bw is not None:
                t = mm(x.data, bw.data.swapaxes(-1, -2))                               # x Bᵀ
                gg = t if gg is None else gg + t
            if c is not None:
                cb = c.data[..., None, :]                                              # c
                gg = backend.xp.broadcast_to(cb, g.shape).copy() if gg is None else gg + cb
            if gate is not None and gg is not None:
                gg *= gate                                                             # m ⊙ (…)
        gx = gw = None
        if want_gx or want_gw:
            gated = g.data if gate is None else g.data * gate                          # Ĝ
            gx = mm(gated, bw.data) if want_gx else None                               # Ĝ B
            gw = mm(gated.swapaxes(-1, -2), a.data) if want_gw else None               # Ĝᵀ A
        return tuple(None if v is None else Tensor.constant(v) for v in (gg, gx, gw))


def _add(a, b):
    """a + b where either may be None (a zero)."""
    if a is None:
        return b
    return a if b is None else a + b
