"""CuPy (GPU) versions of the array kernels, with the contracts of the NumPy references
(``im2col_numpy``, ``pool_numpy``, ``batchnorm_numpy``; see ``autograd.kernels``).

``autograd.kernels`` validates shapes, dtypes and sizes and routes every array that is not a
``numpy.ndarray`` here. CuPy itself is imported only when a kernel is first used, so this
module imports (and ``autograd.kernels`` finds it) on machines without CuPy.

How each kernel runs on the device:

* ``im2col`` -- a RawKernel with one thread per output element (grid-stride loop); padding
  reads give 0.
* ``col2im`` -- a RawKernel with one thread per *input* position, summing the columns that
  read from it in the reference's order (kernel row i, then column j): no atomics, and the
  sums are bit-for-bit those of ``im2col_numpy.col2im``.
* ``maxpool_argmax`` -- a RawKernel with one thread per window; ties go to the first
  position in row-major window order, a NaN counts as the maximum (first NaN wins).
* ``gather_plane`` -- a RawKernel with one thread per output element.
* ``scatter_add_plane`` -- a RawKernel with one thread per ``g`` element and ``atomicAdd``
  (native for float32 and, from compute capability 6.0, float64). Positions hit by at most
  two entries (every max-pool whose stride is at least half its window, e.g. 2x2 stride 2)
  come out exact and deterministic; three or more overlapping entries may be summed in any
  order.
* ``bn_relu_forward`` / ``bn_relu_backward`` -- CuPy reductions accumulating in float64
  (``mean(dtype=float64)`` and ReductionKernels) and one fused ElementwiseKernel each for
  the full-size output, following ``batchnorm_numpy`` step by step (same dtypes at every
  step; only summation order and fused multiply-adds differ).
* ``bn_relu_double_backward`` -- the NumPy reference's array expressions in float64 on the
  device (CuPy reductions and element-wise ops, no custom kernel).

Each RawKernel is written once in CUDA C over a type name ``real`` and compiled per dtype
(``typedef float real;`` / ``typedef double real;``) on first use; sizes and indices are
``long long`` everywhere, so arrays beyond 2**31 elements are fine.
"""
import numpy as np

from . import batchnorm_numpy

__all__ = ["im2col", "col2im", "maxpool_argmax", "gather_plane", "scatter_add_plane",
           "bn_relu_forward", "bn_relu_backward", "bn_relu_double_backward", "RAW_SOURCES"]

_THREADS = 256
_MAX_BLOCKS = 65535 * 16          # grid-stride loops cover anything larger

_cp = None                        # the cupy module, once imported
_raw_cache = {}                   # (kernel name, dtype name) -> cupy.RawKernel
_ew_cache = {}                    # name -> cupy.ElementwiseKernel / ReductionKernel


def _cupy():
    global _cp
    if _cp is None:
        try:
            import cupy
        except ImportError as e:
            raise ImportError("autograd.kernels.cupy_kernels: CuPy is not installed; the CuPy "
                              "kernels cannot run (use the numpy backend)") from e
        _cp = cupy
    return _cp


# ------------------------------------------------------------------ CUDA C sources

_PREAMBLE = """
#define GRID_STRIDE_LOOP(i, n) \\
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \\
         i += (long long)blockDim.x * gridDim.x)
"""

RAW_SOURCES = {
    # cols (G, C, kh, kw, N, OH, OW) C-order  <-  x (G, C, N, H, W), zero padding
    "im2col": r"""
extern "C" __global__ void tinymeta_im2col(
        const real* x, real* cols, long long total,
        long long C, long long N, long long H, long long W,
        long long kh, long long kw, long long sh, long long sw, long long ph, long long pw,
        long long OH, long long OW)
{
    GRID_STRIDE_LOOP(idx, total) {
        long long r = idx;
        long long ow = r % OW; r /= OW;
        long long oh = r % OH; r /= OH;
        long long n = r % N;   r /= N;
        long long j = r % kw;  r /= kw;
        long long i = r % kh;  r /= kh;
        long long c = r % C;
        long long g = r / C;
        long long h = oh * sh + i - ph;
        long long w = ow * sw + j - pw;
        real v = (real)0;
        if (h >= 0 && h < H && w >= 0 && w < W)
            v = x[(((g * C + c) * N + n) * H + h) * W + w];
        cols[idx] = v;
    }
}
""",
    # x (G, C, N, H, W)  <-  sum of the cols entries read from each position
    "col2im": r"""
extern "C" __global__ void tinymeta_col2im(
        const real* cols, real* x, long long total,
        long long C, long long N, long long H, long long W,
        long long kh, long long kw, long long sh, long long sw, long long ph, long long pw,
        long long OH, long long OW)
{
    GRID_STRIDE_LOOP(idx, total) {
        long long r = idx;
        long long w = r % W; r /= W;
        long long h = r % H; r /= H;
        long long n = r % N; r /= N;
        long long c = r % C;
        long long g = r / C;
        real acc = (real)0;
        for (long long i = 0; i < kh; ++i) {
            long long hp = h + ph - i;              /* = oh * sh for the row that read it */
            if (hp < 0 || hp % sh != 0) continue;
            long long oh = hp / sh;
            if (oh >= OH) continue;
            for (long long j = 0; j < kw; ++j) {
                long long wp = w + pw - j;
                if (wp < 0 || wp % sw != 0) continue;
                long long ow = wp / sw;
                if (ow >= OW) continue;
                long long row = (g * C + c) * kh * kw + i * kw + j;
                acc += cols[(row * N + n) * (OH * OW) + oh * OW + ow];
            }
        }
        x[idx] = acc;
    }
}
""",
    # idx (B*C, OH*OW) int64: flat in-plane index of each window's max
    "maxpool_argmax": r"""
extern "C" __global__ void tinymeta_maxpool_argmax(
        const real* x, long long* out, long long total,
        long long H, long long W, long long kh, long long kw, long long sh, long long sw,
        long long OH, long long OW)
{
    GRID_STRIDE_LOOP(idx, total) {
        long long r = idx;
        long long ow = r % OW; r /= OW;
        long long oh = r % OH;
        long long plane = r / OH;
        const real* p = x + plane * H * W;
        long long best_i = (oh * sh) * W + ow * sw;
        real best = p[best_i];
        bool nan_found = (best != best);
        for (long long i = 0; i < kh && !nan_found; ++i) {
            for (long long j = 0; j < kw; ++j) {
                long long k = (oh * sh + i) * W + (ow * sw + j);
                real v = p[k];
                if (v != v) { best = v; best_i = k; nan_found = true; break; }   /* first NaN wins */
                if (v > best) { best = v; best_i = k; }                          /* ties: first wins */
            }
        }
        out[idx] = best_i;
    }
}
""",
    # out (P, L) = x (P, HW) gathered at idx (P, L)
    "gather_plane": r"""
extern "C" __global__ void tinymeta_gather_plane(
        const real* x, const long long* idx, real* out, long long total, long long L, long long HW)
{
    GRID_STRIDE_LOOP(e, total) {
        long long plane = e / L;
        out[e] = x[plane * HW + idx[e]];
    }
}
""",
    # out (P, HW) += g (P, L) at idx (P, L); out starts at zero
    "scatter_add_plane": r"""
extern "C" __global__ void tinymeta_scatter_add_plane(
        const real* g, const long long* idx, real* out, long long total, long long L, long long HW)
{
    GRID_STRIDE_LOOP(e, total) {
        long long plane = e / L;
        atomicAdd(out + plane * HW + idx[e], g[e]);
    }
}
""",
}

_CTYPES = {"float32": "float", "float64": "double"}


def _raw(kernel, dtype):
    """The compiled RawKernel ``kernel`` for arrays of ``dtype``."""
    key = (kernel, np.dtype(dtype).name)
    fn = _raw_cache.get(key)
    if fn is None:
        cp = _cupy()
        source = f"typedef {_CTYPES[key[1]]} real;\n" + _PREAMBLE + RAW_SOURCES[kernel]
        fn = _raw_cache[key] = cp.RawKernel(source, "tinymeta_" + kernel)
    return fn


def _launch(kernel, dtype, total, *args):
    """Run ``kernel`` over ``total`` elements (nothing to do when it is 0)."""
    if total == 0:
        return
    blocks = min((total + _THREADS - 1) // _THREADS, _MAX_BLOCKS)
    _raw(kernel, dtype)((blocks,), (_THREADS,), args)


def _ll(*values):
    return tuple(np.int64(v) for v in values)


def _out_size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


# ------------------------------------------------------------------ convolution unfold


def im2col(x, kh, kw, sh, sw, ph, pw):
    """x (B, C, H, W) -> (B, C*kh*kw, OH*OW), or grouped x (G, C, N, H, W) -> (G, C*kh*kw, N*OH*OW)."""
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    grouped = x.ndim == 5
    G, C, N, H, W = x.shape if grouped else (x.shape[0], x.shape[1], 1, x.shape[2], x.shape[3])
    OH, OW = _out_size(H, kh, sh, ph), _out_size(W, kw, sw, pw)
    cols = cp.empty((G, C * kh * kw, N * OH * OW), dtype=x.dtype)
    _launch("im2col", x.dtype, cols.size, x, cols,
            *_ll(cols.size, C, N, H, W, kh, kw, sh, sw, ph, pw, OH, OW))
    return cols


def col2im(cols, H, W, kh, kw, sh, sw, ph, pw, N=None):
    """The adjoint: (B, C*kh*kw, OH*OW) -> (B, C, H, W), or with ``N`` given,
    (G, C*kh*kw, N*OH*OW) -> (G, C, N, H, W)."""
    cp = _cupy()
    cols = cp.ascontiguousarray(cols)
    G = cols.shape[0]
    C = cols.shape[1] // (kh * kw)
    n = 1 if N is None else N
    OH, OW = _out_size(H, kh, sh, ph), _out_size(W, kw, sw, pw)
    x = cp.empty((G, C, n, H, W) if N is not None else (G, C, H, W), dtype=cols.dtype)
    _launch("col2im", cols.dtype, x.size, cols, x,
            *_ll(x.size, C, n, H, W, kh, kw, sh, sw, ph, pw, OH, OW))
    return x


# ------------------------------------------------------------------ max pooling


def _index(kernel, idx, shape, HW):
    """idx as a C-contiguous int64 device array of ``shape`` with values in [0, HW)."""
    cp = _cupy()
    idx = cp.asarray(idx)
    if tuple(idx.shape) != tuple(shape):
        raise ValueError(f"{kernel}: expected idx of shape {tuple(shape)}, got {tuple(idx.shape)}")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{kernel}: expected an integer idx, got {idx.dtype}")
    idx = cp.ascontiguousarray(idx, dtype=cp.int64)
    if idx.size and bool(((idx < 0) | (idx >= HW)).any()):       # one device sync
        lo, hi = int(idx.min()), int(idx.max())
        raise IndexError(f"{kernel}: idx out of range for a plane of {HW} elements "
                         f"(min {lo}, max {hi})")
    return idx


def maxpool_argmax(x, kh, kw, sh, sw):
    """int64 (B, C, OH*OW): flat in-plane index of each window's max (no padding)."""
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    B, C, H, W = x.shape
    OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
    out = cp.empty((B, C, OH * OW), dtype=cp.int64)
    _launch("maxpool_argmax", x.dtype, out.size, x, out,
            *_ll(out.size, H, W, kh, kw, sh, sw, OH, OW))
    return out


def gather_plane(x, idx):
    """(B, C, L): ``x[b, c].ravel()[idx[b, c, l]]``."""
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    B, C, H, W = x.shape
    L = idx.shape[2]
    idx = _index("gather_plane", idx, (B, C, L), H * W)
    out = cp.empty((B, C, L), dtype=x.dtype)
    _launch("gather_plane", x.dtype, out.size, x, idx, out, *_ll(out.size, L, H * W))
    return out


def scatter_add_plane(g, idx, H, W):
    """(B, C, H, W) zeros with ``g`` added at the flat in-plane ``idx``: the adjoint of gather_plane."""
    cp = _cupy()
    g = cp.ascontiguousarray(g)
    B, C, L = g.shape
    idx = _index("scatter_add_plane", idx, (B, C, L), H * W)
    out = cp.zeros((B, C, H, W), dtype=g.dtype)
    _launch("scatter_add_plane", g.dtype, g.size, g, idx, out, *_ll(g.size, L, H * W))
    return out


# ------------------------------------------------------------------ batch-norm + ReLU


def _elementwise():
    """The ElementwiseKernels and ReductionKernels of the batch-norm kernels (built once)."""
    if not _ew_cache:
        cp = _cupy()
        # Σ (x − μ)², the difference in the input dtype, squared and summed in float64
        _ew_cache["sq_dev_sum"] = cp.ReductionKernel(
            "T x, T mu", "float64 s",
            "((double)(x - mu)) * ((double)(x - mu))", "a + b", "s = a", "0",
            "tinymeta_bn_sq_dev_sum", reduce_type="double")
        # y = max(0, (x − μ)·scale + β), NaN propagates as in np.maximum
        _ew_cache["fwd"] = cp.ElementwiseKernel(
            "T x, T mu, T scale, T beta", "T y",
            "T v = (x - mu) * scale + beta; y = (v < (T)0) ? (T)0 : v;",
            "tinymeta_bn_relu_fwd")
        # ∂β = Σ g with g = gy·1[y > 0], in float64
        _ew_cache["gsum"] = cp.ReductionKernel(
            "T gy, T y", "float64 s",
            "((y > (T)0) ? (double)gy : 0.0)", "a + b", "s = a", "0",
            "tinymeta_bn_gated_sum", reduce_type="double")
        # ∂γ = Σ g·x̂ with x̂ = (x − μ)·s in the input dtype, products and sum in float64
        _ew_cache["gdot"] = cp.ReductionKernel(
            "T gy, T y, T x, T mu, T inv", "float64 s",
            "((y > (T)0) ? (double)gy * (double)((x - mu) * inv) : 0.0)", "a + b", "s = a", "0",
            "tinymeta_bn_gated_dot", reduce_type="double")
        # ∂x = γs·(g − ∂β/M − x̂·∂γ/M), in float64, rounded to the input dtype
        _ew_cache["bwd"] = cp.ElementwiseKernel(
            "T gy, T y, T x, T mu, T inv, T gs, float64 gbm, float64 ggm", "T gx",
            "double g = (y > (T)0) ? (double)gy : 0.0;"
            " T xh = (x - mu) * inv;"
            " gx = (T)((double)gs * (g - gbm - (double)xh * ggm));",
            "tinymeta_bn_relu_bwd")
    return _ew_cache


def bn_relu_forward(x, gamma, beta, eps):
    """(y, mean, inv_std) for x (T, C, M), gamma/beta (T, C); see batchnorm_numpy."""
    cp = _cupy()
    k = _elementwise()
    x = cp.ascontiguousarray(x)
    dt = x.dtype
    M = x.shape[2]
    mu = x.mean(axis=2, dtype=cp.float64)                          # (T, C) float64
    mu_x = mu.astype(dt)
    var = k["sq_dev_sum"](x, mu_x[..., None], axis=2) / M
    inv = 1.0 / cp.sqrt(var + eps)                                 # float64
    scale = (cp.asarray(gamma) * inv).astype(dt)
    beta_x = cp.asarray(beta).astype(dt)
    y = k["fwd"](x, mu_x[..., None], scale[..., None], beta_x[..., None])
    return y, mu_x, inv.astype(dt)


def bn_relu_backward(gy, x, y, mu, inv, gamma):
    """(gx, ggamma, gbeta) for the forward above."""
    cp = _cupy()
    k = _elementwise()
    dt = x.dtype
    gy, x, y = (cp.ascontiguousarray(cp.asarray(a, dtype=dt)) for a in (gy, x, y))
    mu, inv = cp.asarray(mu, dtype=dt), cp.asarray(inv, dtype=dt)
    M = x.shape[2]
    gbeta = k["gsum"](gy, y, axis=2)                                          # float64 (T, C)
    ggamma = k["gdot"](gy, y, x, mu[..., None], inv[..., None], axis=2)       # float64 (T, C)
    gs = (cp.asarray(gamma) * inv).astype(dt)                                 # γ·s in the input dtype
    gx = k["bwd"](gy, y, x, mu[..., None], inv[..., None], gs[..., None],
                  (gbeta / M)[..., None], (ggamma / M)[..., None])
    return gx, ggamma.astype(dt), gbeta.astype(dt)


def bn_relu_double_backward(x, y, gy, mu, inv, gamma, a, b, c):
    """(gx, ggamma, ggy): the NumPy reference's array code (batchnorm_numpy), run by CuPy."""
    cp = _cupy()
    args = [None if v is None else cp.asarray(v) for v in (x, y, gy, mu, inv, gamma, a, b, c)]
    return batchnorm_numpy.bn_relu_double_backward(*args, xp=cp)
