"""Plain-NumPy reference for the fused batch-norm + ReLU kernels (the readable spec).

Layout: x of shape (T, C, M): T tasks (or 1), C channels, M = every other axis flattened
(the channel-major layout (T, C, N, H, W) of Conv4 reshapes to this without a copy).
Statistics are per (task, channel) row, over its M values.

Forward, per row:   μ = mean(x),  σ² = mean((x − μ)²),  s = 1/√(σ² + ε)
                    x̂ = (x − μ)·s,  y = max(0, γ x̂ + β)
Backward, per row, with g = gy · 1[y > 0] (the ReLU gate):
                    ∂β = Σ g,   ∂γ = Σ g x̂,   ∂x = γ s (g − ∂β/M − x̂ ∂γ/M)
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
