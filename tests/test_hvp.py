"""Hessian-vector products (double backward), Jacobian-vector products and vjp.

Tolerances (stated once for the whole file); "relative" means ‖a − b‖∞ / max(‖a‖∞, ‖b‖∞):
  * symmetry u·Hv = v·Hu and duality u·Jv = (Jᵀu)·v: 1e-8 relative to the sum of the
    products' sizes, Σ|u|·|Hv| (the two sides are the same sum of products taken in another
    order: only rounding differs, and it scales with the terms, not with a sum that may
    cancel to nearly 0);
  * linearity H(a v + b w) = a Hv + b Hw: relative 1e-8 (same reason);
  * H v against a central difference of the analytic gradient, (∇f(x+εv) − ∇f(x−εv))/2ε
    with ε = 1e-5: relative 1e-6 (truncation ε²·f''' ≈ 1e-10, rounding 1e-16/ε ≈ 1e-11);
  * quadratic forms f = xᵀAx: H v = (A + Aᵀ) v to 1e-12 absolute on O(1) entries (exact
    arithmetic up to rounding: no approximation is involved);
  * full Hessian assembled from HVPs with unit vectors against central second differences
    of f *values*: relative 1e-5. Second differences divide by h², so they lose about
    twice as many digits as first differences: with h = 1e-4 the rounding term is
    ~1e-16·|f|/h² ≈ 1e-8·|f| and the truncation term h²·f''''/12 ≈ 1e-9; 1e-5 keeps a wide
    margin over both while still catching any wrong entry (errors there are O(1)).
    The Hessian's symmetry is checked to relative 1e-10;
  * jvp against a central difference of f (ε = 1e-5): relative 1e-6; vjp against an explicit
    Jacobian: relative 1e-12.
ReLU networks draw inputs whose pre-activations are at least 0.05 from the kink, far beyond
the ±ε·‖v‖∞ reach of every finite difference used here.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import autograd as ag
from autograd import Tensor
from autograd import functional as F
from helpers import host

SOME = settings(max_examples=min(10, settings.default.max_examples))
FEW = settings(max_examples=min(5, settings.default.max_examples))
seeds = st.integers(0, 2**32 - 1)
EPS = 1e-5


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1e-300)
    return float(np.abs(a - b).max(initial=0) / scale)


def softplus(z):
    return ag.log(ag.exp(z) + 1.0)


ACTS = {"tanh": ag.tanh, "softplus": softplus, "sigmoid": ag.sigmoid, "relu": ag.relu}


# ----------------------------------------------------------------------------- models
class MLP:
    """Two-layer net; f(W1, b1, W2, b2) = loss on fixed data."""

    def __init__(self, rng, n, d_in, hidden, d_out, act, loss):
        self.act, self.loss = act, loss
        self.x = rng.standard_normal((n, d_in))
        self.params = [rng.standard_normal((hidden, d_in)), rng.standard_normal(hidden) * 0.5,
                       rng.standard_normal((d_out, hidden)), rng.standard_normal(d_out) * 0.5]
        self.y = rng.integers(0, d_out, n) if loss == "ce" else rng.standard_normal((n, d_out))
        if act == "relu":
            pre = self.x @ self.params[0].T + self.params[1]
            self.ok = np.abs(pre).min() > 0.05              # away from the kink
        else:
            self.ok = True

    def __call__(self, w1, b1, w2, b2):
        h = ACTS[self.act](F.linear(Tensor(self.x), w1, b1))
        out = F.linear(h, w2, b2)
        return F.cross_entropy(out, self.y) if self.loss == "ce" else F.mse_loss(out, self.y)


class ConvNet:
    """conv2d + tanh + linear head + loss; f(K, c, W, b)."""

    def __init__(self, rng, n, c, o, hw, k, classes, loss):
        self.loss = loss
        self.x = rng.standard_normal((n, c, hw, hw))
        oh = hw - k + 1
        self.params = [rng.standard_normal((o, c, k, k)) * 0.5, rng.standard_normal(o) * 0.1,
                       rng.standard_normal((classes, o * oh * oh)) * 0.5, rng.standard_normal(classes) * 0.1]
        self.y = rng.integers(0, classes, n) if loss == "ce" else rng.standard_normal((n, classes))
        self.ok = True

    def __call__(self, kw, kb, w, b):
        h = ag.tanh(F.conv2d(Tensor(self.x), kw, kb))
        h = h.reshape(h.shape[0], -1)
        out = F.linear(h, w, b)
        return F.cross_entropy(out, self.y) if self.loss == "ce" else F.mse_loss(out, self.y)


@st.composite
def models(draw):
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    loss = draw(st.sampled_from(["ce", "mse"]))
    if draw(st.sampled_from(["mlp", "conv"])) == "conv":
        model = ConvNet(rng, draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2)),
                        draw(st.integers(3, 4)), draw(st.integers(1, 2)), draw(st.integers(2, 3)), loss)
    else:
        model = MLP(rng, draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 4)),
                    draw(st.integers(2, 3)), draw(st.sampled_from(sorted(ACTS))), loss)
    assume(model.ok)
    return model, rng


def analytic_grad(f, arrays):
    xs = [Tensor(a, requires_grad=True) for a in arrays]
    return [host(g) for g in ag.grad(f(*xs), xs)]


def dot(us, vs):
    return float(sum(np.sum(np.asarray(u) * np.asarray(v)) for u, v in zip(us, vs)))


def data(ts):
    return [host(t) for t in ts]


def dot_scale(us, vs):
    """Σ|u|·|v|: the size of the terms of dot(us, vs), which its rounding error scales with."""
    return float(sum(np.sum(np.abs(np.asarray(u)) * np.abs(np.asarray(v))) for u, v in zip(us, vs)))


# ----------------------------------------------------------------------------- properties
@SOME
@given(mv=models())
def test_hvp_symmetry(mv):
    model, rng = mv
    u = [rng.standard_normal(p.shape) for p in model.params]
    v = [rng.standard_normal(p.shape) for p in model.params]
    _, hv = ag.hvp(model, model.params, v)
    _, hu = ag.hvp(model, model.params, u)
    a, b = dot(u, data(hv)), dot(v, data(hu))
    assert abs(a - b) <= 1e-8 * max(dot_scale(u, data(hv)), dot_scale(v, data(hu)), 1e-300)


@SOME
@given(mv=models(), a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_hvp_linear_in_v(mv, a, b):
    model, rng = mv
    v = [rng.standard_normal(p.shape) for p in model.params]
    w = [rng.standard_normal(p.shape) for p in model.params]
    _, hv = ag.hvp(model, model.params, v)
    _, hw = ag.hvp(model, model.params, w)
    _, hc = ag.hvp(model, model.params, [a * vi + b * wi for vi, wi in zip(v, w)])
    combined = np.concatenate([(a * host(x) + b * host(y)).ravel() for x, y in zip(hv, hw)])
    direct = np.concatenate([host(z).ravel() for z in hc])
    scale_ref = np.concatenate([np.abs(a * host(x)).ravel() + np.abs(b * host(y)).ravel()
                                for x, y in zip(hv, hw)])
    # relative to the size of the terms (a cancellation a·Hv ≈ −b·Hw must not divide by ~0)
    assert np.abs(combined - direct).max() <= 1e-8 * max(scale_ref.max(), 1e-12)


@SOME
@given(mv=models())
def test_hvp_matches_finite_difference_of_gradient(mv):
    model, rng = mv
    v = [rng.standard_normal(p.shape) for p in model.params]
    value, hv = ag.hvp(model, model.params, v)
    np.testing.assert_allclose(host(value), host(model(*[Tensor(p) for p in model.params])), rtol=1e-14)
    plus = analytic_grad(model, [p + EPS * vi for p, vi in zip(model.params, v)])
    minus = analytic_grad(model, [p - EPS * vi for p, vi in zip(model.params, v)])
    fd = np.concatenate([((gp - gm) / (2 * EPS)).ravel() for gp, gm in zip(plus, minus)])
    assert rel(np.concatenate([host(h).ravel() for h in hv]), fd) <= 1e-6


@SOME
@given(n=st.integers(1, 6), seed=seeds)
def test_hvp_quadratic_form_is_exact(n, seed):
    rng = np.random.default_rng(seed)
    A, x, v = rng.standard_normal((n, n)), rng.standard_normal(n), rng.standard_normal(n)

    def f(x):
        col = x.reshape(n, 1)
        return (col.T @ Tensor(A) @ col).sum()             # xᵀ A x
    value, (hv,) = ag.hvp(f, [x], [v])
    np.testing.assert_allclose(value.item(), x @ A @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(hv), (A + A.T) @ v, rtol=0, atol=1e-12)


def test_hvp_of_linear_function_is_zero_and_unused_inputs_get_zeros():
    x, y = np.array([1.0, 2.0]), np.array([3.0])
    _, (hx, hy) = ag.hvp(lambda a, b: (a * 3.0).sum(), [x, y], [np.ones(2), np.ones(1)])
    np.testing.assert_array_equal(host(hx), 0.0)
    np.testing.assert_array_equal(host(hy), 0.0)


# ----------------------------------------------------------------------------- full Hessian
def tiny_net(theta, x, t, act):
    """A 2-3-1 tanh/softplus net whose 13 parameters live in one flat vector."""
    w1 = theta[0:6].reshape(3, 2)
    b1 = theta[6:9]
    w2 = theta[9:12].reshape(1, 3)
    b2 = theta[12:13]
    h = ACTS[act](F.linear(Tensor(x), w1, b1))
    return F.mse_loss(F.linear(h, w2, b2), t)


@pytest.mark.parametrize("act", ["tanh", "softplus", "relu"])
@FEW
@given(seed=seeds)
def test_full_hessian_from_hvps_matches_second_differences(act, seed):
    rng = np.random.default_rng(seed)
    x, t = rng.standard_normal((4, 2)), rng.standard_normal((4, 1))
    theta = rng.standard_normal(13)
    if act == "relu":
        pre = x @ theta[0:6].reshape(3, 2).T + theta[6:9]
        assume(np.abs(pre).min() > 0.05)
    f = lambda th: tiny_net(th, x, t, act)               # noqa: E731
    n = theta.size
    H = np.stack([host(ag.hvp(f, [theta], [np.eye(n)[i]])[1][0]) for i in range(n)], axis=1)

    def val(th):
        return f(Tensor(th)).item()
    h = 1e-4
    E = np.eye(n) * h
    fd = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            fd[i, j] = fd[j, i] = (val(theta + E[i] + E[j]) - val(theta + E[i] - E[j])
                                   - val(theta - E[i] + E[j]) + val(theta - E[i] - E[j])) / (4 * h * h)
    assert rel(H, fd) <= 1e-5
    assert rel(H, H.T) <= 1e-10


# ----------------------------------------------------------------------------- jvp / vjp
def smooth_map(a, b):
    """R^(2x3) x R^3 -> R^(2x2): a vector-valued smooth function of two inputs."""
    y = ag.tanh(a * b) @ ag.swapaxes(a, 0, 1)
    return y + ag.exp(b).sum() * 0.1


@SOME
@given(seed=seeds)
def test_jvp_matches_finite_difference_and_vjp_duality(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal(3)
    va, vb = rng.standard_normal((2, 3)), rng.standard_normal(3)
    u = rng.standard_normal((2, 2))
    value, jv = ag.jvp(smooth_map, [a, b], [va, vb])
    f = lambda a, b: host(smooth_map(Tensor(a), Tensor(b)))      # noqa: E731
    np.testing.assert_allclose(host(value), f(a, b), rtol=1e-14)
    fd = (f(a + EPS * va, b + EPS * vb) - f(a - EPS * va, b - EPS * vb)) / (2 * EPS)
    assert jv.shape == (2, 2)
    assert rel(host(jv), fd) <= 1e-6
    _, (ja, jb) = ag.vjp(smooth_map, [a, b], u)
    left, right = float(np.sum(u * host(jv))), dot([host(ja), host(jb)], [va, vb])
    scale = max(dot_scale([u], [host(jv)]), dot_scale([host(ja), host(jb)], [va, vb]), 1e-300)
    assert abs(left - right) <= 1e-8 * scale


@SOME
@given(m=st.integers(1, 4), n=st.integers(1, 4), seed=seeds)
def test_vjp_and_jvp_of_a_linear_map_are_exact(m, n, seed):
    rng = np.random.default_rng(seed)
    A, x, u, v = (rng.standard_normal(s) for s in ((m, n), (n, 1), (m, 1), (n, 1)))
    value, (g,) = ag.vjp(lambda x: Tensor(A) @ x, [x], u)
    np.testing.assert_allclose(host(value), A @ x, rtol=1e-12, atol=1e-12)
    assert rel(host(g), A.T @ u) <= 1e-12
    _, jv = ag.jvp(lambda x: Tensor(A) @ x, [x], [v])
    assert rel(host(jv), A @ v) <= 1e-12


@SOME
@given(mv=models())
def test_vjp_of_scalar_loss_is_the_gradient(mv):
    model, _ = mv
    value, gs = ag.vjp(model, model.params, np.ones(()))
    for g, expected in zip(gs, analytic_grad(model, model.params)):
        assert rel(host(g), expected) <= 1e-12


def test_jvp_of_constant_output_is_zero():
    value, jv = ag.jvp(lambda x: Tensor(np.ones(3)) * 2.0, [np.ones(2)], [np.ones(2)])
    np.testing.assert_array_equal(host(jv), 0.0)
    assert jv.shape == (3,)
