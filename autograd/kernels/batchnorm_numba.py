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


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
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


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
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


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
def _double_backward(x, y, gy, mu, inv, gamma, a, has_a, b, c, gx, ggamma, ggy):
    T, C, M = x.shape
    for r in prange(T * C):
        t = r // C
        c_ = r - t * C
        mean = mu[t, c_]
        s = inv[t, c_]
        gs = gamma[t, c_] * s                              # γ s
        xr, yr, gyr, ar = x[t, c_], y[t, c_], gy[t, c_], a[t, c_]
        sg = 0.0
        sgd = 0.0
        sa = 0.0
        sad = 0.0
        sag = 0.0
        for m in range(M):                                 # one pass: the five row sums
            g = gyr[m] if yr[m] > 0 else 0.0
            d = xr[m] - mean
            sg += g                                        # Σ g
            sgd += g * d                                   # Σ g (x − μ)
            if has_a:
                av = ar[m]
                sa += av                                   # Σ a
                sad += av * d                              # Σ a (x − μ)
                sag += av * g                              # Σ a g
        gbar = sg / M                                      # ḡ
        q = sgd * s / M                                    # q = mean(g x̂)
        abar = sa / M                                      # ā
        ax = sad * s / M                                   # āₓ = mean(a x̂)
        K = sag - abar * sg - ax * sgd * s                 # K = Σ a·P g
        bb = b[t, c_] - gs * ax                            # b − γ s āₓ
        gq = gs * q
        wbar = bb * gbar - gq * abar                       # mean(w)
        cx = s * (bb * q - gq * ax + gs * K / M)           # s (mean(w x̂) + γ s K / M)
        cg = c[t, c_] - gs * abar                          # c − γ s ā
        gxr, ggyr = gx[t, c_], ggy[t, c_]
        for m in range(M):
            g = gyr[m] if yr[m] > 0 else 0.0
            d = xr[m] - mean
            av = ar[m] if has_a else 0.0
            w = bb * g - gq * av                           # w = (b − γ s āₓ) g − γ s q a
            gxr[m] = s * (w - wbar) - d * s * cx           # s P w − γ s² K x̂ / M
            ggyr[m] = (gs * av + cg + d * s * bb) if yr[m] > 0 else 0.0   # 1[y>0](γ s P a + b x̂ + c)
        ggamma[t, c_] = s * K                              # ∂γ' = s K


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


def bn_relu_double_backward(x, y, gy, mu, inv, gamma, a, b, c):
    T, C, _ = x.shape
    zeros = np.zeros((T, C), x.dtype)
    gy = np.ascontiguousarray(gy)
    has_a = a is not None
    a = np.ascontiguousarray(a) if has_a else x             # not read when has_a is False
    b = zeros if b is None else np.ascontiguousarray(b)
    c = zeros if c is None else np.ascontiguousarray(c)
    gx = np.empty_like(x)
    ggy = np.empty_like(x)
    ggamma = np.empty((T, C), x.dtype)
    _double_backward(x, y, gy, mu, inv, np.ascontiguousarray(gamma), a, has_a, b, c, gx, ggamma, ggy)
    return gx, ggamma, ggy
