"""Numba-compiled convolution unfold kernels; same contract as ``im2col_numpy``.

``im2col(x, kh, kw, sh, sw, ph, pw)``: (B, C, H, W) -> (B, C*kh*kw, OH*OW) with
``cols[b, (c*kh + i)*kw + j, oh*OW + ow] = xpad[b, c, oh*sh + i, ow*sw + j]``
(``xpad`` = ``x`` zero-padded by ph rows / pw columns on each side).

``col2im(cols, H, W, kh, kw, sh, sw, ph, pw)`` is its exact adjoint: every cols
entry is added into the unpadded position it was read from, padding dropped.

Both run ``prange`` over the B*C planes: im2col writes the disjoint rows of its
own channel, col2im accumulates serially (in (i, j, oh, ow) order, matching the
NumPy reference) into its own (b, c) plane, so no two threads ever write the
same element.  The padded input is never materialised.  Compiled per dtype
(float32 / float64) on first use and cached in __pycache__.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _im2col(x, kh, kw, sh, sw, ph, pw, OH, OW, out):
    B, C, H, W = x.shape
    for p in prange(B * C):
        b = p // C
        c = p - b * C
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for oh in range(OH):
                    h = oh * sh + i - ph
                    base = oh * OW
                    if h < 0 or h >= H:
                        for ow in range(OW):
                            out[b, r, base + ow] = 0
                    else:
                        for ow in range(OW):
                            w = ow * sw + j - pw
                            if w >= 0 and w < W:
                                out[b, r, base + ow] = x[b, c, h, w]
                            else:
                                out[b, r, base + ow] = 0
    return out


@njit(cache=True, parallel=True)
def _col2im(cols, C, kh, kw, sh, sw, ph, pw, OH, OW, out):
    B, _, H, W = out.shape
    for p in prange(B * C):
        b = p // C
        c = p - b * C
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for oh in range(OH):
                    h = oh * sh + i - ph
                    if h < 0 or h >= H:
                        continue
                    base = oh * OW
                    for ow in range(OW):
                        w = ow * sw + j - pw
                        if w >= 0 and w < W:
                            out[b, c, h, w] += cols[b, r, base + ow]
    return out


def im2col(x, kh, kw, sh, sw, ph, pw):
    x = np.ascontiguousarray(x)
    B, C, H, W = x.shape
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.empty((B, C * kh * kw, OH * OW), dtype=x.dtype)
    return _im2col(x, kh, kw, sh, sw, ph, pw, OH, OW, out)


def col2im(cols, H, W, kh, kw, sh, sw, ph, pw):
    cols = np.ascontiguousarray(cols)
    B = cols.shape[0]
    C = cols.shape[1] // (kh * kw)
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.zeros((B, C, H, W), dtype=cols.dtype)
    return _col2im(cols, C, kh, kw, sh, sw, ph, pw, OH, OW, out)
