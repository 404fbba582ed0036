"""Numba-compiled convolution unfold kernels; same contract as ``im2col_numpy``.

``im2col(x, kh, kw, sh, sw, ph, pw)``: (B, C, H, W) -> (B, C*kh*kw, OH*OW), or in the
grouped layout (G, C, N, H, W) -> (G, C*kh*kw, N*OH*OW) (see ``im2col_numpy``), with
``cols[b, (c*kh + i)*kw + j, oh*OW + ow] = xpad[b, c, oh*sh + i, ow*sw + j]``
(``xpad`` = ``x`` zero-padded by ph rows / pw columns on each side).

``col2im(cols, H, W, kh, kw, sh, sw, ph, pw, N=None)`` is its exact adjoint (with ``N``,
of the grouped layout): every cols entry is added into the unpadded position it was read
from, padding dropped.

Both run ``prange`` over the B*C planes: im2col writes the disjoint rows of its
own channel, col2im accumulates serially (in (i, j, oh, ow) order, matching the
NumPy reference) into its own (b, c) plane, so no two threads ever write the
same element.  The padded input is never materialised.  Compiled per dtype
(float32 / float64) on first use and cached in __pycache__.

The inner loops index one image of a plane through 1-D slices of the flat plane, with int32
source positions. The first version built a 2-D view per image (``x[g, c, n].ravel()``) and
read int64 positions; measured on one thread of the 2-core CI machine, float32, the slices
took im2col of an Omniglot layer-2 batch (32, 64, 75, 14, 14), stride 2, from 56 to 38 ms,
of layer 3 (7x7) from 35 to 11 ms and of a mini-ImageNet layer (4, 32, 75, 42, 42), stride 1,
from 78 to 62 ms; col2im of the same from 61 to 48, 28 to 13 and 105 to 76 ms (the kernels
timed alone; their effect on a whole step is in ``python -m experiments.bench``'s Omniglot
and mini-ImageNet cases).
"""
import numpy as np
from numba import njit, prange


@njit(cache=True)
def _source_index(H, W, kh, kw, sh, sw, ph, pw, OH, OW):
    """For each kernel offset (i, j) and output pixel l = (oh, ow): the flat input position
    h·W + w it reads, or −1 where it reads the zero padding. Computed once per call, so the
    copy loops below run over whole output rows with no bounds arithmetic."""
    src = np.empty((kh * kw, OH * OW), np.int32)
    for i in range(kh):
        for j in range(kw):
            for oh in range(OH):
                h = oh * sh + i - ph
                for ow in range(OW):
                    w = ow * sw + j - pw
                    inside = h >= 0 and h < H and w >= 0 and w < W
                    src[i * kw + j, oh * OW + ow] = h * W + w if inside else -1
    return src


@njit(cache=True, parallel=True, nogil=True)
def _im2col(x, src, K2, L, out):
    G, C, N, H, W = x.shape
    HW = H * W
    for p in prange(G * C):
        g = p // C
        c = p - g * C
        plane = x[g, c].reshape(N * HW)               # the (g, c) images, one after another
        for k in range(K2):
            orow = out[g, c * K2 + k]
            idx = src[k]
            for n in range(N):
                image = plane[n * HW:(n + 1) * HW]    # slices, not a new 2-D view per image:
                o = orow[n * L:(n + 1) * L]           # 1.5-3x faster (module docstring)
                for l in range(L):
                    s = idx[l]
                    o[l] = image[s] if s >= 0 else 0
    return out


@njit(cache=True, parallel=True, nogil=True)
def _col2im(cols, C, src, K2, L, out):
    G, _, N, H, W = out.shape
    HW = H * W
    for p in prange(G * C):
        g = p // C
        c = p - g * C
        plane = out[g, c].reshape(N * HW)
        for k in range(K2):
            crow = cols[g, c * K2 + k]
            idx = src[k]
            for n in range(N):
                image = plane[n * HW:(n + 1) * HW]
                cn = crow[n * L:(n + 1) * L]
                for l in range(L):
                    s = idx[l]
                    if s >= 0:
                        image[s] += cn[l]
    return out


def im2col(x, kh, kw, sh, sw, ph, pw):
    grouped = x.ndim == 5
    x = np.ascontiguousarray(x if grouped else x[:, :, None])
    G, C, N, H, W = x.shape
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.empty((G, C * kh * kw, N * OH * OW), dtype=x.dtype)
    src = _source_index(H, W, kh, kw, sh, sw, ph, pw, OH, OW)
    return _im2col(x, src, kh * kw, OH * OW, out)


def col2im(cols, H, W, kh, kw, sh, sw, ph, pw, N=None):
    cols = np.ascontiguousarray(cols)
    G = cols.shape[0]
    C = cols.shape[1] // (kh * kw)
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.zeros((G, C, 1 if N is None else N, H, W), dtype=cols.dtype)
    src = _source_index(H, W, kh, kw, sh, sw, ph, pw, OH, OW)
    out = _col2im(cols, C, src, kh * kw, OH * OW, out)
    return out if N is not None else out[:, :, 0]
