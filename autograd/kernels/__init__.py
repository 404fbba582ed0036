"""Array kernels for convolution, pooling and the fused batch-norm + ReLU, with a switchable
implementation.

Public kernels (all arrays float32 or float64, output dtype == input dtype,
outputs C-contiguous):

* ``im2col(x, kh, kw, sh, sw, ph, pw)`` -- (B, C, H, W) -> (B, C*kh*kw, OH*OW),
  ``cols[b, (c*kh + i)*kw + j, oh*OW + ow] = xpad[b, c, oh*sh + i, ow*sw + j]``; or, in
  the grouped layout conv2d uses, (G, C, N, H, W) -> (G, C*kh*kw, N*OH*OW).
* ``col2im(cols, H, W, kh, kw, sh, sw, ph, pw, N=None)`` -- the exact adjoint of im2col
  (with ``N``, of the grouped layout).
* ``maxpool_argmax(x, kh, kw, sh, sw)`` -- int64 (B, C, OH*OW) flat in-plane index
  of each window's max (no padding, ties to the first in row-major order).
* ``gather_plane(x, idx)`` -- ``out[b, c, l] = x[b, c].ravel()[idx[b, c, l]]``.
* ``scatter_add_plane(g, idx, H, W)`` -- the exact adjoint of gather_plane.
* ``bn_relu_forward``, ``bn_relu_backward``, ``bn_relu_double_backward`` -- batch-norm with
  batch statistics and a ReLU, fused, per (task, channel) row of x (T, C, M), with its
  backward and double backward (the formulas are in ``batchnorm_numpy``).

The implementation is ``"numba"`` (compiled, parallel over planes) or ``"numpy"`` (the
plain reference), switched by ``set_kernels(name)``: one table, ``_active``, maps each kernel
name to the function in use. ``autograd.settings`` is the front door (``kernels=...``, or
``TINYMETA_KERNELS`` at import; the default is numba); if Numba cannot be imported the NumPy
kernels are used and a one-line notice goes to stderr. ``set_numba_threads(n)`` sets Numba's
worker threads (settings decides how many). Arguments are validated here, once, for both
implementations.

CuPy arrays are routed to ``autograd.kernels.cupy_kernels`` (same contracts, run on the
GPU; CuPy is imported on first use), whichever backend is active: kernels follow the
arrays they are given. Other array types are refused with NotImplementedError.
"""
import importlib
import operator
import os
import sys

import numpy as np

from . import batchnorm_numpy as _batchnorm_numpy
from . import im2col_numpy as _im2col_numpy
from . import pool_numpy as _pool_numpy

__all__ = ["im2col", "col2im", "maxpool_argmax", "gather_plane", "scatter_add_plane",
           "bn_relu_forward", "bn_relu_backward", "bn_relu_double_backward",
           "set_kernels", "kernels_name", "set_numba_threads", "numba_threads", "numba_pool_size",
           "use_one_numba_thread_here"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

_NUMPY_IMPL = {
    "im2col": _im2col_numpy.im2col,
    "col2im": _im2col_numpy.col2im,
    "maxpool_argmax": _pool_numpy.maxpool_argmax,
    "gather_plane": _pool_numpy.gather_plane,
    "scatter_add_plane": _pool_numpy.scatter_add_plane,
    "bn_relu_forward": _batchnorm_numpy.bn_relu_forward,
    "bn_relu_backward": _batchnorm_numpy.bn_relu_backward,
    "bn_relu_double_backward": _batchnorm_numpy.bn_relu_double_backward,
}

_active = _NUMPY_IMPL   # kernel name -> the function in use (set_kernels swaps the table)
_name = "numpy"         # "numpy" or "numba"
_numba_impl = None      # the Numba table, once loaded
_numba_notice_given = False
_numba_threads = 1      # Numba's worker threads, applied when Numba loads (set_numba_threads)
_cupy_module = None


def _load_numba():
    """The Numba kernels, or None (with a one-time stderr notice) if Numba is unusable."""
    global _numba_impl, _numba_notice_given
    if _numba_impl is None:
        try:
            from . import batchnorm_numba, im2col_numba, pool_numba
        except Exception as e:  # not installed, or installed but broken: never crash
            if not _numba_notice_given:
                _numba_notice_given = True
                reason = (str(e).splitlines() or [type(e).__name__])[0]
                print(f"tinymeta: numba unavailable ({reason}); using the numpy kernels",
                      file=sys.stderr)
            return None
        _numba_impl = {
            "im2col": im2col_numba.im2col,
            "col2im": im2col_numba.col2im,
            "maxpool_argmax": pool_numba.maxpool_argmax,
            "gather_plane": pool_numba.gather_plane,
            "scatter_add_plane": pool_numba.scatter_add_plane,
            "bn_relu_forward": batchnorm_numba.bn_relu_forward,
            "bn_relu_backward": batchnorm_numba.bn_relu_backward,
            "bn_relu_double_backward": batchnorm_numba.bn_relu_double_backward,
        }
        set_numba_threads(_numba_threads)
    return _numba_impl


def set_kernels(name):
    """Use the ``"numpy"`` or ``"numba"`` kernels from now on; returns the name in effect.

    Asking for ``"numba"`` when Numba cannot be imported falls back to ``"numpy"``
    (with a one-line notice on stderr) instead of failing.
    """
    global _name, _active
    if name == "numpy":
        impl = _NUMPY_IMPL
    elif name == "numba":
        impl = _load_numba()
        if impl is None:
            name, impl = "numpy", _NUMPY_IMPL
    else:
        raise ValueError(f"set_kernels: unknown kernels {name!r}; choose 'numpy' or 'numba'")
    _active, _name = impl, name
    return name


def kernels_name():
    """``"numpy"`` or ``"numba"``: the kernels currently in use."""
    return _name


def numba_pool_size():
    """How many threads Numba can use at most: its pool size once loaded, else the cores
    this process may run on (Numba's own default)."""
    if _numba_impl is not None:
        import numba
        return numba.config.NUMBA_NUM_THREADS
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_numba_threads(n):
    """Run the Numba kernels called from this thread on ``n`` threads (at most the pool size);
    applied when Numba loads if it is not loaded yet. Returns the number in effect."""
    global _numba_threads
    _numba_threads = max(1, min(operator.index(n), numba_pool_size()))
    if _numba_impl is not None:
        import numba
        numba.set_num_threads(_numba_threads)
    return _numba_threads


def use_one_numba_thread_here():
    """Numba kernels called from this thread run on one thread (Numba keeps a count per
    thread): what the worker threads of ``autograd.parallel`` ask for, being the
    parallelism themselves. Numba is loaded here if it is in use and not loaded yet."""
    if _name == "numba" and _load_numba() is not None:
        import numba
        numba.set_num_threads(1)


def numba_threads():
    """The number of threads the Numba kernels run on (see set_numba_threads)."""
    return _numba_threads


# ---------------------------------------------------------------- validation


def _shape(kernel, what, a, ndim, axes):
    shape = getattr(a, "shape", None)
    if shape is None:
        raise TypeError(f"{kernel}: {what} must be an array, got {type(a).__name__}")
    shape = tuple(shape)
    if len(shape) != ndim:
        raise ValueError(f"{kernel}: expected {what} of shape {axes}, got {shape}")
    return shape


def _float(kernel, what, a):
    if a.dtype not in _FLOATS:
        raise TypeError(f"{kernel}: expected {what} of dtype float32 or float64, got {a.dtype}")


def _ints(kernel, **params):
    """The named parameters as Python ints (kernel sizes and strides >= 1, padding >= 0)."""
    out = []
    for key, value in params.items():
        try:
            v = operator.index(value)
        except TypeError:
            raise TypeError(f"{kernel}: {key} must be an integer, got {value!r}") from None
        low = 0 if key in ("ph", "pw") else 1
        if v < low:
            raise ValueError(f"{kernel}: {key} must be >= {low}, got {v}")
        out.append(v)
    return out


def _fits(kernel, H, W, kh, kw, ph, pw):
    if H + 2 * ph < kh or W + 2 * pw < kw:
        raise ValueError(f"{kernel}: kernel {kh}x{kw} with padding "
                         f"{ph if ph == pw else f'{ph}x{pw}'} does not fit input {H}x{W}")


def _index_array(kernel, idx, shape, HW, check_range):
    if not isinstance(idx, np.ndarray):
        idx = np.asarray(idx)
    if tuple(idx.shape) != shape:
        raise ValueError(f"{kernel}: expected idx of shape {shape}, got {tuple(idx.shape)}")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{kernel}: expected an integer idx, got {idx.dtype}")
    if idx.dtype != np.int64:
        idx = idx.astype(np.int64)
    if check_range and idx.size and (idx.min() < 0 or idx.max() >= HW):
        raise IndexError(f"{kernel}: idx out of range for a plane of {HW} elements "
                         f"(min {idx.min()}, max {idx.max()})")
    return idx


def _foreign(kernel, a):
    """The kernel for a non-NumPy array: CuPy arrays go to autograd.kernels.cupy_kernels
    (which imports CuPy on first use); any other array type is an error."""
    global _cupy_module
    is_cupy = type(a).__module__.split(".")[0] == "cupy"
    if is_cupy and _cupy_module is None:
        try:
            _cupy_module = importlib.import_module(__name__ + ".cupy_kernels")
        except ModuleNotFoundError as e:
            if e.name != __name__ + ".cupy_kernels":
                raise
            _cupy_module = False
    fn = getattr(_cupy_module, kernel, None) if is_cupy and _cupy_module else None
    if fn is None:
        raise NotImplementedError(
            f"{kernel}: no kernel for arrays of type {type(a).__module__}.{type(a).__name__} "
            f"(only numpy.ndarray and cupy.ndarray are supported"
            f"{'' if not is_cupy else f'; the CuPy kernels in {__name__}.cupy_kernels are not available'})")
    return fn


# ---------------------------------------------------------------- public kernels


def im2col(x, kh, kw, sh, sw, ph, pw):
    """Unfold (B, C, H, W) -> (B, C*kh*kw, OH*OW); or, in the grouped channel-major layout
    used by conv2d, (G, C, N, H, W) -> (G, C*kh*kw, N*OH*OW): one matrix per group whose
    columns run over the N images, so a group's convolution is a single matrix product."""
    if getattr(x, "ndim", 0) == 5:
        G, C, N, H, W = _shape("im2col", "x", x, 5, "(G, C, N, H, W)")
    else:
        B, C, H, W = _shape("im2col", "x", x, 4, "(B, C, H, W)")
    _float("im2col", "x", x)
    kh, kw, sh, sw, ph, pw = _ints("im2col", kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw)
    _fits("im2col", H, W, kh, kw, ph, pw)
    if not isinstance(x, np.ndarray):
        return _foreign("im2col", x)(x, kh, kw, sh, sw, ph, pw)
    return _active["im2col"](x, kh, kw, sh, sw, ph, pw)


def col2im(cols, H, W, kh, kw, sh, sw, ph, pw, N=None):
    """Fold (B, C*kh*kw, OH*OW) -> (B, C, H, W), summing overlaps: the adjoint of im2col.
    With ``N`` given, the grouped layout: (G, C*kh*kw, N*OH*OW) -> (G, C, N, H, W)."""
    B, R, L = _shape("col2im", "cols", cols, 3, "(B, C*kh*kw, OH*OW)")
    _float("col2im", "cols", cols)
    H, W, kh, kw, sh, sw, ph, pw = _ints("col2im", H=H, W=W, kh=kh, kw=kw, sh=sh, sw=sw,
                                         ph=ph, pw=pw)
    n = 1 if N is None else _ints("col2im", N=N)[0]
    _fits("col2im", H, W, kh, kw, ph, pw)
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    if R % (kh * kw) or L != n * OH * OW:
        raise ValueError(f"col2im: cols of shape {(B, R, L)} do not match kernel {kh}x{kw} on "
                         f"input {H}x{W} (expected (B, C*{kh * kw}, {n}*{OH * OW}))")
    if not isinstance(cols, np.ndarray):
        return _foreign("col2im", cols)(cols, H, W, kh, kw, sh, sw, ph, pw, N)
    return _active["col2im"](cols, H, W, kh, kw, sh, sw, ph, pw, N)


def maxpool_argmax(x, kh, kw, sh, sw):
    """int64 (B, C, OH*OW): flat in-plane index of each window's max (no padding)."""
    B, C, H, W = _shape("maxpool_argmax", "x", x, 4, "(B, C, H, W)")
    _float("maxpool_argmax", "x", x)
    kh, kw, sh, sw = _ints("maxpool_argmax", kh=kh, kw=kw, sh=sh, sw=sw)
    _fits("maxpool_argmax", H, W, kh, kw, 0, 0)
    if not isinstance(x, np.ndarray):
        return _foreign("maxpool_argmax", x)(x, kh, kw, sh, sw)
    return _active["maxpool_argmax"](x, kh, kw, sh, sw)


def gather_plane(x, idx):
    """(B, C, L): ``x[b, c].ravel()[idx[b, c, l]]``."""
    B, C, H, W = _shape("gather_plane", "x", x, 4, "(B, C, H, W)")
    _float("gather_plane", "x", x)
    L = _shape("gather_plane", "idx", idx, 3, "(B, C, L)")[2]
    if not isinstance(x, np.ndarray):
        return _foreign("gather_plane", x)(x, idx)
    idx = _index_array("gather_plane", idx, (B, C, L), H * W, check_range=True)
    return _active["gather_plane"](x, idx)


def scatter_add_plane(g, idx, H, W):
    """(B, C, H, W) zeros with ``g`` added at the flat in-plane ``idx``: the adjoint of gather_plane."""
    B, C, L = _shape("scatter_add_plane", "g", g, 3, "(B, C, L)")
    _float("scatter_add_plane", "g", g)
    H, W = _ints("scatter_add_plane", H=H, W=W)
    if not isinstance(g, np.ndarray):
        return _foreign("scatter_add_plane", g)(g, idx, H, W)
    idx = _index_array("scatter_add_plane", idx, (B, C, L), H * W, check_range=True)
    return _active["scatter_add_plane"](g, idx, H, W)


def bn_relu_forward(x, gamma, beta, eps):
    """Fused batch-norm (batch statistics) + ReLU on rows: x (T, C, M), gamma/beta (T, C)
    -> (y, mean, inv_std); see batchnorm_numpy."""
    T, C, M = _shape("bn_relu_forward", "x", x, 3, "(T, C, M)")
    _float("bn_relu_forward", "x", x)
    for what, p in (("gamma", gamma), ("beta", beta)):
        if tuple(p.shape) != (T, C):
            raise ValueError(f"bn_relu_forward: expected {what} of shape {(T, C)}, got {tuple(p.shape)}")
    if not isinstance(x, np.ndarray):
        return _foreign("bn_relu_forward", x)(x, gamma, beta, eps)
    return _active["bn_relu_forward"](x, gamma, beta, eps)


def bn_relu_backward(gy, x, y, mu, inv, gamma):
    """(gx, ggamma, gbeta): the vector-Jacobian product of bn_relu_forward."""
    T, C, M = _shape("bn_relu_backward", "x", x, 3, "(T, C, M)")
    if tuple(gy.shape) != (T, C, M):
        raise ValueError(f"bn_relu_backward: expected gy of shape {(T, C, M)}, got {tuple(gy.shape)}")
    if not isinstance(x, np.ndarray):
        return _foreign("bn_relu_backward", x)(gy, x, y, mu, inv, gamma)
    return _active["bn_relu_backward"](gy, x, y, mu, inv, gamma)


def bn_relu_double_backward(x, y, gy, mu, inv, gamma, a, b, c):
    """(gx, ggamma, ggy): the vector-Jacobian product of bn_relu_backward with respect to
    x, gamma and gy, for cotangents a (T, C, M), b and c (T, C), each possibly None."""
    T, C, M = _shape("bn_relu_double_backward", "x", x, 3, "(T, C, M)")
    for what, arr, want in (("y", y, (T, C, M)), ("gy", gy, (T, C, M)), ("a", a, (T, C, M)),
                            ("b", b, (T, C)), ("c", c, (T, C))):
        if arr is not None and tuple(arr.shape) != want:
            raise ValueError(f"bn_relu_double_backward: expected {what} of shape {want}, "
                             f"got {tuple(arr.shape)}")
    if not isinstance(x, np.ndarray):
        return _foreign("bn_relu_double_backward", x)(x, y, gy, mu, inv, gamma, a, b, c)
    return _active["bn_relu_double_backward"](x, y, gy, mu, inv, gamma, a, b, c)

