"""Plain-NumPy reference for the fused batch-norm + ReLU kernels (the readable spec).

Layout: x of shape (T, C, M): T tasks (or 1), C channels, M = every other axis flattened
(the channel-major layout (T, C, N, H, W) of Conv4 reshapes to this without a copy).
Statistics are per (task, channel) row, over its M values.

Forward, per row:   μ = mean(x),  σ² = mean((x − μ)²),  s = 1/√(σ² + ε)
                    x̂ = (x − μ)·s,  y = max(0, γ x̂ + β)
Backward, per row, with g = gy · 1[y > 0] (the ReLU gate):
                    ∂β = Σ g,   ∂γ = Σ g x̂,   ∂x = γ s (g − ∂β/M − x̂ ∂γ/M)

Double backward: the backward above is a function B(x, γ, gy) -> (∂x, ∂γ, ∂β); its own
vector-Jacobian product, for cotangents a (of ∂x, a full row), b (of ∂γ) and c (of ∂β),
per row. With ḡ = mean(g), q = mean(g x̂), ā = mean(a), āₓ = mean(a x̂) and the projection
P v = v − mean(v) − x̂ mean(v x̂) (so ∂x = γ s P g, and dx̂ = s P dx):
    K   = Σ a·P g
    ∂γ' = s K
    ∂gy = 1[y > 0] · (γ s P a + b x̂ + c)
    ∂x' = s P w − γ s² K x̂ / M,   with w = (b − γ s āₓ) g − γ s q a
(derivation in autograd/README.md, "Batch-norm's double backward").
"""
import numpy as np


def bn_relu_forward(x, gamma, beta, eps):
    """(y, mean, inv_std) for x (T, C, M), gamma/beta (T, C)."""
    mu = x.mean(axis=2, dtype=np.float64)
    d = x - mu[..., None].astype(x.dtype)
    var = np.einsum("tcm,tcm->tc", d, d, dtype=np.float64) / x.shape[2]
    inv = 1.0 / np.sqrt(var + eps)
    scale = (gamma * inv).astype(x.dtype)
    y = d * scale[..., None] + beta[..., None].astype(x.dtype)
    np.maximum(y, 0, out=y)
    return y, mu.astype(x.dtype), inv.astype(x.dtype)


def bn_relu_backward(gy, x, y, mu, inv, gamma):
    """(gx, ggamma, gbeta) for the forward above."""
    M = x.shape[2]
    g = np.where(y > 0, gy, 0).astype(x.dtype)
    xhat = (x - mu[..., None]) * inv[..., None]
    gbeta = g.sum(axis=2, dtype=np.float64)
    ggamma = np.einsum("tcm,tcm->tc", g, xhat, dtype=np.float64)
    gx = (gamma * inv)[..., None] * (g - (gbeta / M)[..., None] - xhat * (ggamma / M)[..., None])
    return gx.astype(x.dtype), ggamma.astype(x.dtype), gbeta.astype(x.dtype)


def bn_relu_double_backward(x, y, gy, mu, inv, gamma, a, b, c, xp=np):
    """(∂x, ∂γ, ∂gy): the vector-Jacobian product of bn_relu_backward with respect to its
    inputs x, γ and gy, for cotangents a (T, C, M) of ∂x, b (T, C) of ∂γ and c (T, C) of ∂β.
    Any of a, b, c may be None (a zero cotangent). Plain array code in float64: with
    ``xp=cupy`` it is also the CuPy version (cupy_kernels)."""
    T, C, M = x.shape
    f8 = xp.float64
    g = xp.where(y > 0, gy, 0).astype(f8)
    xhat = (x.astype(f8) - mu[..., None]) * inv.astype(f8)[..., None]
    s = inv.astype(f8)[..., None]
    gs = (gamma * inv).astype(f8)[..., None]                     # γ s
    b = xp.zeros((T, C)) if b is None else b.astype(f8)
    c = xp.zeros((T, C)) if c is None else c.astype(f8)
    q = (g * xhat).mean(axis=2, keepdims=True)                    # q = mean(g x̂)
    if a is None:
        a = xp.zeros_like(g)
    a = a.astype(f8)
    abar = a.mean(axis=2, keepdims=True)                          # ā
    ax = (a * xhat).mean(axis=2, keepdims=True)                   # āₓ = mean(a x̂)
    Pa = a - abar - xhat * ax                                     # P a
    K = (g * Pa).sum(axis=2, keepdims=True)                       # K = Σ a·P g = Σ g·P a
    ggamma = (s * K)[..., 0]                                      # ∂γ' = s K
    ggy = xp.where(y > 0, gs * Pa + b[..., None] * xhat + c[..., None], 0)   # 1[y>0](γsPa + b x̂ + c)
    w = (b[..., None] - gs * ax) * g - gs * q * a                 # w = (b − γ s āₓ) g − γ s q a
    Pw = w - w.mean(axis=2, keepdims=True) - xhat * (w * xhat).mean(axis=2, keepdims=True)
    gx = s * Pw - gs * s * K * xhat / M                           # ∂x' = s P w − γ s² K x̂ / M
    dt = x.dtype
    return gx.astype(dt), ggamma.astype(dt), ggy.astype(dt)
