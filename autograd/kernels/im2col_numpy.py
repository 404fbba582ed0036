"""Plain-NumPy reference for the convolution unfold kernels (the readable spec).

``im2col(x, kh, kw, sh, sw, ph, pw)`` unfolds ``x`` of shape (B, C, H, W) into
``cols`` of shape (B, C*kh*kw, OH*OW), with OH = (H + 2*ph - kh)//sh + 1 and OW
likewise::

    cols[b, (c*kh + i)*kw + j, oh*OW + ow] = xpad[b, c, oh*sh + i, ow*sw + j]

where ``xpad`` is ``x`` zero-padded by ``ph`` rows top and bottom and ``pw``
columns left and right. In the grouped layout conv2d uses, ``x`` (G, C, N, H, W) unfolds
to (G, C*kh*kw, N*OH*OW): the columns of a group run over its N images.

``col2im(cols, H, W, kh, kw, sh, sw, ph, pw, N=None)`` is its exact adjoint (with ``N``,
of the grouped layout)
(``<im2col(x), c> == <x, col2im(c)>``): every entry of ``cols`` is added back
into the position of ``x`` it was read from; entries read from the padding are
dropped.

Both loop only over the kh*kw kernel offsets; everything else is one strided
slice per offset.  No argument checking here: ``autograd.kernels`` validates.
"""
import numpy as np


def _out_size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def im2col(x, kh, kw, sh, sw, ph, pw):
    """x (B, C, H, W) -> (B, C*kh*kw, OH*OW), or grouped x (G, C, N, H, W) -> (G, C*kh*kw, N*OH*OW)."""
    grouped = x.ndim == 5
    if not grouped:
        x = x[:, :, None]                                  # (B, C, 1, H, W)
    G, C, N, H, W = x.shape
    OH, OW = _out_size(H, kh, sh, ph), _out_size(W, kw, sw, pw)
    xpad = np.pad(x, ((0, 0), (0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((G, C, kh, kw, N, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # rows i, i+sh, ..., i+sh*(OH-1) of the padded input (slice end clips)
            cols[:, :, i, j] = xpad[..., i:i + sh * OH:sh, j:j + sw * OW:sw]
    return cols.reshape(G, C * kh * kw, N * OH * OW)


def col2im(cols, H, W, kh, kw, sh, sw, ph, pw, N=None):
    """The adjoint: (B, C*kh*kw, OH*OW) -> (B, C, H, W), or with ``N`` given,
    (G, C*kh*kw, N*OH*OW) -> (G, C, N, H, W)."""
    G = cols.shape[0]
    C = cols.shape[1] // (kh * kw)
    OH, OW = _out_size(H, kh, sh, ph), _out_size(W, kw, sw, pw)
    n = 1 if N is None else N
    c7 = cols.reshape(G, C, kh, kw, n, OH, OW)
    xpad = np.zeros((G, C, n, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # for a fixed (i, j) the slice positions are distinct, so += is safe
            xpad[..., i:i + sh * OH:sh, j:j + sw * OW:sw] += c7[:, :, i, j]
    out = np.ascontiguousarray(xpad[..., ph:ph + H, pw:pw + W])
    return out if N is not None else out[:, :, 0]
