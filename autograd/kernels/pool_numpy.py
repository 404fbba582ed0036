"""Plain-NumPy reference for the max-pooling kernels (the readable spec).

``maxpool_argmax(x, kh, kw, sh, sw)`` (no padding) returns, for ``x`` of shape
(B, C, H, W), an int64 array (B, C, OH*OW), OH = (H - kh)//sh + 1, OW likewise,
holding for each window the flat index ``h*W + w`` inside its (H, W) plane of
the window's maximum.  Ties go to the first position in row-major window order
(a NaN counts as the maximum, first NaN wins, as in ``np.argmax``).

``gather_plane(x, idx)``: ``out[b, c, l] = x[b, c].ravel()[idx[b, c, l]]`` -- with
the argmax above this is the max-pool forward.

``scatter_add_plane(g, idx, H, W)`` is the exact adjoint of ``gather_plane``
(``<gather_plane(x, idx), g> == <x, scatter_add_plane(g, idx, H, W)>``): zeros of
shape (B, C, H, W) with ``g[b, c, l]`` added at flat position ``idx[b, c, l]``;
repeated indices (overlapping windows, stride < kernel) accumulate.  This is the
max-pool backward.

No argument checking here: ``autograd.kernels`` validates.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def maxpool_argmax(x, kh, kw, sh, sw):
    B, C, H, W = x.shape
    OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
    # (B, C, OH, OW, kh, kw) view of every window; move the window to the front and
    # flatten it (one copy) so argmax reduces over a leading axis; first max wins
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    k = np.moveaxis(win, (4, 5), (0, 1)).reshape(kh * kw, B, C, OH, OW).argmax(axis=0)
    # window position k = i*kw + j  ->  plane index (oh*sh + i)*W + (ow*sw + j)
    offset = (np.arange(kh, dtype=np.int64)[:, None] * W + np.arange(kw, dtype=np.int64)).ravel()
    start = np.arange(OH, dtype=np.int64)[:, None] * (sh * W) + np.arange(OW, dtype=np.int64) * sw
    return (offset[k] + start).reshape(B, C, OH * OW)


def gather_plane(x, idx):
    B, C, H, W = x.shape
    return np.take_along_axis(x.reshape(B, C, H * W), idx, axis=2)


def scatter_add_plane(g, idx, H, W):
    B, C, L = g.shape
    out = np.zeros(B * C * H * W, dtype=g.dtype)
    # offset each plane's indices into the flat output, then one unbuffered add
    plane_start = (np.arange(B * C, dtype=np.int64) * (H * W)).reshape(B, C, 1)
    np.add.at(out, (idx + plane_start).ravel(), g.ravel())
    return out.reshape(B, C, H, W)
