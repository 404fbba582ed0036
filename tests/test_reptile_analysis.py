"""The first-order analysis of the Reptile paper (Nichol, Achiam & Schulman, 2018, §5.1),
checked on small tanh MLPs with hypothesis-drawn seeds, widths, shots and step sizes.

One inner step θ' = θ − α g₀⁽⁰⁾ on the support loss L⁽⁰⁾; query loss L⁽¹⁾; gⱼ = ∇L⁽ʲ⁾(θ) at θ
(subscript 0), H₀⁽ʲ⁾ the Hessians at θ; one task (a batch of one), float64.

(a) exactly (chain rule, dθ'/dθ = I − α H₀⁽⁰⁾, Hessian symmetric):
        g_MAML = g_FOMAML − α H₀⁽⁰⁾ g_FOMAML,    g_FOMAML = ∇L⁽¹⁾(θ')
    with the product from ``autograd.hvp``. Bound: relative error (∞-norm, scaled by
    ‖g_MAML‖∞) ≤ 1e-10 — both sides are the same arithmetic up to summation order, so
    only rounding (~1e-15) separates them.
(b) Taylor expansion of g_FOMAML = ∇L⁽¹⁾(θ − α g₀⁽⁰⁾):
        g_FOMAML = g₀⁽¹⁾ − α H₀⁽¹⁾ g₀⁽⁰⁾ + O(α²)
    the remainder r(α) = ‖g_FOMAML − (g₀⁽¹⁾ − α H₀⁽¹⁾ g₀⁽⁰⁾)‖₂ must shrink like α²: over
    α = α₀·(1, ½, ¼, ⅛) the least-squares log-log slope lies in [1.8, 2.2] and
    r(α)/α² varies by less than a factor 1.5. α₀ = 1e-2 / max(1, ‖g₀⁽⁰⁾‖₂), so the inner step
    α₀‖g₀⁽⁰⁾‖ is ≤ 1e-2 and the α³ term stays small beside the α² one; the smallest
    remainder is still ≥ 1e4 × the float64 rounding of the gradients (asserted).
"""
import numpy as np
from hypothesis import assume, given, settings, strategies as st

from autograd import Tensor, grad, hvp
from autograd import functional as F
from helpers import host
from tinymeta.algorithms import MAML
from tinymeta.models import MLP
from tinymeta.tasks import SinusoidTasks

EXACT_RTOL = 1e-10
SETTINGS = settings(max_examples=40, deadline=None)


# ----------------------------------------------------------------------------- helpers
def layout(params):
    names = list(params)
    shapes = [tuple(params[k].shape) for k in names]
    sizes = [int(np.prod(s)) for s in shapes]
    return names, shapes, sizes


def flatten(params, names):
    return np.concatenate([np.ravel(host(params[k])) for k in names])


def unflatten(flat, names, shapes, sizes):
    """Flat vector → {name: array or Tensor}, as np.split + reshape."""
    cuts = np.cumsum(sizes)[:-1]
    if isinstance(flat, Tensor):      # the same split, with differentiable slices
        bounds = zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [sum(sizes)]]))
        return {k: flat[int(a):int(b)].reshape(s) for k, s, (a, b) in zip(names, shapes, bounds)}
    return {k: part.reshape(s) for k, s, part in zip(names, shapes, np.split(flat, cuts))}


def problem(seed, hidden, depth, shots, init_std):
    sizes = [1] + [hidden] * depth + [1]
    model = MLP(sizes, activation="tanh", init_std=init_std)
    params = model.init(np.random.default_rng(seed), dtype=np.float64)
    batch = SinusoidTasks().sample(np.random.default_rng(seed + 1), tasks=1, shots=shots)
    names, shapes, sizes_ = layout(params)

    def loss(which):
        x, y = Tensor(getattr(batch, which + "_x")[0]), Tensor(getattr(batch, which + "_y")[0])
        return lambda flat: F.mse_loss(model(unflatten(flat, names, shapes, sizes_), x), y)

    return model, params, batch, (names, shapes, sizes_), loss("support"), loss("query")


def flat_grad(f, theta):
    t = Tensor(theta, requires_grad=True)
    return host(grad(f(t), t))


def meta_grad(model, params, batch, alpha, first_order, names):
    learner = MAML(model, params, F.mse_loss, inner_lr=alpha, inner_steps=1, first_order=first_order)
    _, grads = learner.meta_gradients(batch)
    return flatten({k: host(g) for k, g in grads.items()}, names)


problems = dict(seed=st.integers(0, 2**31 - 1), hidden=st.integers(2, 6), depth=st.integers(1, 2),
                shots=st.integers(2, 6), init_std=st.floats(0.3, 1.0))


# ----------------------------------------------------------------------------- (a)
@SETTINGS
@given(alpha=st.floats(1e-3, 0.3), **problems)
def test_maml_gradient_is_fomaml_minus_hessian_correction(seed, hidden, depth, shots, init_std, alpha):
    model, params, batch, (names, shapes, sizes), support, query = problem(seed, hidden, depth, shots, init_std)
    theta = flatten(params, names)

    # the helper is a faithful view of the parameters
    back = unflatten(theta, names, shapes, sizes)
    assert all(np.array_equal(back[k], host(params[k])) for k in names)

    g_maml = meta_grad(model, params, batch, alpha, False, names)
    g_fo = meta_grad(model, params, batch, alpha, True, names)
    _, (h0_gfo,) = hvp(support, [theta], [g_fo])                      # H₀⁽⁰⁾ g_FOMAML
    predicted = g_fo - alpha * host(h0_gfo)
    scale = np.abs(g_maml).max()
    correction = np.abs(alpha * host(h0_gfo)).max()
    assume(correction > 1e-6 * scale)         # otherwise the identity would hold vacuously
    err = np.abs(g_maml - predicted).max() / scale
    assert err <= EXACT_RTOL, f"g_MAML vs g_FO − α H g_FO: relative error {err:.2e}"

    # and g_FOMAML is ∇L⁽¹⁾ at θ' = θ − α ∇L⁽⁰⁾(θ), computed here from the flat functions
    theta_prime = theta - alpha * flat_grad(support, theta)
    ref = flat_grad(query, theta_prime)
    assert np.abs(g_fo - ref).max() <= EXACT_RTOL * np.abs(ref).max()


# ----------------------------------------------------------------------------- (b)
@SETTINGS
@given(**problems)
def test_fomaml_gradient_expansion_remainder_is_second_order(seed, hidden, depth, shots, init_std):
    model, params, batch, (names, shapes, sizes), support, query = problem(seed, hidden, depth, shots, init_std)
    theta = flatten(params, names)
    g0_support = flat_grad(support, theta)                             # g₀⁽⁰⁾
    g0_query = flat_grad(query, theta)                                 # g₀⁽¹⁾
    _, (h1_g0,) = hvp(query, [theta], [g0_support])                    # H₀⁽¹⁾ g₀⁽⁰⁾
    alpha0 = 1e-2 / max(1.0, np.linalg.norm(g0_support))
    alphas = alpha0 * np.array([1.0, 0.5, 0.25, 0.125])
    remainders = []
    for a in alphas:
        g_fo = meta_grad(model, params, batch, a, True, names)
        remainders.append(np.linalg.norm(g_fo - (g0_query - a * host(h1_g0))))
    remainders = np.array(remainders)
    rounding = 1e-16 * max(np.linalg.norm(g0_query), 1.0) * np.sqrt(theta.size)
    assume(remainders[-1] > 1e4 * rounding)   # a curvature-free draw would measure only rounding

    slope = np.polyfit(np.log(alphas), np.log(remainders), 1)[0]
    ratios = remainders / alphas ** 2
    assert 1.8 <= slope <= 2.2, f"remainder slope {slope:.3f}, remainders {remainders}"
    assert ratios.max() / ratios.min() < 1.5, f"r(α)/α² not bounded: {ratios}"
    # and the first-order term matters: without it the error would be O(α), not O(α²)
    first = np.linalg.norm(alphas[-1] * host(h1_g0))
    assert first > 10 * remainders[-1] or first < 1e-12
