"""Derived derivative operators, each two lines of ``grad``:

* ``vjp``: vᵀ J, one backward pass;
* ``hvp``: H v = ∇ₓ (∇ₓf · v), a backward pass through the backward pass (double backward);
* ``jvp``: J v, by the double-vjp trick: g(u) = Jᵀu is linear in u, so the vjp of g with
  cotangent v, ∂(v · g(u))/∂u = (Jᵀ)ᵀ v = J v, is the same for every u (a zero u is used).
"""
from . import backend
from .engine import grad
from .tensor import Tensor


def _leaves(op, inputs):
    leaves = []
    for x in inputs:
        data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
        if data.dtype.kind != "f":
            raise TypeError(f"{op}: inputs must be float arrays, got {data.dtype}")
        leaves.append(Tensor(data, requires_grad=True))
    return leaves


def _vectors(op, vectors, like):
    vectors = [v if isinstance(v, Tensor) else Tensor(v, dtype=x.dtype) for v, x in zip(vectors, like)]
    if len(vectors) != len(like):
        raise ValueError(f"{op}: got {len(like)} inputs but {len(vectors)} vectors")
    for v, x in zip(vectors, like):
        if v.shape != x.shape:
            raise ValueError(f"{op}: vector of shape {tuple(v.shape)} does not match its input "
                             f"of shape {tuple(x.shape)}")
    return vectors


def _zeros_for_unused(grads, like):
    return [g if g is not None else Tensor.constant(backend.xp.zeros_like(x.data))
            for g, x in zip(grads, like)]


def vjp(f, inputs, vector):
    """(f(inputs), vᵀ ∂f/∂inputs) for a function of Tensors returning one Tensor."""
    xs = _leaves("vjp", inputs)
    y = f(*xs)
    gs = grad(y, xs, grad_outputs=vector, allow_unused=True)
    return y.detach(), _zeros_for_unused(gs, xs)


def hvp(f, inputs, vectors, create_graph=False):
    """(f(x), H v) for a scalar function f of the tensors ``inputs``, H its Hessian.

    H v = ∇ₓ(∇ₓf(x) · v): the gradient is computed with ``create_graph=True`` so that it can
    be differentiated again; the result costs about two gradients' work, not n of them.
    """
    xs = _leaves("hvp", inputs)
    vs = _vectors("hvp", vectors, xs)
    y = f(*xs)
    if y.size != 1:
        raise ValueError(f"hvp: f must return a scalar, got shape {tuple(y.shape)}")
    g = _zeros_for_unused(grad(y, xs, create_graph=True, allow_unused=True), xs)   # ∇f, recorded
    live = [i for i, gi in enumerate(g) if gi.requires_grad]
    hv = [Tensor.constant(backend.xp.zeros_like(x.data)) for x in xs]               # linear parts: H = 0
    if live:
        found = grad([g[i] for i in live], xs, grad_outputs=[vs[i] for i in live],
                     create_graph=create_graph, allow_unused=True)                 # ∇(∇f · v) = H v
        hv = _zeros_for_unused(found, xs)
    return y.detach(), hv


def jvp(f, inputs, vectors):
    """(f(x), J v) for a function returning one Tensor, J its Jacobian, by double vjp."""
    xs = _leaves("jvp", inputs)
    vs = _vectors("jvp", vectors, xs)
    y = f(*xs)
    u = Tensor(backend.xp.zeros_like(y.data), requires_grad=True)   # a dummy cotangent
    gs = grad(y, xs, grad_outputs=u, create_graph=True, allow_unused=True)   # Jᵀu, linear in u
    pairs = [(g, v) for g, v in zip(gs, vs) if g is not None and g.requires_grad]
    if not pairs:
        return y.detach(), Tensor.constant(backend.xp.zeros_like(y.data))
    jv = grad([g for g, _ in pairs], u, grad_outputs=[v for _, v in pairs], allow_unused=True)  # ∂(Jᵀu·v)/∂u = J v
    if jv is None:
        jv = Tensor.constant(backend.xp.zeros_like(y.data))
    return y.detach(), jv
