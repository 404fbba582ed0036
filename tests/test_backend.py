"""The array backends: the same checks on NumPy and on CuPy, the CuPy kernels against the
NumPy references, checkpoints across backends, and the errors when CuPy cannot run.

Most tests take the ``backend`` fixture (tests/conftest.py) and so run once per backend; the
cupy case is skipped, with the reason, where CuPy or a GPU is missing. The error-message
tests fake a missing CuPy or a missing GPU and run everywhere. The CUDA C of the CuPy
RawKernels is also *emulated on the CPU* (compiled with the host C++ compiler, every
thread of the launch run in turn) and compared with the NumPy references, so its index
arithmetic is checked on machines without a GPU.

Tolerances: derivatives with ``gradcheck``/``gradgradcheck`` at rtol 1e-6 in float64 (as in
test_layers_gradcheck); batched-vs-loop meta-gradients at rtol 1e-10 with an absolute floor
of 1e-10 x the largest entry (as in test_batched_tasks); HVP symmetry u.Hv = v.Hu at
relative 1e-10. Kernels: im2col, col2im, max-pool argmax, gather and scatter-add are exact
(the same values moved, the same additions in the same order); the batch-norm kernels sum
in a different order, so rtol 1e-12 in float64 and 1e-5 in float32. Across backends (a
checkpoint written on one and continued on the other) rtol 1e-9 in float64.
"""
import builtins
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import autograd as ag
import autograd.backend as B
import autograd.kernels as K
from autograd import Tensor
from autograd import functional as F
from autograd.kernels import batchnorm_numpy, cupy_kernels, im2col_numpy, pool_numpy
from tinymeta import checkpoint
from tinymeta.algorithms import MAML
from tinymeta.models import Conv4

from tinymeta.tasks import EpisodeSampler

REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-6
TOL = 1e-10


def distinct(rng, shape, spacing=0.05):
    """Values at least 0.6 * spacing apart (no arg-max swaps under the finite differences)."""
    n = int(np.prod(shape, dtype=int))
    grid = (rng.permutation(n) - n / 2) * spacing
    return (grid + rng.uniform(-0.2, 0.2, size=n) * spacing).reshape(shape)


def host(a):
    return B.to_numpy(a.data if isinstance(a, Tensor) else a)


# ============================================================ errors when CuPy cannot run


def one_sentence(msg):
    """One line, ending in a full stop, no second sentence outside parentheses."""
    bare = re.sub(r"\([^()]*\)", "()", msg)
    return "\n" not in msg and msg.endswith(".") and re.search(r"[.!?]\s+[A-Z]", bare) is None


def fake_cupy(get_device_count):
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return cupy


def no_device():
    raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected\n(more detail)")


NOT_INSTALLED = "set_backend('cupy'): CuPy is not installed, so install it with `pip install -e .[gpu]`"
NO_GPU = "set_backend('cupy'): CuPy is installed but no NVIDIA GPU is visible ("


def expect_unavailable(start):
    before = (B.name, B.xp)
    with pytest.raises(B.BackendUnavailable) as info:
        ag.set_backend("cupy")
    msg = str(info.value)
    assert msg.startswith(start), msg
    assert one_sentence(msg), msg
    assert (B.name, B.xp) == before                      # nothing changed
    return msg


def test_set_backend_cupy_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)       # `import cupy` raises ModuleNotFoundError
    msg = expect_unavailable(NOT_INSTALLED)
    assert "cupy-cuda12x" in msg and "CUDA 12" in msg and "cupy-cuda13x" in msg
    assert "GPU" not in msg
    assert B.cupy_unavailable_reason() == msg


@pytest.mark.parametrize("count", [no_device, lambda: 0], ids=["raises", "zero"])
def test_set_backend_cupy_without_gpu(monkeypatch, count):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count))
    msg = expect_unavailable(NO_GPU)
    assert "not installed" not in msg
    if count is no_device:
        assert "(cudaErrorNoDevice: no CUDA-capable device is detected)" in msg   # first line only
    else:
        assert "(the CUDA runtime reports 0 devices)" in msg


def test_set_backend_cupy_broken_install(monkeypatch):
    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("libnvrtc.so.12: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    msg = expect_unavailable("set_backend('cupy'): CuPy is installed but cannot be imported (libnvrtc")
    assert "not installed" not in msg and "no NVIDIA GPU" not in msg


def run_python(code, **env):
    full = {k: v for k, v in os.environ.items() if k != "TINYMETA_BACKEND"}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("setup,start", [
    ("sys.modules['cupy'] = None", NOT_INSTALLED),
    ("m = types.ModuleType('cupy'); m.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace("
     "getDeviceCount=lambda: 0)); sys.modules['cupy'] = m", NO_GPU[:-2]),
], ids=["not-installed", "no-gpu"])
def test_env_var_cupy_fails_at_import_with_the_sentence(setup, start):
    r = run_python(f"import sys, types; {setup}\nimport autograd", TINYMETA_BACKEND="cupy")
    assert r.returncode != 0
    assert start in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("autograd.backend.BackendUnavailable: " + start), last


def test_env_var_unknown_backend():
    r = run_python("import autograd", TINYMETA_BACKEND="tpu")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == ("autograd.settings.SettingsError: TINYMETA_BACKEND="
                                                 "'tpu' is not a backend: choose numpy or cupy.")


def test_pytest_session_on_cupy_stops_with_the_reason():
    """``TINYMETA_BACKEND=cupy python -m pytest`` where CuPy cannot run: one clean stop."""
    code = ("import sys; sys.modules['cupy'] = None\nimport pytest\n"
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/test_backend.py', '-k', 'nothing']))")
    r = run_python(code, TINYMETA_BACKEND="cupy")
    assert r.returncode == int(pytest.ExitCode.USAGE_ERROR), r.stdout + r.stderr
    assert "TINYMETA_BACKEND='cupy': " + NOT_INSTALLED in r.stdout + r.stderr


def test_cupy_param_is_skipped_with_the_reason():
    """Without CuPy, a test taking the ``backend`` fixture passes on numpy and its cupy case
    is reported as skipped with set_backend's sentence (``-rs``)."""
    code = ("import sys; sys.modules['cupy'] = None\nimport pytest\n"
            "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', "
            "'tests/test_backend.py::test_from_numpy_and_to_numpy']))")
    r = run_python(code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(".s "), r.stdout                     # numpy passed, cupy skipped
    assert ("SKIPPED [1] tests/test_backend.py:" in r.stdout
            and ": CuPy backend: " + NOT_INSTALLED in r.stdout), r.stdout


# ============================================================ moving arrays


def test_from_numpy_and_to_numpy(backend):
    a = np.arange(6.0).reshape(2, 3)
    d = B.from_numpy(a)
    assert isinstance(d, B.xp.ndarray) and d.dtype == np.float64
    assert B.from_numpy(d) is d                               # already there: not copied
    f = B.from_numpy(a, dtype=np.float32)
    assert f.dtype == np.float32
    back = B.to_numpy(d)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, a)
    t = Tensor(a)                                             # tensors follow the backend
    assert isinstance(t.data, B.xp.ndarray)
    np.testing.assert_array_equal(t.numpy(), a)


def test_kernels_refuse_unknown_array_types():
    class Foreign:
        shape, dtype, ndim = (1, 1, 3, 3), np.dtype(np.float32), 4

    with pytest.raises(NotImplementedError, match=r"im2col: no kernel for arrays of type .*Foreign "
                                                  r"\(only numpy.ndarray and cupy.ndarray are supported\)"):
        K.im2col(Foreign(), 2, 2, 1, 1, 0, 0)


def test_cupy_kernels_module_imports_without_cupy(monkeypatch):
    monkeypatch.setattr(cupy_kernels, "_cp", None)
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match="cupy_kernels: CuPy is not installed"):
        cupy_kernels.im2col(np.zeros((1, 1, 3, 3)), 2, 2, 1, 1, 0, 0)


# ============================================================ derivatives on each backend


def test_gradcheck_conv2d(backend):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    for stride, padding in ((1, 1), (2, 1)):
        f = lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding)   # noqa: E731
        assert ag.gradcheck(f, [x, w, b], rtol=RTOL) <= RTOL
        assert ag.gradgradcheck(f, [x, w, b], rtol=RTOL) <= RTOL


def test_gradcheck_conv2d_task_batched(backend):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 2, 1, 4, 4)), rng.standard_normal((2, 2, 1, 3, 3))
    f = lambda x, w: F.conv2d(x, w, padding=1)               # noqa: E731
    assert ag.gradcheck(f, [x, w], rtol=RTOL) <= RTOL
    assert ag.gradgradcheck(f, [x, w], rtol=RTOL) <= RTOL


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2)], ids=["2x2s2", "3x3s2-overlap"])
def test_gradcheck_max_pool2d(backend, k, s):
    x = distinct(np.random.default_rng(2), (2, 2, 5, 5))
    f = lambda x: F.max_pool2d(ag.exp(x * 0.5), k, s)          # noqa: E731  (a non-linear path too)
    assert ag.gradcheck(f, [x], rtol=RTOL) <= RTOL
    assert ag.gradgradcheck(f, [x], rtol=RTOL) <= RTOL


def bn_relu_inputs(seed, shape=(2, 3, 2, 3, 3)):
    """x (T, C, N, H, W), gamma/beta (T, C) with every gamma*x_hat + beta at least 0.05 from
    the ReLU kink and per-row variances well above eps."""
    rng = np.random.default_rng(seed)
    T, C = shape[:2]
    for _ in range(1000):
        x = 4.0 * distinct(rng, shape)
        gamma = rng.uniform(0.5, 1.5, size=(T, C))
        beta = rng.uniform(-0.5, 0.5, size=(T, C))
        rows = x.reshape(T, C, -1)
        xhat = (rows - rows.mean(axis=2, keepdims=True)) / np.sqrt(rows.var(axis=2, keepdims=True) + 1e-5)
        if np.abs(gamma[..., None] * xhat + beta[..., None]).min() > 0.05:
            return x, gamma, beta
    raise AssertionError("no kink-free batch-norm input found")


def test_gradcheck_batch_norm_relu(backend):
    x, gamma, beta = bn_relu_inputs(3)
    f = lambda x, g, b: F.batch_norm_relu(x, g, b)             # noqa: E731
    assert ag.gradcheck(f, [x, gamma, beta], rtol=RTOL) <= RTOL
    assert ag.gradgradcheck(f, [x, gamma, beta], rtol=RTOL) <= RTOL


def bn_relu_grad_fn(x, gamma, beta, gy):
    """(x, γ, β, gy) -> a scalar mix of the three outputs of BatchNormReLU's backward node
    (∂x, ∂γ, ∂β), built with create_graph=True: differentiating it runs the node's double
    backward, and differentiating that (gradgradcheck) its recorded, third-order form."""
    # the checkers also call f on constants (and once under no_grad, for the output's
    # shape): the inner grad still needs leaves and a recorded forward
    x, gamma, beta = (t if t.requires_grad else Tensor(t.data, requires_grad=True) for t in (x, gamma, beta))
    with ag.enable_grad():
        y = F.batch_norm_relu(x, gamma, beta)
        gx, gg, gb = ag.grad(y, [x, gamma, beta], grad_outputs=gy, create_graph=True)
        return (gx * gx).sum() + (gg * gg).sum() + (gx * x).sum() + (gb * gg).sum() + (gb * gb).sum()


def test_batch_norm_relu_double_backward_third_order(backend):
    """The double backward of the fused batch-norm+ReLU against finite differences of its
    backward (gradcheck of the gradient: the kernel), and its recorded form against finite
    differences of the double backward (gradgradcheck: third derivatives of the layer)."""
    x, gamma, beta = bn_relu_inputs(8, shape=(1, 2, 2, 2, 2))
    gy = np.random.default_rng(9).standard_normal(x.shape)
    assert ag.gradcheck(bn_relu_grad_fn, [x, gamma, beta, gy], rtol=RTOL) <= RTOL
    assert ag.gradgradcheck(bn_relu_grad_fn, [x, gamma, beta, gy], rtol=RTOL) <= RTOL


def test_batch_norm_relu_double_backward_kernel_equals_recorded(backend):
    """The fused double-backward kernel and the recorded (differentiable-op) formulas give
    the same numbers (float64, relative 1e-10): the third-order path differentiates the
    same function the second-order path evaluates."""
    x, gamma, beta = bn_relu_inputs(10)
    rng = np.random.default_rng(12)
    gy, a = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    b, c = rng.standard_normal(gamma.shape), rng.standard_normal(gamma.shape)
    xs, gs, gys = (Tensor(B.from_numpy(v), requires_grad=True) for v in (x, gamma, gy))
    y = F.batch_norm_relu(xs, gs, Tensor(B.from_numpy(beta)))
    outs = ag.grad(y, [xs, gs], grad_outputs=gys, create_graph=True)
    node = outs[0].creator                 # BatchNormReLUGrad, three outputs
    assert type(node).__name__ == "BatchNormReLUGrad"
    for present in ("abc", "a", "bc", "b", "c"):              # a missing cotangent is None (zero)
        cot = [Tensor(B.from_numpy(v)) if n in present else None for n, v in zip("abc", (a, b, c))]
        with ag.no_grad():
            kernel = node.backward(*cot)                       # not recording: the kernel
        recorded = node.backward(*cot)                         # recording: the differentiable formulas
        assert all(k is None or k.creator is None for k in kernel)
        for k, r in zip(kernel, recorded):
            if r is None:                                      # ∂γ' is zero without a
                assert "a" not in present and not np.any(host(k.data))
                continue
            assert r.creator is not None
            k, r = host(k.data), host(r.data)
            np.testing.assert_allclose(k, r, rtol=1e-10, atol=1e-10 * np.abs(k).max(), err_msg=present)


def test_batch_norm_relu_cancelled_bias_equals_adding_it(backend):
    """A bias b before batch statistics cancels: batch_norm_relu(x, γ, β, cancelled_bias=b)
    gives the values, the running statistics and the first and second derivatives of
    batch_norm_relu(x + b, γ, β) (float64, relative 1e-10), and b's gradient is exactly 0,
    where the added form's is 0 up to rounding (1e-10 of the largest ∂x)."""
    x, gamma, beta = bn_relu_inputs(14)
    T, C = gamma.shape
    rng = np.random.default_rng(15)
    b = rng.standard_normal((T, C))
    gy, v = Tensor(B.from_numpy(rng.standard_normal(x.shape))), Tensor(B.from_numpy(rng.standard_normal(x.shape)))
    runs = {}
    for form in ("added", "cancelled"):
        xs, gs, bes, bs = (Tensor(B.from_numpy(a), requires_grad=True) for a in (x, gamma, beta, b))
        rm, rv = B.xp.zeros(C), B.xp.ones(C)
        if form == "added":
            y = F.batch_norm_relu(xs + ag.reshape(bs, (T, C, 1, 1, 1)), gs, bes, running_mean=rm, running_var=rv)
        else:
            y = F.batch_norm_relu(xs, gs, bes, cancelled_bias=bs, running_mean=rm, running_var=rv)
        gx, gg, gb, gbias = ag.grad(y, [xs, gs, bes, bs], grad_outputs=gy, create_graph=True)
        s = (gx * v).sum() + (gg * gg).sum() + (gb * gg).sum()          # a mix of second derivatives
        second = ag.grad(s, [xs, gs, bs], allow_unused=True)
        runs[form] = dict(y=y, gx=gx, gg=gg, gb=gb, gbias=gbias, sx=second[0], sg=second[1], sbias=second[2],
                          rm=rm, rv=rv)
    added, cancelled = runs["added"], runs["cancelled"]
    for k in ("y", "gx", "gg", "gb", "sx", "sg", "rm", "rv"):
        want, got = host(added[k]), host(cancelled[k])
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max(), err_msg=k)
    scale = np.abs(host(added["gx"])).max()
    assert not np.any(host(cancelled["gbias"])) and cancelled["gbias"].creator is None
    assert np.abs(host(added["gbias"])).max() <= 1e-10 * scale               # Σ ∂x = 0 in exact arithmetic
    assert cancelled["sbias"] is None                                          # b is not in the recorded graph
    assert np.abs(host(added["sbias"])).max() <= 1e-10 * scale


def test_conv4_with_batch_statistics_equals_adding_its_conv_biases(backend):
    """Conv4 does not add a conv bias before batch statistics (they cancel it). Its output,
    running statistics and gradients (every parameter, and a second-order mix) equal the
    network that adds the biases, at non-zero biases, with running averages tracked
    (float64, relative 1e-10; the conv biases' gradients are exactly 0 against ~1e-16)."""
    rng = np.random.default_rng(16)
    x = Tensor(B.from_numpy(rng.standard_normal((2, 3, 1, 12, 12))))
    labels = B.from_numpy(rng.integers(0, 3, size=(2, 3)))
    biases = rng.standard_normal((4, 2, 4))                    # non-zero conv biases, per task
    runs = {}
    for form in ("added", "cancelled"):
        model = Conv4(3, filters=4, image_size=12, transductive=False)
        params = {k: Tensor(B.from_numpy(np.stack([B.to_numpy(v.data)] * 2)), requires_grad=True)
                  for k, v in model.init(np.random.default_rng(17), np.float64).items()}
        for i in range(4):
            params[f"conv{i}.b"] = Tensor(B.from_numpy(biases[i]), requires_grad=True)
        if form == "added":
            logits = added_bias_conv4(model, params, x)
        else:
            logits = model(params, x, mode="train")
        loss = F.cross_entropy(logits, labels)
        keys = sorted(params)
        first = dict(zip(keys, ag.grad(loss, [params[k] for k in keys], create_graph=True)))
        mix = sum(((g * g).sum() for k, g in first.items() if not k.endswith(".b")), Tensor(0.0))
        second = dict(zip(keys, ag.grad(mix, [params[k] for k in keys], allow_unused=True)))
        runs[form] = dict(logits=logits, first=first, second=second, state=model.state_dict())
    added, cancelled = runs["added"], runs["cancelled"]
    np.testing.assert_allclose(host(cancelled["logits"]), host(added["logits"]), rtol=1e-10, atol=1e-12)
    for k, want in added["state"].items():
        np.testing.assert_allclose(cancelled["state"][k], want, rtol=1e-10, atol=1e-12, err_msg=k)
    for order in ("first", "second"):
        for k, want in added[order].items():
            got, want = cancelled[order][k], host(want)
            if k.startswith("conv") and k.endswith(".b"):          # cancelled: exactly 0 (or unused)
                largest = max(np.abs(host(g)).max() for g in added[order].values() if g is not None)
                assert got is None or not np.any(host(got)), (order, k)
                assert np.abs(want).max() <= 1e-10 * largest, (order, k)
                continue
            np.testing.assert_allclose(host(got), want, rtol=1e-10, atol=1e-10 * np.abs(want).max(),
                                       err_msg=f"{order} {k}")


def added_bias_conv4(model, params, x):
    """Conv4's training forward pass written out with each conv bias added before batch-norm
    (the reference for the cancelled bias), running averages updated as Conv4 does."""
    h = ag.transpose(x, (0, 2, 1, 3, 4))
    for i in range(4):
        h = F.conv2d_grouped(h, params[f"conv{i}.w"], params[f"conv{i}.b"], (2, 2), (1, 1))
        rm, rv = model._running(f"bn{i}")
        h = F.batch_norm_relu(h, params[f"bn{i}.gamma"], params[f"bn{i}.beta"], running_mean=rm,
                              running_var=rv, momentum=model.bn_momentum)
    feats = ag.transpose(ag.mean(h, axis=(-2, -1)), (0, 2, 1))
    return F.linear(feats, params["w_head"], params["b_head"])


def test_gradcheck_cross_entropy(backend):
    rng = np.random.default_rng(4)
    logits, labels = 2.0 * rng.standard_normal((2, 5, 4)), rng.integers(0, 4, size=(2, 5))
    for reduction in ("mean", "none"):
        f = lambda z: F.cross_entropy(z, B.from_numpy(labels), reduction=reduction)   # noqa: E731
        assert ag.gradcheck(f, [logits], rtol=RTOL) <= RTOL
        assert ag.gradgradcheck(f, [logits], rtol=RTOL) <= RTOL


def tiny_net_loss(rng_seed=5):
    """A scalar loss of (conv weight, bn gamma, head weight): conv -> bn+relu -> pool -> linear -> CE."""
    rng = np.random.default_rng(rng_seed)
    x = Tensor(B.from_numpy(rng.standard_normal((1, 4, 2, 6, 6))))  # (T, N, C, H, W)
    labels = B.from_numpy(rng.integers(0, 3, size=(1, 4)))
    beta = Tensor(B.from_numpy(np.full((1, 3), 0.1)))

    def loss(w, gamma, head):
        h = F.conv2d(x, w, padding=1)                                # (T, N, O, H, W)
        h = ag.transpose(h, (0, 2, 1, 3, 4))                         # channel-major for bn
        h = F.batch_norm_relu(h, gamma, beta)
        h = F.max_pool2d(h, 2)                                       # (T, O, N, 3, 3)
        feats = ag.reshape(ag.transpose(h, (0, 2, 1, 3, 4)), (1, 4, 27))
        return F.cross_entropy(F.linear(feats, head), labels)

    shapes = [(1, 3, 2, 3, 3), (1, 3), (1, 3, 27)]
    init = [0.5 * rng.standard_normal(shapes[0]), rng.uniform(0.5, 1.5, shapes[1]),
            0.3 * rng.standard_normal(shapes[2])]
    return loss, init, shapes


def test_hvp_symmetric(backend):
    loss, init, shapes = tiny_net_loss()
    rng = np.random.default_rng(6)
    u = [rng.standard_normal(s) for s in shapes]
    v = [rng.standard_normal(s) for s in shapes]
    _, hv = ag.hvp(loss, init, [B.from_numpy(a) for a in v])
    _, hu = ag.hvp(loss, init, [B.from_numpy(a) for a in u])
    u_hv = sum(float(np.sum(a * host(b))) for a, b in zip(u, hv))
    v_hu = sum(float(np.sum(a * host(b))) for a, b in zip(v, hu))
    assert abs(u_hv) > 1e-3
    assert abs(u_hv - v_hu) <= TOL * max(abs(u_hv), abs(v_hu))


def conv_problem(seed=3):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((5, 1, 8, 8)) + 0.3 * rng.standard_normal((5, 6, 8, 8))
    model = Conv4(ways=3, in_channels=1, filters=4, image_size=8)
    sampler = EpisodeSampler(images, ways=3, shots=2, queries=2, rng=seed + 2, dtype=np.float64)
    return model, np.random.default_rng(seed + 1), sampler.sample_batch(3)


def test_maml_meta_gradient_batched_equals_loop(backend):
    model, rng, batch = conv_problem()
    theta = model.init(rng, dtype=np.float64)
    pair = [MAML(model, {k: Tensor(v.data.copy(), requires_grad=True) for k, v in theta.items()},
                 F.cross_entropy, inner_lr=0.1, inner_steps=1, batched=b) for b in (True, False)]
    # everything lives on the active backend: parameters, optimizer state, running statistics
    for learner in pair:
        assert all(isinstance(p.data, B.xp.ndarray) for p in learner.params.values())
        assert all(isinstance(a, B.xp.ndarray) for a in learner.optimizer.m.values())
    assert all(isinstance(a, B.xp.ndarray) for pair_ in model.running.values() for a in pair_)
    (l1, g1), (l2, g2) = (learner.meta_gradients(batch) for learner in pair)
    assert float(l1.data) == pytest.approx(float(l2.data), rel=TOL)
    scale = max(np.abs(host(g)).max() for g in g2.values())
    assert scale > 1e-6
    for k in g2:
        assert isinstance(g1[k].data, B.xp.ndarray)
        np.testing.assert_allclose(host(g1[k]), host(g2[k]), rtol=TOL, atol=TOL * scale, err_msg=k)


# ============================================================ checkpoints across backends


def require(name):
    if name == "cupy":
        reason = B.cupy_unavailable_reason()
        if reason is not None:
            pytest.skip(f"CuPy backend: {reason}")


def build(seed=7):
    model = Conv4(ways=3, in_channels=1, filters=4, image_size=8, transductive=False)
    params = model.init(np.random.default_rng(seed), dtype=np.float64)
    learner = MAML(model, params, F.cross_entropy, inner_lr=0.1, inner_steps=1)
    return model, learner


def snapshot(model, learner):
    """The learner's state as a checkpoint holds it (copies: the parameters move on)."""
    arrays, numbers = checkpoint.pack(learner.state_dict())
    return {k: np.array(v) for k, v in arrays.items()}, {"learner": numbers}


def restore(arrays, meta):
    model, learner = build()
    learner.load_state_dict(checkpoint.unpack(arrays, meta["learner"]))
    return model, learner


@pytest.mark.parametrize("save_on,load_on", [("numpy", "numpy"), ("numpy", "cupy"), ("cupy", "numpy"),
                                             ("cupy", "cupy")])
def test_checkpoint_round_trip_across_backends(tmp_path, save_on, load_on):
    require(save_on)
    require(load_on)
    _, rng, batch = conv_problem()
    previous = B.name
    try:
        ag.set_backend(save_on)
        model, learner = build()
        learner.step(batch)                                   # non-trivial Adam state, running stats
        arrays, meta = snapshot(model, learner)
        path = checkpoint.save(tmp_path / "ckpt.npz", arrays, meta)
        learner.step(batch)                                   # the reference continuation
        expected = {k: host(v).copy() for k, v in learner.params.items()}
        expected_running = model.state_dict()

        ag.set_backend(load_on)
        loaded, meta2 = checkpoint.load(path)
        assert all(isinstance(a, np.ndarray) for a in loaded.values())    # a file holds NumPy
        for k, a in arrays.items():
            np.testing.assert_array_equal(loaded[k], a, err_msg=k)
        model2, learner2 = restore(loaded, meta2)
        for where in (learner2.params.values(),):
            assert all(isinstance(p.data, B.xp.ndarray) for p in where)
        assert all(isinstance(a, B.xp.ndarray) for a in learner2.optimizer.m.values())
        assert all(isinstance(a, B.xp.ndarray) for a in learner2.optimizer.v.values())
        assert all(isinstance(a, B.xp.ndarray) for p in model2.running.values() for a in p)
        learner2.step(batch)
        same = save_on == load_on                               # same arithmetic: bit for bit
        for k, v in learner2.params.items():
            if same:
                np.testing.assert_array_equal(host(v), expected[k], err_msg=k)
            else:
                np.testing.assert_allclose(host(v), expected[k], rtol=1e-9, atol=1e-9, err_msg=k)
        for k, v in model2.state_dict().items():
            np.testing.assert_allclose(v, expected_running[k], rtol=0 if same else 1e-9, err_msg=k)
    finally:
        ag.set_backend(previous)


def test_optimizer_state_accepts_arrays_of_either_backend(backend):
    from tinymeta.optim import Adam
    params = {"w": Tensor(np.ones((2, 2)), requires_grad=True)}
    opt = Adam(params, lr=0.1)
    opt.step({"w": Tensor(np.full((2, 2), 0.5))})
    state = opt.state_dict()
    assert isinstance(state["m/w"], np.ndarray)                # state_dict is a host snapshot
    state = {k: (B.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    opt2 = Adam(params, lr=0.1)
    opt2.load_state_dict(state)
    assert isinstance(opt2.m["w"], B.xp.ndarray) and opt2.m["w"] is not state["m/w"]
    np.testing.assert_array_equal(B.to_numpy(opt2.m["w"]), B.to_numpy(opt.m["w"]))


# ============================================================ CuPy kernels vs the NumPy references


CONV_CASES = [  # (G, C, N, H, W, kh, kw, sh, sw, ph, pw)
    (1, 1, 1, 5, 5, 3, 3, 1, 1, 0, 0),
    (2, 3, 4, 7, 6, 3, 3, 2, 2, 1, 1),
    (3, 2, 2, 8, 5, 2, 3, 1, 2, 0, 1),
    (1, 2, 3, 4, 4, 4, 4, 3, 3, 2, 2),          # padding wider than stride
    (2, 1, 1, 9, 7, 3, 2, 3, 1, 1, 0),
]
POOL_CASES = [  # (B, C, H, W, kh, kw, sh, sw)
    (2, 3, 6, 6, 2, 2, 2, 2),
    (1, 2, 7, 5, 3, 3, 2, 2),                   # overlapping windows
    (2, 1, 5, 8, 2, 3, 1, 2),
    (1, 1, 4, 4, 4, 4, 1, 1),
]
DTYPES = [np.float32, np.float64]


def pool_input(rng, shape, dtype, nan=False):
    x = (np.round(2 * rng.standard_normal(shape)) / 2).astype(dtype)     # many ties
    if nan:
        x.reshape(-1)[5] = np.nan
        x.reshape(-1)[min(11, x.size - 1)] = np.nan
    return x


def assert_exact(got, want):
    got = B.to_numpy(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_cupy_conv_kernels_match_numpy(cupy, case, dtype):
    G, C, N, H, W, kh, kw, sh, sw, ph, pw = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((G, C, N, H, W)).astype(dtype)
    cols = im2col_numpy.im2col(x, kh, kw, sh, sw, ph, pw)
    got = K.im2col(cupy.asarray(x), kh, kw, sh, sw, ph, pw)
    assert isinstance(got, cupy.ndarray) and got.flags.c_contiguous
    assert_exact(got, cols)
    assert_exact(K.im2col(cupy.asarray(x[:, :, 0]), kh, kw, sh, sw, ph, pw),   # 4-D layout
                 im2col_numpy.im2col(x[:, :, 0], kh, kw, sh, sw, ph, pw))
    g = rng.standard_normal(cols.shape).astype(dtype)
    assert_exact(K.col2im(cupy.asarray(g), H, W, kh, kw, sh, sw, ph, pw, N=N),
                 im2col_numpy.col2im(g, H, W, kh, kw, sh, sw, ph, pw, N=N))
    g4 = rng.standard_normal(im2col_numpy.im2col(x[:, :, 0], kh, kw, sh, sw, ph, pw).shape).astype(dtype)
    assert_exact(K.col2im(cupy.asarray(g4), H, W, kh, kw, sh, sw, ph, pw),
                 im2col_numpy.col2im(g4, H, W, kh, kw, sh, sw, ph, pw))
    xt = cupy.asarray(np.ascontiguousarray(x.transpose(0, 1, 2, 4, 3))).transpose(0, 1, 2, 4, 3)
    assert_exact(K.im2col(xt, kh, kw, sh, sw, ph, pw), cols)                    # non-contiguous input


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_cupy_pool_kernels_match_numpy(cupy, case, dtype):
    Bn, C, H, W, kh, kw, sh, sw = case
    rng = np.random.default_rng(sum(case))
    for nan in (False, True):
        x = pool_input(rng, (Bn, C, H, W), dtype, nan)
        idx = pool_numpy.maxpool_argmax(x, kh, kw, sh, sw)
        got = K.maxpool_argmax(cupy.asarray(x), kh, kw, sh, sw)
        assert_exact(got, idx)
        assert_exact(K.gather_plane(cupy.asarray(x), got), pool_numpy.gather_plane(x, idx))
        g = rng.standard_normal(idx.shape).astype(dtype)
        want = pool_numpy.scatter_add_plane(g, idx, H, W)
        got_s = K.scatter_add_plane(cupy.asarray(g), got, H, W)
        if kh <= 2 * sh and kw <= 2 * sw:                  # at most two entries per position
            assert_exact(got_s, want)
        else:
            np.testing.assert_allclose(B.to_numpy(got_s), want, rtol=1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_gather_scatter_arbitrary_indices(cupy, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    idx = rng.integers(0, 20, size=(2, 3, 9))
    assert_exact(K.gather_plane(cupy.asarray(x), cupy.asarray(idx)), pool_numpy.gather_plane(x, idx))
    assert_exact(K.gather_plane(cupy.asarray(x), idx.astype(np.int32)), pool_numpy.gather_plane(x, idx))
    g = rng.standard_normal(idx.shape).astype(dtype)
    np.testing.assert_allclose(B.to_numpy(K.scatter_add_plane(cupy.asarray(g), cupy.asarray(idx), 4, 5)),
                               pool_numpy.scatter_add_plane(g, idx, 4, 5),
                               rtol=1e-12 if dtype == np.float64 else 1e-5, atol=1e-6)
    bad = idx.copy()
    bad[0, 0, 0] = 20
    with pytest.raises(IndexError, match="gather_plane: idx out of range for a plane of 20 elements"):
        K.gather_plane(cupy.asarray(x), cupy.asarray(bad))
    with pytest.raises(ValueError, match=r"scatter_add_plane: expected idx of shape \(2, 3, 9\)"):
        K.scatter_add_plane(cupy.asarray(g), cupy.asarray(idx[:, :, :4]), 4, 5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 2, 7), (3, 4, 50), (2, 3, 1000)])
def test_cupy_bn_relu_kernels_match_numpy(cupy, shape, dtype):
    rng = np.random.default_rng(shape[2])
    T, C, M = shape
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 2, (T, C, 1)) + rng.uniform(-1, 1, (T, C, 1))).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, (T, C)).astype(dtype), rng.uniform(-0.5, 0.5, (T, C)).astype(dtype)
    rtol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    want = batchnorm_numpy.bn_relu_forward(x, gamma, beta, 1e-5)
    got = K.bn_relu_forward(cupy.asarray(x), cupy.asarray(gamma), cupy.asarray(beta), 1e-5)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(B.to_numpy(g), w, **rtol)
    gy = rng.standard_normal(shape).astype(dtype)
    want_b = batchnorm_numpy.bn_relu_backward(gy, x, *want, gamma)
    # the same y, mu, inv on both sides, so the ReLU gate is identical
    got_b = K.bn_relu_backward(cupy.asarray(gy), cupy.asarray(x), *(cupy.asarray(a) for a in want),
                               cupy.asarray(gamma))
    for g, w in zip(got_b, want_b):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(B.to_numpy(g), w, **rtol)
    a, b, c = rng.standard_normal(shape).astype(dtype), *rng.standard_normal((2, T, C)).astype(dtype)
    want_d = batchnorm_numpy.bn_relu_double_backward(x, *want[:1], gy, *want[1:], gamma, a, b, c)
    got_d = K.bn_relu_double_backward(*(cupy.asarray(v) for v in (x, want[0], gy, want[1], want[2],
                                                                  gamma, a, b, c)))
    for g, w in zip(got_d, want_d):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(B.to_numpy(g), w, rtol=rtol["rtol"], atol=rtol["atol"] * max(1, np.abs(w).max()))


# ============================================================ the CUDA C, emulated on the CPU
#
# cupy_kernels is run with a stand-in for the ``cupy`` module: arrays are NumPy arrays and
# ``RawKernel(source, name)`` compiles the kernel's CUDA C with the host C++ compiler
# (``__global__`` dropped; blockIdx/blockDim/threadIdx/gridDim are globals; atomicAdd a plain
# add) and runs the launch thread by thread. The arguments are checked against the kernel's
# C signature (count, pointer element types, scalar types), so the host code that launches
# the kernels is exercised too. ElementwiseKernel/ReductionKernel (batch-norm) need CuPy.

_CXX = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
_EMU_PRELUDE = r"""
struct tm_dim3 { unsigned int x, y, z; };
static tm_dim3 blockIdx, blockDim, threadIdx, gridDim;
#define __global__
template <class X> static X atomicAdd(X* address, X value) { X old = *address; *address = old + value; return old; }
extern "C" void tm_set_thread(unsigned int grid, unsigned int block, unsigned int b, unsigned int t) {
    gridDim.x = grid; blockDim.x = block; blockIdx.x = b; threadIdx.x = t;
    gridDim.y = gridDim.z = blockDim.y = blockDim.z = 1;
    blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0;
}
"""
_emu_libs = {}


class _EmulatedRawKernel:
    build_dir = None

    def __init__(self, source, name):
        key = hashlib.sha1((source + name).encode()).hexdigest()[:16]
        if key not in _emu_libs:
            src = self.build_dir / f"{name}_{key}.cpp"
            lib = self.build_dir / f"{name}_{key}.so"
            src.write_text(_EMU_PRELUDE + source)
            r = subprocess.run([_CXX, "-std=c++11", "-O1", "-Wall", "-Werror", "-shared", "-fPIC",
                                str(src), "-o", str(lib)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            _emu_libs[key] = ctypes.CDLL(str(lib))
        self.lib = _emu_libs[key]
        self.fn = getattr(self.lib, name)
        self.real = np.float32 if "typedef float real;" in source else np.float64
        m = re.search(r"void\s+" + name + r"\s*\(([^)]*)\)", source)
        self.params = [p.strip() for p in m.group(1).split(",")]

    def _check(self, args):
        assert len(args) == len(self.params), (self.params, len(args))
        for p, a in zip(self.params, args):
            if "*" in p:
                want = self.real if p.replace("const", "").split("*")[0].strip() == "real" else np.int64
                assert isinstance(a, np.ndarray) and a.dtype == want and a.flags.c_contiguous, (p, a.dtype)
            else:
                assert p.startswith("long long") and type(a) is np.int64, (p, type(a))

    def __call__(self, grid, block, args):
        (gx,), (bx,) = grid, block
        assert 1 <= gx < 2 ** 31 and 1 <= bx <= 1024
        self._check(args)
        cargs = [ctypes.c_void_p(a.ctypes.data) if isinstance(a, np.ndarray) else ctypes.c_longlong(int(a))
                 for a in args]
        for b in range(gx):
            for t in range(bx):
                self.lib.tm_set_thread(gx, bx, b, t)
                self.fn(*cargs)


@pytest.fixture
def emulated(monkeypatch, tmp_path_factory):
    """cupy_kernels running its RawKernels through the CPU emulation (arrays are NumPy)."""
    if _CXX is None:
        pytest.skip("no C++ compiler to emulate the CUDA kernels with")
    if _EmulatedRawKernel.build_dir is None:
        _EmulatedRawKernel.build_dir = tmp_path_factory.mktemp("cuda_emulation")
    fake = types.SimpleNamespace(
        RawKernel=_EmulatedRawKernel, ndarray=np.ndarray, int64=np.int64, float64=np.float64,
        asarray=np.asarray, ascontiguousarray=np.ascontiguousarray, empty=np.empty, zeros=np.zeros)
    monkeypatch.setattr(cupy_kernels, "_cp", fake)
    monkeypatch.setattr(cupy_kernels, "_raw_cache", {})
    monkeypatch.setattr(cupy_kernels, "_MAX_BLOCKS", 2)       # small grids: exercise the grid-stride loop
    monkeypatch.setattr(cupy_kernels, "_THREADS", 32)
    return cupy_kernels


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_cuda_conv_kernels_match_numpy(emulated, dtype):
    for case in CONV_CASES:
        G, C, N, H, W, kh, kw, sh, sw, ph, pw = case
        rng = np.random.default_rng(sum(case))
        x = rng.standard_normal((G, C, N, H, W)).astype(dtype)
        cols = im2col_numpy.im2col(x, kh, kw, sh, sw, ph, pw)
        assert_exact(emulated.im2col(x, kh, kw, sh, sw, ph, pw), cols)
        assert_exact(emulated.im2col(x[:, :, 0], kh, kw, sh, sw, ph, pw),
                     im2col_numpy.im2col(x[:, :, 0], kh, kw, sh, sw, ph, pw))
        g = rng.standard_normal(cols.shape).astype(dtype)
        assert_exact(emulated.col2im(g, H, W, kh, kw, sh, sw, ph, pw, N=N),
                     im2col_numpy.col2im(g, H, W, kh, kw, sh, sw, ph, pw, N=N))
        g4 = rng.standard_normal(im2col_numpy.im2col(x[:, :, 0], kh, kw, sh, sw, ph, pw).shape).astype(dtype)
        assert_exact(emulated.col2im(g4, H, W, kh, kw, sh, sw, ph, pw),
                     im2col_numpy.col2im(g4, H, W, kh, kw, sh, sw, ph, pw))


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_cuda_pool_kernels_match_numpy(emulated, dtype):
    for case in POOL_CASES:
        Bn, C, H, W, kh, kw, sh, sw = case
        rng = np.random.default_rng(sum(case))
        for nan in (False, True):
            x = pool_input(rng, (Bn, C, H, W), dtype, nan)
            idx = pool_numpy.maxpool_argmax(x, kh, kw, sh, sw)
            assert_exact(emulated.maxpool_argmax(x, kh, kw, sh, sw), idx)
            assert_exact(emulated.gather_plane(x, idx), pool_numpy.gather_plane(x, idx))
            g = rng.standard_normal(idx.shape).astype(dtype)
            # sequential emulation adds in element order, as np.add.at does: exact
            assert_exact(emulated.scatter_add_plane(g, idx, H, W), pool_numpy.scatter_add_plane(g, idx, H, W))
    x = np.arange(2 * 3 * 4 * 5, dtype=dtype).reshape(2, 3, 4, 5)
    idx = np.random.default_rng(1).integers(0, 20, size=(2, 3, 11))
    assert_exact(emulated.gather_plane(x, idx.astype(np.int32)), pool_numpy.gather_plane(x, idx))
    with pytest.raises(IndexError, match="scatter_add_plane: idx out of range for a plane of 20 elements"):
        emulated.scatter_add_plane(np.ones((2, 3, 11), dtype), idx - 1, 4, 5)
    assert emulated.im2col(np.zeros((0, 1, 3, 3), dtype), 2, 2, 1, 1, 0, 0).shape == (0, 4, 4)   # empty: no launch


@pytest.mark.parametrize("present", ["abc", "a", "bc"])
def test_cupy_bn_relu_double_backward_host_code_with_numpy(monkeypatch, present):
    """The CuPy double backward is the NumPy reference's array code run with xp=cupy (no
    custom kernel): with NumPy standing in for CuPy its host code (the conversions, the
    None cotangents) must reproduce the reference (float64, rtol 1e-12) on any machine."""
    monkeypatch.setattr(cupy_kernels, "_cp", np)
    rng = np.random.default_rng(13)
    T, C, M = 2, 3, 17
    x = rng.standard_normal((T, C, M)) * 2 + 1
    gamma, beta = rng.uniform(0.5, 1.5, (T, C)), rng.uniform(-0.5, 0.5, (T, C))
    y, mu, inv = batchnorm_numpy.bn_relu_forward(x, gamma, beta, 1e-5)
    gy = rng.standard_normal(x.shape)
    a = rng.standard_normal(x.shape) if "a" in present else None
    b = rng.standard_normal((T, C)) if "b" in present else None
    c = rng.standard_normal((T, C)) if "c" in present else None
    want = batchnorm_numpy.bn_relu_double_backward(x, y, gy, mu, inv, gamma, a, b, c)
    got = cupy_kernels.bn_relu_double_backward(x, y, gy, mu, inv, gamma, a, b, c)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * np.abs(w).max())


def test_cuda_sources_compile_with_nvcc(tmp_path):
    """Where the CUDA toolkit is installed (no GPU needed), the RawKernel sources compile."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    for ctype in ("float", "double"):
        for name, body in cupy_kernels.RAW_SOURCES.items():
            src = tmp_path / f"{name}_{ctype}.cu"
            src.write_text(f"typedef {ctype} real;\n" + cupy_kernels._PREAMBLE + body)
            r = subprocess.run([nvcc, "--ptx", "-arch=sm_75", "-Werror", "all-warnings", str(src),
                                "-o", str(tmp_path / f"{name}_{ctype}.ptx")], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
