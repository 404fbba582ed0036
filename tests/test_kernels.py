"""Conv / pooling array kernels: Numba vs NumPy parity, adjointness, dispatch, errors."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autograd
import autograd.kernels as K
from autograd.kernels import im2col_numpy, pool_numpy

try:
    import numba  # noqa: F401
    HAVE_NUMBA = True
except Exception:  # pragma: no cover
    HAVE_NUMBA = False

needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
IMPLS = ["numpy", pytest.param("numba", marks=needs_numba)]
DTYPES = [np.float32, np.float64]
REPO = Path(__file__).resolve().parents[1]


def kernels(name):
    """``with kernels("numba"):`` -- those kernels inside the block, the previous ones after."""
    return autograd.settings.using(kernels=name)


def both(fn_name, *args):
    """(numpy result, numba result) of one public kernel."""
    out = []
    for name in ("numpy", "numba"):
        with kernels(name):
            assert K.kernels_name() == name
            out.append(getattr(K, fn_name)(*args))
    return out


def summing_rtol(dtype):
    return 1e-12 if dtype == np.float64 else 1e-5


def assert_same_array(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.flags.c_contiguous and b.flags.c_contiguous
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- strategies


@st.composite
def conv_cases(draw):
    """(x, kh, kw, sh, sw, ph, pw) with a kernel that fits the padded input."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    H = draw(st.integers(max(1, kh - 2 * ph), 9))
    W = draw(st.integers(max(1, kw - 2 * pw), 9))
    B, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    return x, kh, kw, sh, sw, ph, pw


@st.composite
def pool_cases(draw):
    """(x, kh, kw, sh, sw) with the window inside the (unpadded) input."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    H, W = draw(st.integers(kh, 9)), draw(st.integers(kw, 9))
    B, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    return x, kh, kw, sh, sw


def out_size(n, k, s, p=0):
    return (n + 2 * p - k) // s + 1


# ---------------------------------------------------------------- numba == numpy


@needs_numba
@settings(max_examples=min(80, settings.default.max_examples))
@given(conv_cases())
def test_im2col_col2im_numba_matches_numpy(case):
    x, kh, kw, sh, sw, ph, pw = case
    B, C, H, W = x.shape
    ref, fast = both("im2col", x, kh, kw, sh, sw, ph, pw)
    assert ref.shape == (B, C * kh * kw, out_size(H, kh, sh, ph) * out_size(W, kw, sw, pw))
    assert ref.dtype == x.dtype
    assert_same_array(ref, fast)

    cols = np.random.default_rng(0).standard_normal(ref.shape).astype(x.dtype)
    ref, fast = both("col2im", cols, H, W, kh, kw, sh, sw, ph, pw)
    assert ref.shape == x.shape and ref.dtype == fast.dtype == x.dtype
    assert ref.flags.c_contiguous and fast.flags.c_contiguous
    np.testing.assert_allclose(fast, ref, rtol=summing_rtol(x.dtype), atol=0)


@needs_numba
@settings(max_examples=min(80, settings.default.max_examples))
@given(pool_cases())
def test_pool_kernels_numba_matches_numpy(case):
    x, kh, kw, sh, sw = case
    B, C, H, W = x.shape
    ref, fast = both("maxpool_argmax", x, kh, kw, sh, sw)
    assert ref.dtype == np.int64
    assert ref.shape == (B, C, out_size(H, kh, sh) * out_size(W, kw, sw))
    assert_same_array(ref, fast)

    ref, fast = both("gather_plane", x, ref)
    assert ref.dtype == x.dtype
    assert_same_array(ref, fast)

    g = np.random.default_rng(1).standard_normal(ref.shape).astype(x.dtype)
    idx = K.maxpool_argmax(x, kh, kw, sh, sw)
    ref, fast = both("scatter_add_plane", g, idx, H, W)
    assert ref.shape == x.shape and ref.dtype == fast.dtype == x.dtype
    assert ref.flags.c_contiguous and fast.flags.c_contiguous
    np.testing.assert_allclose(fast, ref, rtol=summing_rtol(x.dtype), atol=0)


@needs_numba
@settings(max_examples=min(40, settings.default.max_examples))
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9),
       st.integers(0, 30), st.sampled_from(DTYPES), st.integers(0, 2**32 - 1))
def test_gather_scatter_arbitrary_indices_numba_matches_numpy(B, C, H, W, L, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    idx = rng.integers(0, H * W, size=(B, C, L))  # many repeats: duplicates must accumulate
    g = rng.standard_normal((B, C, L)).astype(dtype)
    assert_same_array(*both("gather_plane", x, idx))
    ref, fast = both("scatter_add_plane", g, idx, H, W)
    np.testing.assert_allclose(fast, ref, rtol=summing_rtol(dtype), atol=0)


# ---------------------------------------------------------------- adjointness


def rel_err(lhs, rhs, scale):
    return abs(lhs - rhs) / max(scale, 1e-300)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=min(40, settings.default.max_examples))
@given(case=conv_cases())
def test_col2im_is_adjoint_of_im2col(impl, case):
    x, kh, kw, sh, sw, ph, pw = case
    x = x.astype(np.float64)
    B, C, H, W = x.shape
    with kernels(impl):
        cx = K.im2col(x, kh, kw, sh, sw, ph, pw)
        c = np.random.default_rng(2).standard_normal(cx.shape)
        xc = K.col2im(c, H, W, kh, kw, sh, sw, ph, pw)
        scale = float(np.sum(np.abs(cx) * np.abs(c)))
    assert rel_err(np.sum(cx * c), np.sum(x * xc), scale) < 1e-10


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=min(40, settings.default.max_examples))
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9),
       st.integers(0, 30), st.integers(0, 2**32 - 1))
def test_scatter_add_is_adjoint_of_gather(impl, B, C, H, W, L, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W))
    idx = rng.integers(0, H * W, size=(B, C, L))
    g = rng.standard_normal((B, C, L))
    with kernels(impl):
        gx = K.gather_plane(x, idx)
        sg = K.scatter_add_plane(g, idx, H, W)
    scale = float(np.sum(np.abs(gx) * np.abs(g)))
    assert rel_err(np.sum(gx * g), np.sum(x * sg), scale) < 1e-10


# ---------------------------------------------------------------- against the definitions


def im2col_brute(x, kh, kw, sh, sw, ph, pw):
    B, C, H, W = x.shape
    OH, OW = out_size(H, kh, sh, ph), out_size(W, kw, sw, pw)
    cols = np.zeros((B, C * kh * kw, OH * OW), dtype=x.dtype)
    for b in range(B):
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    for oh in range(OH):
                        for ow in range(OW):
                            h, w = oh * sh + i - ph, ow * sw + j - pw
                            if 0 <= h < H and 0 <= w < W:
                                cols[b, (c * kh + i) * kw + j, oh * OW + ow] = x[b, c, h, w]
    return cols


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_matches_brute_force(impl, dtype):
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 6)).astype(dtype)
    args = (3, 2, 2, 1, 1, 2)  # kh, kw, sh, sw, ph, pw
    with kernels(impl):
        got = K.im2col(x, *args)
    assert_same_array(got, im2col_brute(x, *args))


def first_argmax_brute(x, kh, kw, sh, sw):
    B, C, H, W = x.shape
    OH, OW = out_size(H, kh, sh), out_size(W, kw, sw)
    out = np.empty((B, C, OH * OW), dtype=np.int64)
    for b in range(B):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    best = None
                    for i in range(kh):
                        for j in range(kw):
                            h, w = oh * sh + i, ow * sw + j
                            if best is None or x[b, c, h, w] > best:
                                best, out[b, c, oh * OW + ow] = x[b, c, h, w], h * W + w
    return out


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=min(40, settings.default.max_examples))
@given(case=pool_cases())
def test_maxpool_argmax_picks_the_window_max(impl, case):
    x, kh, kw, sh, sw = case
    B, C, H, W = x.shape
    OH, OW = out_size(H, kh, sh), out_size(W, kw, sw)
    with kernels(impl):
        idx = K.maxpool_argmax(x, kh, kw, sh, sw)
        picked = K.gather_plane(x, idx)
    direct = np.empty((B, C, OH * OW), dtype=x.dtype)
    for oh in range(OH):
        for ow in range(OW):
            win = x[:, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw]
            direct[:, :, oh * OW + ow] = win.max(axis=(2, 3))
            # and the index lies inside its own window
            h, w = np.divmod(idx[:, :, oh * OW + ow], W)
            assert np.all((h >= oh * sh) & (h < oh * sh + kh) & (w >= ow * sw) & (w < ow * sw + kw))
    np.testing.assert_array_equal(picked, direct)


@pytest.mark.parametrize("impl", IMPLS)
def test_maxpool_argmax_ties_go_to_first_position(impl):
    # one window, maximum 5 at (0, 1) and (1, 0): the row-major first, (0, 1), wins
    x = np.array([[[[1.0, 5.0], [5.0, 2.0]]]])
    # many ties in overlapping windows: compare to the first-max rule directly
    y = np.random.default_rng(4).integers(0, 3, size=(2, 3, 8, 7)).astype(np.float32)
    with kernels(impl):
        assert K.maxpool_argmax(x, 2, 2, 1, 1).tolist() == [[[1]]]
        assert K.maxpool_argmax(np.zeros((1, 1, 4, 4)), 2, 2, 2, 2).tolist() == [[[0, 2, 8, 10]]]
        got = K.maxpool_argmax(y, 3, 2, 1, 2)
    np.testing.assert_array_equal(got, first_argmax_brute(y, 3, 2, 1, 2))


@pytest.mark.parametrize("impl", IMPLS)
def test_maxpool_argmax_nan_like_np_argmax(impl):
    x = np.array([[[[1.0, np.nan, 3.0], [np.nan, 9.0, 0.0]]]], dtype=np.float32)
    with kernels(impl):
        assert K.maxpool_argmax(x, 2, 2, 1, 1).tolist() == [[[1, 1]]]


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_argmax_nan_and_inf_numba_matches_numpy(dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    x[rng.random(x.shape) < 0.1] = np.inf
    x[rng.random(x.shape) < 0.1] = -np.inf
    assert_same_array(*both("maxpool_argmax", x, 3, 2, 1, 2))  # infs only: the fast scan
    x[rng.random(x.shape) < 0.15] = np.nan
    for args in [(3, 2, 1, 2), (2, 2, 2, 2), (4, 3, 1, 1)]:
        assert_same_array(*both("maxpool_argmax", x, *args))  # with NaN: the careful scan


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_inputs(impl):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 9, 8)).transpose(1, 0, 3, 2)[:, :, ::2]  # (2, 3, 4, 9)
    assert not x.flags.c_contiguous
    xc = np.ascontiguousarray(x)
    with kernels(impl):
        np.testing.assert_array_equal(K.im2col(x, 2, 3, 1, 2, 1, 0), K.im2col(xc, 2, 3, 1, 2, 1, 0))
        cols = K.im2col(xc, 2, 3, 1, 2, 1, 0)
        cols_nc = np.asfortranarray(cols)
        np.testing.assert_array_equal(K.col2im(cols_nc, 4, 9, 2, 3, 1, 2, 1, 0),
                                      K.col2im(cols, 4, 9, 2, 3, 1, 2, 1, 0))
        idx = K.maxpool_argmax(x, 2, 2, 2, 2)
        np.testing.assert_array_equal(idx, K.maxpool_argmax(xc, 2, 2, 2, 2))
        np.testing.assert_array_equal(K.gather_plane(x, idx[:, :, ::-1]),
                                      K.gather_plane(xc, idx[:, :, ::-1].copy()))
        g = rng.standard_normal(idx.shape[::-1]).T
        np.testing.assert_array_equal(K.scatter_add_plane(g, idx, 4, 9),
                                      K.scatter_add_plane(g.copy(), idx, 4, 9))


# ---------------------------------------------------------------- dispatch


def test_set_kernels_switches_immediately():
    old = K.kernels_name()
    try:
        assert K.set_kernels("numpy") == "numpy" and K.kernels_name() == "numpy"
        assert K._active["im2col"] is im2col_numpy.im2col
        assert K._active["scatter_add_plane"] is pool_numpy.scatter_add_plane
        if HAVE_NUMBA:
            from autograd.kernels import batchnorm_numba, im2col_numba, pool_numba
            assert K.set_kernels("numba") == "numba" and K.kernels_name() == "numba"
            assert K._active["im2col"] is im2col_numba.im2col
            assert K._active["maxpool_argmax"] is pool_numba.maxpool_argmax
            assert K._active["bn_relu_double_backward"] is batchnorm_numba.bn_relu_double_backward
        with pytest.raises(ValueError, match="set_kernels: unknown kernels 'bogus'"):
            K.set_kernels("bogus")
        assert K.kernels_name() == ("numba" if HAVE_NUMBA else "numpy")  # unchanged by the error
    finally:
        K.set_kernels(old)


def run_python(code, **env):
    full_env = dict(os.environ)
    full_env.pop("TINYMETA_KERNELS", None)
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_env_var_selects_kernels():
    code = "import autograd.kernels as K; print(K.kernels_name())"
    r = run_python(code, TINYMETA_KERNELS="numpy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "numpy"
    r = run_python(code)  # default
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("numba" if HAVE_NUMBA else "numpy")
    r = run_python(code, TINYMETA_KERNELS="bogus")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == ("autograd.settings.SettingsError: TINYMETA_KERNELS="
                                                 "'bogus' is not a kernel set: choose numpy or numba.")


def test_missing_numba_falls_back_with_one_line_notice():
    code = (
        "import sys; sys.modules['numba'] = None\n"  # makes `import numba` raise ImportError
        "import numpy as np, autograd.kernels as K\n"
        "assert K.kernels_name() == 'numpy', K.kernels_name()\n"
        "assert K.set_kernels('numba') == 'numpy'\n"  # asking again: still no crash, no 2nd notice
        "print(K.im2col(np.ones((1, 1, 2, 2)), 2, 2, 1, 1, 0, 0).tolist())\n"
    )
    r = run_python(code, TINYMETA_KERNELS="numba")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[[[1.0], [1.0], [1.0], [1.0]]]"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "numba" in lines[0] and "numpy" in lines[0], r.stderr


class FakeDeviceArray:
    """Stands in for a CuPy array: has shape and dtype but is not a numpy.ndarray."""

    def __init__(self, shape, dtype=np.float32):
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)


@pytest.mark.skipif(importlib.util.find_spec("autograd.kernels.cupy_kernels") is not None,
                    reason="CuPy kernels exist; covered by their own tests")
def test_non_numpy_arrays_are_not_silently_handled():
    with pytest.raises(NotImplementedError, match="im2col: no kernel for arrays of type .*FakeDeviceArray"):
        K.im2col(FakeDeviceArray((1, 1, 3, 3)), 2, 2, 1, 1, 0, 0)
    with pytest.raises(NotImplementedError, match="scatter_add_plane: .*cupy_kernels"):
        K.scatter_add_plane(FakeDeviceArray((1, 1, 4)), np.zeros((1, 1, 4), np.int64), 2, 2)


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_arguments_raise_clear_errors(impl):
    x = np.zeros((1, 2, 3, 3))
    with kernels(impl):
        with pytest.raises(ValueError, match=r"im2col: expected x of shape \(B, C, H, W\), got \(3, 4\)"):
            K.im2col(np.zeros((3, 4)), 1, 1, 1, 1, 0, 0)
        with pytest.raises(ValueError, match="im2col: kernel 5x5 with padding 0 does not fit input 3x3"):
            K.im2col(x, 5, 5, 1, 1, 0, 0)
        with pytest.raises(ValueError, match="im2col: kernel 2x6 with padding 0x1 does not fit input 3x3"):
            K.im2col(x, 2, 6, 1, 1, 0, 1)
        with pytest.raises(ValueError, match="im2col: sh must be >= 1, got 0"):
            K.im2col(x, 2, 2, 0, 1, 0, 0)
        with pytest.raises(ValueError, match="im2col: pw must be >= 0, got -1"):
            K.im2col(x, 2, 2, 1, 1, 0, -1)
        with pytest.raises(TypeError, match="im2col: kw must be an integer, got 2.0"):
            K.im2col(x, 2, 2.0, 1, 1, 0, 0)
        with pytest.raises(TypeError, match="im2col: expected x of dtype float32 or float64, got int64"):
            K.im2col(np.zeros((1, 1, 3, 3), dtype=np.int64), 2, 2, 1, 1, 0, 0)
        with pytest.raises(TypeError, match="im2col: x must be an array, got list"):
            K.im2col([[[[1.0]]]], 1, 1, 1, 1, 0, 0)

        with pytest.raises(ValueError, match=r"col2im: expected cols of shape \(B, C\*kh\*kw, OH\*OW\), got \(2, 4\)"):
            K.col2im(np.zeros((2, 4)), 3, 3, 2, 2, 1, 1, 0, 0)
        with pytest.raises(ValueError, match=r"col2im: cols of shape \(1, 8, 5\) do not match kernel 2x2 on input 3x3"):
            K.col2im(np.zeros((1, 8, 5)), 3, 3, 2, 2, 1, 1, 0, 0)
        with pytest.raises(ValueError, match=r"col2im: cols of shape \(1, 7, 4\) do not match"):
            K.col2im(np.zeros((1, 7, 4)), 3, 3, 2, 2, 1, 1, 0, 0)
        with pytest.raises(ValueError, match="col2im: kernel 4x4 with padding 0 does not fit input 3x3"):
            K.col2im(np.zeros((1, 16, 1)), 3, 3, 4, 4, 1, 1, 0, 0)

        with pytest.raises(ValueError, match=r"maxpool_argmax: expected x of shape \(B, C, H, W\), got \(2, 3, 3\)"):
            K.maxpool_argmax(np.zeros((2, 3, 3)), 2, 2, 2, 2)
        with pytest.raises(ValueError, match="maxpool_argmax: kernel 4x2 with padding 0 does not fit input 3x3"):
            K.maxpool_argmax(x, 4, 2, 1, 1)

        idx = np.zeros((1, 2, 4), dtype=np.int64)
        with pytest.raises(ValueError, match=r"gather_plane: expected idx of shape \(1, 2, 4\), got \(1, 3, 4\)"):
            K.gather_plane(x, np.zeros((1, 3, 4), dtype=np.int64))
        with pytest.raises(TypeError, match="gather_plane: expected an integer idx, got float64"):
            K.gather_plane(x, idx.astype(np.float64))
        with pytest.raises(IndexError, match="gather_plane: idx out of range for a plane of 9 elements"):
            K.gather_plane(x, idx + 9)
        with pytest.raises(ValueError, match=r"scatter_add_plane: expected g of shape \(B, C, L\), got \(2, 4\)"):
            K.scatter_add_plane(np.zeros((2, 4)), idx, 3, 3)
        with pytest.raises(ValueError, match=r"scatter_add_plane: expected idx of shape \(1, 2, 4\), got \(1, 2, 5\)"):
            K.scatter_add_plane(np.zeros((1, 2, 4)), np.zeros((1, 2, 5), dtype=np.int64), 3, 3)
        with pytest.raises(IndexError, match="scatter_add_plane: idx out of range"):
            K.scatter_add_plane(np.zeros((1, 2, 4)), idx - 1, 3, 3)
        # int32 indices are accepted and widened
        np.testing.assert_array_equal(K.gather_plane(x, idx.astype(np.int32)), np.zeros((1, 2, 4)))


# ----------------------------------------------------------------------------- fused batch-norm + ReLU
from autograd.kernels import batchnorm_numba as _bn_numba  # noqa: E402
from autograd.kernels import batchnorm_numpy as _bn_numpy  # noqa: E402


def bn_rows(rng, T, C, M, dtype):
    """x (T, C, M) whose rows have a standard deviation in [0.5, 3] and a mean in [-2, 2].
    A row whose values nearly coincide (σ → 0) divides the float32 rounding of x − μ, which
    the two implementations round differently, by σ: drawn freely, about one row in 300 of
    length 2 broke the 1e-5 below."""
    z = rng.standard_normal((T, C, M))
    z = (z - z.mean(axis=2, keepdims=True)) / z.std(axis=2, keepdims=True)
    return (z * rng.uniform(0.5, 3.0, (T, C, 1)) + rng.uniform(-2.0, 2.0, (T, C, 1))).astype(dtype)


@settings(max_examples=min(25, settings.default.max_examples))
@given(T=st.integers(1, 3), C=st.integers(1, 4), M=st.integers(2, 40),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_bn_relu_numba_equals_numpy_reference(T, C, M, dtype, seed):
    """The Numba fused batch-norm+ReLU (forward and backward) equals the NumPy reference:
    relative 1e-12 in float64, 1e-5 in float32 (the sums are reassociated)."""
    rng = np.random.default_rng(seed)
    x = bn_rows(rng, T, C, M, dtype)
    gamma = rng.standard_normal((T, C)).astype(dtype)
    beta = rng.standard_normal((T, C)).astype(dtype)
    gy = rng.standard_normal((T, C, M)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    ref = _bn_numpy.bn_relu_forward(x, gamma, beta, 1e-5)
    got = _bn_numba.bn_relu_forward(x, gamma, beta, 1e-5)
    for a, b in zip(got, ref):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    y, mu, inv = ref
    ref_b = _bn_numpy.bn_relu_backward(gy, x, y, mu, inv, gamma)
    got_b = _bn_numba.bn_relu_backward(gy, x, y, mu, inv, gamma)
    for a, b in zip(got_b, ref_b):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))


@settings(max_examples=min(25, settings.default.max_examples))
@given(T=st.integers(1, 3), C=st.integers(1, 4), M=st.integers(2, 40),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16),
       present=st.sampled_from(["abc", "a", "bc", "b", "c"]))
def test_bn_relu_double_backward_numba_equals_numpy_reference(T, C, M, dtype, seed, present):
    """The Numba double backward of batch-norm+ReLU equals the NumPy reference, with every
    combination of missing (zero) cotangents: relative 1e-10 in float64 (the kernel sums
    the row once, the reference in several passes), 1e-4 in float32 against the largest
    entry (the reference works in float64, the kernel in the input dtype)."""
    rng = np.random.default_rng(seed)
    x = bn_rows(rng, T, C, M, dtype)
    gamma = rng.standard_normal((T, C)).astype(dtype)
    beta = rng.standard_normal((T, C)).astype(dtype)
    gy = rng.standard_normal((T, C, M)).astype(dtype)
    a = rng.standard_normal((T, C, M)).astype(dtype) if "a" in present else None
    b = rng.standard_normal((T, C)).astype(dtype) if "b" in present else None
    c = rng.standard_normal((T, C)).astype(dtype) if "c" in present else None
    y, mu, inv = _bn_numpy.bn_relu_forward(x, gamma, beta, 1e-5)
    ref = _bn_numpy.bn_relu_double_backward(x, y, gy, mu, inv, gamma, a, b, c)
    got = _bn_numba.bn_relu_double_backward(x, y, gy, mu, inv, gamma, a, b, c)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for name, g, r in zip(("gx", "ggamma", "ggy"), got, ref):
        assert g.dtype == dtype and g.shape == r.shape, name
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * max(1.0, float(np.abs(r).max())),
                                   err_msg=name)


def test_bn_relu_double_backward_checks_shapes():
    x = np.zeros((1, 2, 5))
    y, mu, inv = _bn_numpy.bn_relu_forward(x + np.arange(5.0), np.ones((1, 2)), np.zeros((1, 2)), 1e-5)
    with pytest.raises(ValueError, match=r"bn_relu_double_backward: expected a of shape \(1, 2, 5\), got \(1, 2, 4\)"):
        K.bn_relu_double_backward(x, y, x, mu, inv, np.ones((1, 2)), np.zeros((1, 2, 4)), None, None)
    with pytest.raises(ValueError, match=r"bn_relu_double_backward: expected b of shape \(1, 2\), got \(2,\)"):
        K.bn_relu_double_backward(x, y, x, mu, inv, np.ones((1, 2)), None, np.zeros(2), None)
