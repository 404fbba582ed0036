"""The compiled MAML step of a ReLU MLP (``tinymeta/algorithms/_maml_mlp_numba.py``) against
the readable one, the engine's graph of ``MAML.meta_loss`` (``settings.using(kernels="numpy")``
runs the graph).

Tolerances:
  * float64, compiled vs graph: relative error ‖a − b‖∞ / ‖b‖∞ ≤ 1e-12 per tensor (only the
    order of summation differs; measured ≤ 6e-15).
  * float32, compiled vs graph: ≤ 1e-4 (float32 rounding through a second-order step;
    measured ≤ 4e-7).
  * finite differences (float64, central, h = 1e-6, along random directions of all
    parameters): relative error ≤ 1e-6. ReLU makes the meta-loss piecewise smooth; with
    these seeds no kink lies within h (a crossed kink would show as a large error, not a
    pass).
"""
import numpy as np
import pytest

from autograd import backend as active_backend, settings
from autograd import functional as F
from helpers import host
from tinymeta.algorithms import ANIL, MAML, MetaSGD
from tinymeta.models import MLP
from tinymeta.tasks import SinusoidTasks

pytest.importorskip("numba")
cpu_only = pytest.mark.skipif(active_backend.name != "numpy",
                              reason="the compiled MAML step runs on the NumPy backend only (elsewhere the graph runs)")


def problem(sizes, dtype=np.float64, seed=0, tasks=5, shots=7, std=0.5):
    model = MLP(list(sizes), activation="relu", init_std=std)
    params = model.init(np.random.default_rng(seed), dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    for p in params.values():
        p.data[...] += rng.normal(0, 0.1, p.shape)          # non-zero biases: every ReLU pattern
    batch = SinusoidTasks().sample(np.random.default_rng(seed + 100), tasks=tasks, shots=shots)
    if sizes[0] > 1 or sizes[-1] > 1:                       # wider inputs / outputs: random data
        T, N = batch.support_x.shape[:2]
        batch.support_x, batch.query_x = (rng.normal(size=(T, N, sizes[0])) for _ in range(2))
        batch.support_y, batch.query_y = (rng.normal(size=(T, N, sizes[-1])) for _ in range(2))
    return model, params, batch


def both(learner, batch):
    """(compiled, graph): each (loss, {name: gradient}) as host arrays."""
    with settings.using(kernels="numba"):
        assert learner.compiled_step_applies(batch)
        compiled = learner.meta_gradients(batch)
    with settings.using(kernels="numpy"):
        assert not learner.compiled_step_applies(batch)
        graph = learner.meta_gradients(batch)
    return [(host(loss), {k: host(g) for k, g in grads.items()}) for loss, grads in (compiled, graph)]


def assert_close(a, b, rtol):
    for k in b:
        err = np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()
        assert err <= rtol, f"{k}: relative error {err:.2e} > {rtol:.0e}"


@cpu_only
@pytest.mark.parametrize("sizes", [(1, 40, 40, 1), (3, 7, 2), (2, 9, 5, 6, 4), (1, 1)])
@pytest.mark.parametrize("steps,first_order", [(1, False), (3, False), (2, True)])
def test_compiled_equals_graph_float64(sizes, steps, first_order):
    model, params, batch = problem(sizes)
    learner = MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=steps, first_order=first_order)
    (lc, gc), (lg, gg) = both(learner, batch)
    assert lc == pytest.approx(lg, rel=1e-12)
    assert set(gc) == set(gg) == set(params)
    assert_close(gc, gg, 1e-12)


@cpu_only
def test_compiled_equals_graph_float32_sinusoid():
    model, params, batch = problem((1, 40, 40, 1), dtype=np.float32, tasks=25, shots=10, std=0.01)
    learner = MAML(model, params, F.mse_loss, inner_lr=0.01, inner_steps=1)
    (lc, gc), (lg, gg) = both(learner, batch)
    assert gc["w1"].dtype == np.float32
    assert lc == pytest.approx(lg, rel=1e-5)
    assert_close(gc, gg, 1e-4)


@cpu_only
def test_second_order_term_is_there():
    """The compiled second-order gradient differs from the first-order one by α H v
    (so a kernel that dropped the Hessian term would fail the graph comparison too)."""
    model, params, batch = problem((1, 8, 8, 1))
    second = MAML(model, params, F.mse_loss, inner_lr=0.1, inner_steps=1)
    first = MAML(model, params, F.mse_loss, inner_lr=0.1, inner_steps=1, first_order=True)
    g2, g1 = (host(learner.meta_gradients(batch)[1]["w1"]) for learner in (second, first))
    assert np.abs(g2 - g1).max() > 1e-3 * np.abs(g1).max()


@cpu_only
def test_compiled_matches_finite_differences():
    model, params, batch = problem((1, 6, 5, 1), tasks=3, shots=5)
    learner = MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=2)
    loss, grads = learner.meta_gradients(batch)
    rng, h = np.random.default_rng(7), 1e-6
    base = {k: p.data.copy() for k, p in params.items()}

    def meta_loss_at(shift):
        for k, p in params.items():
            p.data[...] = base[k] + shift[k]
        value = float(host(learner.meta_gradients(batch)[0]))
        for k, p in params.items():
            p.data[...] = base[k]
        return value
    for _ in range(3):
        v = {k: rng.normal(size=p.shape) for k, p in params.items()}
        numeric = (meta_loss_at({k: h * d for k, d in v.items()})
                   - meta_loss_at({k: -h * d for k, d in v.items()})) / (2 * h)
        analytic = sum(float(np.sum(host(grads[k]) * v[k])) for k in params)
        assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), abs(numeric))


@cpu_only
def test_parts_equal_one_part():
    """The tasks cut into parts (run on Numba's threads) give the sums of one part."""
    from tinymeta.algorithms._maml_mlp_numba import mlp_maml_meta_gradients
    model, params, batch = problem((1, 10, 10, 1), tasks=9)
    args = ([params[f"w{l}"].data for l in range(3)], [params[f"b{l}"].data for l in range(3)],
            batch.support_x, batch.support_y, batch.query_x, batch.query_y, 0.05, 2)
    one = mlp_maml_meta_gradients(*args, parts=1)
    for parts in (2, 4, 9, 20):
        other = mlp_maml_meta_gradients(*args, parts=parts)
        assert other[0] == pytest.approx(one[0], rel=1e-14)
        for a, b in zip(one[1] + one[2], other[1] + other[2]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@cpu_only
def test_training_steps_agree():
    """Three Adam steps through the compiled path and through the graph reach the same θ."""
    runs = []
    for kernels in ("numba", "numpy"):
        model, params, batch = problem((1, 12, 12, 1))
        learner = MAML(model, params, F.mse_loss, inner_lr=0.05, inner_steps=1)
        with settings.using(kernels=kernels):
            for _ in range(3):
                learner.step(batch)
        runs.append({k: p.data.copy() for k, p in learner.params.items()})
    for k in runs[0]:
        np.testing.assert_allclose(runs[0][k], runs[1][k], rtol=1e-10, atol=1e-13)


@cpu_only
def test_a_nan_in_the_data_reaches_the_loss_as_in_the_graph():
    from tinymeta.algorithms.base import NonFiniteError
    model, params, batch = problem((1, 8, 8, 1))
    batch.support_x[1, 2, 0] = np.nan
    learner = MAML(model, params, F.mse_loss, inner_lr=0.05)
    (lc, _), (lg, _) = both(learner, batch)
    assert np.isnan(lc) and np.isnan(lg)
    with pytest.raises(NonFiniteError, match="not finite"):
        learner.step(batch)


@cpu_only
def test_where_the_compiled_step_does_not_apply():
    model, params, batch = problem((1, 8, 8, 1))
    with settings.using(kernels="numba"):
        assert MAML(model, params, F.mse_loss).compiled_step_applies(batch)
        others = [ANIL(model, params, F.mse_loss), MetaSGD(model, params, F.mse_loss),
                  MAML(model, params, F.mse_loss, per_step_lr=True),
                  MAML(model, params, F.mse_loss, inner_steps=0),
                  MAML(model, params, F.mse_loss, batched=False),
                  MAML(model, params, lambda p, t, reduction="mean": F.mse_loss(p, t, reduction)),
                  MAML(MLP([1, 8, 8, 1], activation="tanh"), params, F.mse_loss)]
        for learner in others:
            assert not learner.compiled_step_applies(batch), type(learner).__name__
        # the MAML++ multi-step loss, while it is in effect
        msl = MAML(model, params, F.mse_loss, inner_steps=2, multi_step_loss=10)
        msl.iteration = 1
        assert not msl.compiled_step_applies(batch)
        msl.iteration = 11
        assert msl.compiled_step_applies(batch)


def test_only_on_the_cpu(backend):
    """On CuPy the graph runs (the kernel is NumPy + Numba); on NumPy the compiled step."""
    model = MLP([1, 8, 8, 1])
    params = model.init(np.random.default_rng(0), dtype=np.float64)
    batch = SinusoidTasks().sample(np.random.default_rng(1), tasks=2, shots=3)
    with settings.using(kernels="numba"):
        assert MAML(model, params, F.mse_loss).compiled_step_applies(batch) == (backend == "numpy")


@cpu_only
@pytest.mark.parametrize("sizes", [(1, 40, 40, 1), (3, 7, 5, 2)])
def test_hand_written_hessian_vector_equals_double_backward(sizes):
    """The kernel's H v (Pearlmutter's R-operator, written by hand) against the engine's
    double backward of the same support loss, in float64, to 1e-12 relative."""
    from autograd import Tensor, grad
    from autograd.ops import mul, sum as tsum
    from tinymeta.algorithms import _maml_mlp_numba as k
    model, params, batch = problem(sizes)
    x, y = batch.support_x[0], batch.support_y[0]
    L, P, N = len(sizes) - 1, max(sizes), x.shape[0]
    rng = np.random.default_rng(3)
    v = {name: rng.normal(size=p.shape) for name, p in params.items()}

    loss = F.mse_loss(model(params, Tensor.constant(x)), Tensor.constant(y))
    names = list(params)
    g = grad(loss, [params[n] for n in names], create_graph=True)
    expected = dict(zip(names, (host(h) for h in grad(tsum(sum(tsum(mul(gi, Tensor.constant(v[n])))
                                                              for gi, n in zip(g, names))),
                                                           [params[n] for n in names]))))

    def padded(prefix, arrays):
        out = np.zeros((L, P, P) if prefix == "w" else (L, P))
        for l in range(L):
            a = arrays[f"{prefix}{l}"]
            out[(l,) + tuple(slice(0, s) for s in a.shape)] = a
        return out
    W, b = padded("w", {n: host(p) for n, p in params.items()}), padded("b", {n: host(p) for n, p in params.items()})
    VW, Vb = padded("w", v), padded("b", v)
    WT, VT = np.zeros_like(W), np.zeros_like(VW)
    widths = np.array(sizes)
    k.transpose(W, widths, WT)
    k.transpose(VW, widths, VT)
    A, D = np.zeros((L + 1, N, P)), np.zeros((L, N, P))
    act, cnt = np.zeros((L + 1, N, P), np.int64), np.zeros((L + 1, N), np.int64)
    k.forward(WT, b, widths, x, A, act, cnt)
    k.output_delta(A, y, widths, D)
    k.backward(W, widths, A, act, cnt, D, np.zeros_like(W), np.zeros_like(b))
    HW, Hb = np.zeros_like(W), np.zeros_like(b)
    k.hessian_vector(W, WT, widths, A, act, cnt, D, VW, VT, Vb, np.zeros_like(A), np.zeros_like(D), HW, Hb)
    got = {**{f"w{l}": HW[l, :sizes[l + 1], :sizes[l]] for l in range(L)},
           **{f"b{l}": Hb[l, :sizes[l + 1]] for l in range(L)}}
    assert_close(got, expected, 1e-12)
