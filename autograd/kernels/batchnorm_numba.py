"""Numba-compiled fused batch-norm + ReLU; same contract as ``batchnorm_numpy``.

Each (task, channel) row is independent, so rows run in ``prange`` with no shared writes.
The forward reads a row twice (statistics, then normalise) and writes it once; the
backward reads it twice and writes once, where the composed version touches the
full-size tensor about a dozen times. Sums are accumulated in float64.
"""
import numpy as np
from numba import njit, prange


# Reassociating the sums lets LLVM vectorise them; NaN and infinity keep their meaning.
_FAST = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, parallel=True, fastmath=_FAST)
def _forward(x, gamma, beta, eps, y, mu, inv):
    T, C, M = x.shape
    for r in prange(T * C):
        t = r // C
        c = r - t * C
        xr = x[t, c]
        yr = y[t, c]
        s = 0.0
        for m in range(M):
            s += xr[m]
        mean = s / M
        v = 0.0
        for m in range(M):
            d = xr[m] - mean
            v += d * d
        istd = 1.0 / np.sqrt(v / M + eps)
        scale = gamma[t, c] * istd
        shift = beta[t, c] - mean * scale
        for m in range(M):
            yr[m] = max(xr[m] * scale + shift, 0.0)
        mu[t, c] = mean
        inv[t, c] = istd


@njit(cache=True, parallel=True, fastmath=_FAST)
def _backward(gy, x, y, mu, inv, gamma, gx, ggamma, gbeta):
    T, C, M = x.shape
    for r in prange(T * C):
        t = r // C
        c = r - t * C
        mean = mu[t, c]
        istd = inv[t, c]
        gyr, xr, yr, gxr = gy[t, c], x[t, c], y[t, c], gx[t, c]
        sb = 0.0
        sd = 0.0
        for m in range(M):
            g = gyr[m] if yr[m] > 0 else 0.0              # the ReLU gate
            sb += g                                        # Σ g
            sd += g * (xr[m] - mean)                       # Σ g (x − μ)
        sg = sd * istd                                     # Σ g x̂
        a = gamma[t, c] * istd
        mb = sb / M
        mg = sg * istd / M
        for m in range(M):
            g = gyr[m] if yr[m] > 0 else 0.0
            gxr[m] = a * (g - mb - (xr[m] - mean) * mg)    # γs(g − ∂β/M − x̂ ∂γ/M)
        ggamma[t, c] = sg
        gbeta[t, c] = sb


def bn_relu_forward(x, gamma, beta, eps):
    x = np.ascontiguousarray(x)
    T, C, M = x.shape
    y = np.empty_like(x)
    mu = np.empty((T, C), x.dtype)
    inv = np.empty((T, C), x.dtype)
    _forward(x, np.ascontiguousarray(gamma), np.ascontiguousarray(beta), eps, y, mu, inv)
    return y, mu, inv


def bn_relu_backward(gy, x, y, mu, inv, gamma):
    gy = np.ascontiguousarray(gy)
    gx = np.empty_like(x)
    T, C, _ = x.shape
    ggamma = np.empty((T, C), x.dtype)
    gbeta = np.empty((T, C), x.dtype)
    _backward(gy, x, y, mu, inv, np.ascontiguousarray(gamma), gx, ggamma, gbeta)
    return gx, ggamma, gbeta
