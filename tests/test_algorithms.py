"""Meta-gradients of MAML / FOMAML / ANIL / Meta-SGD and Reptile's update, checked against
finite differences of the meta-objective and against independent re-implementations.

Tolerances (stated once for the whole file, everything in float64):
  * finite-difference checks: relative error
        ‖analytic − numeric‖∞ / max(‖analytic‖∞, ‖numeric‖∞)     (over all checked entries)
    must be ≤ RTOL_FD = 1e-6.
      - tanh MLP (smooth): five-point central stencil, h = 2.5e-4. Truncation error is
        O(h⁴)·|f⁽⁵⁾|; through 3 inner steps the meta-loss has large high derivatives (the
        measured error falls 16× per halving of h: 2e-8 at h = 1e-3, 9e-11 at h = 2.5e-4),
        while rounding stays ≈ 1e-16 · |f| / h ≈ 2e-12: about four orders under 1e-6.
      - Conv4 (ReLU + batch-norm): two-point central difference, h = 1e-5. ReLU makes the
        meta-loss only piecewise smooth, so the stencil must stay tiny to never cross a kink;
        truncation ≈ h²/6 · |f'''| ≈ 1e-11 and rounding ≈ 1e-16 · |f| / h ≈ 1e-11, still
        ≥ 4 orders under 1e-6. Every conv FD evaluation also asserts that the ReLU masks at
        θ ± h·e equal those at θ, i.e. no kink was crossed (so a failure is never a kink
        artefact). With the fixed seeds below none is crossed.
    The conv net is checked along 3 random directions (directional derivative
    ⟨∇L, v⟩ vs [L(θ + hv) − L(θ − hv)] / 2h) plus a fixed random subset of entries,
    since the full FD over ~530 parameters costs ~1000 meta-loss evaluations.
  * comparisons with independent re-implementations of the same arithmetic (FOMAML, Reptile
    SGD, inner_steps=0): rtol 1e-10 with atol 1e-12·scale (only the summation order
    differs, ~1e-15); Reptile-Adam likewise (our Adam is the textbook m̂/(√v̂ + ε) form, the
    library's is the algebraically equal folded form of Kingma & Ba §2).
The tiny-array numpy kernels are used for convolutions (module fixture) because numba's
thread start-up dominates on 8×8 images; the kernels are checked elsewhere.
"""
import numpy as np
import pytest

from autograd import Tensor, backend, grad
from autograd import functional as F
from helpers import host
from tinymeta.algorithms import ANIL, MAML, MetaSGD, Reptile
from tinymeta.models import MLP, Conv4
from tinymeta.tasks import EpisodeSampler, SinusoidTasks

RTOL_FD = 1e-6
H_SMOOTH = 2.5e-4    # five-point stencil, tanh MLP
H_CONV = 1e-5        # two-point stencil, ReLU conv net
REIMPL = dict(rtol=1e-10)


pytestmark = pytest.mark.usefixtures("numpy_kernels")   # conftest.py


# ----------------------------------------------------------------------------- problems
def mlp_problem(seed=0, tasks=3, shots=5, sizes=(1, 8, 8, 1)):
    model = MLP(list(sizes), activation="tanh", init_std=0.5)
    params = model.init(np.random.default_rng(seed), dtype=np.float64)
    batch = SinusoidTasks().sample(np.random.default_rng(seed + 100), tasks=tasks, shots=shots)
    return model, params, batch, F.mse_loss


def class_images(seed, n_classes=5, n_examples=6, size=8):
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((n_classes, 1, size, size))
    return prototypes + 0.3 * rng.standard_normal((n_classes, n_examples, size, size))


def conv_problem(seed=0, tasks=2):
    model = Conv4(ways=3, in_channels=1, filters=4, image_size=8)
    params = model.init(np.random.default_rng(seed), dtype=np.float64)
    sampler = EpisodeSampler(class_images(seed + 1), ways=3, shots=2, queries=2,
                             rng=seed + 2, dtype=np.float64)
    return model, params, sampler.sample_batch(tasks), F.cross_entropy


PROBLEMS = {"mlp": mlp_problem, "conv": conv_problem}


def copy_params(params):
    return {k: Tensor(v.data.copy(), requires_grad=True) for k, v in params.items()}


def rel_err(a, n):
    a, n = np.concatenate([np.ravel(host(x)) for x in a]), np.concatenate([np.ravel(host(x)) for x in n])
    scale = max(np.abs(a).max(), np.abs(n).max())
    assert scale > 0
    return float(np.abs(a - n).max() / scale)


# ----------------------------------------------------------------------------- ReLU guard
class ReluMasks:
    """Record every ReLU input's sign pattern during a forward pass (Conv4 calls F.relu)."""

    def __init__(self, monkeypatch):
        self.masks = None
        real = F.relu

        def recording(x):
            if self.masks is not None:
                self.masks.append(host(x) > 0)
            return real(x)
        monkeypatch.setattr(F, "relu", recording)

    def run(self, f):
        self.masks = []
        try:
            value = f()
            return value, self.masks
        finally:
            self.masks = None


def same_masks(m1, m2):
    return len(m1) == len(m2) and all(np.array_equal(a, b) for a, b in zip(m1, m2))


# ----------------------------------------------------------------------------- finite differences
def meta_loss_fn(learner, batch):
    return lambda: float(learner.meta_loss(batch).data)


def fd_entry(f, array, idx, h, five_point, guard=None):
    """∂f/∂array[idx] by a central difference; array is perturbed in place and restored.
    The entry is read as a number: on CuPy ``array[idx]`` is a 0-d view, which would follow
    the perturbations."""
    original = float(array[idx])
    base_masks = guard.run(f)[1] if guard else None

    def at(step):
        array[idx] = original + step
        if guard is None:
            return f()
        value, masks = guard.run(f)
        assert same_masks(masks, base_masks), f"ReLU kink crossed at entry {idx}; pick another seed"
        return value
    try:
        if five_point:
            return (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
        return (at(h) - at(-h)) / (2 * h)
    finally:
        array[idx] = original


def fd_directional(f, tensors, directions, h, guard):
    """[f(θ + hv) − f(θ − hv)] / 2h, every tensor perturbed in place and restored."""
    originals = [host(t).copy() for t in tensors]
    base_masks = guard.run(f)[1]
    values = []
    try:
        for s in (h, -h):
            for t, o, d in zip(tensors, originals, directions):
                t.data[...] = backend.from_numpy(o + s * d)
            value, masks = guard.run(f)
            assert same_masks(masks, base_masks), "ReLU kink crossed along the direction; pick another seed"
            values.append(value)
    finally:
        for t, o in zip(tensors, originals):
            t.data[...] = backend.from_numpy(o)
    return (values[0] - values[1]) / (2 * h)


def check_full_fd(learner, batch, tensors, grads):
    """Every entry of ``tensors`` (dict name → Tensor), five-point stencil (smooth models)."""
    f = meta_loss_fn(learner, batch)
    analytic, numeric = [], []
    for k, t in tensors.items():
        n = np.zeros(t.shape)
        for idx in np.ndindex(t.shape):
            n[idx] = fd_entry(f, t.data, idx, H_SMOOTH, five_point=True)
        analytic.append(grads[k].data)
        numeric.append(n)
    err = rel_err(analytic, numeric)
    assert err <= RTOL_FD, f"meta-gradient vs finite differences: relative error {err:.2e}"
    return err


def check_sparse_fd(learner, batch, tensors, grads, monkeypatch, seed=0, per_tensor=3, directions=3):
    """Conv net: ``directions`` random directional derivatives plus ``per_tensor`` random
    entries of each tensor, two-point stencil h = 1e-5 with the ReLU-mask guard."""
    guard = ReluMasks(monkeypatch)
    f = meta_loss_fn(learner, batch)
    rng = np.random.default_rng(seed)
    names = list(tensors)
    for _ in range(directions):
        dirs = [rng.standard_normal(tensors[k].shape) for k in names]
        norm = np.sqrt(sum((d * d).sum() for d in dirs))
        dirs = [d / norm for d in dirs]
        a = sum(float((host(grads[k]) * d).sum()) for k, d in zip(names, dirs))
        n = fd_directional(f, [tensors[k] for k in names], dirs, H_CONV, guard)
        err = abs(a - n) / max(abs(a), abs(n))
        assert err <= RTOL_FD, f"directional derivative {a!r} vs FD {n!r}: relative error {err:.2e}"
    analytic, numeric = [], []
    for k in names:
        t = tensors[k]
        for j in rng.choice(t.size, size=min(per_tensor, t.size), replace=False):
            idx = np.unravel_index(j, t.shape)
            analytic.append(host(grads[k])[idx])
            numeric.append(fd_entry(f, t.data, idx, H_CONV, five_point=False, guard=guard))
    err = rel_err([np.array(analytic)], [np.array(numeric)])
    assert err <= RTOL_FD, f"sampled entries vs finite differences: relative error {err:.2e}"


def check_fd(kind, learner, batch, tensors, grads, monkeypatch):
    if kind == "mlp":
        check_full_fd(learner, batch, tensors, grads)
    else:
        check_sparse_fd(learner, batch, tensors, grads, monkeypatch)


INNER_LR = {"mlp": 0.02, "conv": 0.1}


# ----------------------------------------------------------------------------- MAML
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_maml_meta_gradient_matches_finite_differences(kind, steps, monkeypatch):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    learner = MAML(model, params, loss_fn, inner_lr=INNER_LR[kind], inner_steps=steps)
    loss, grads = learner.meta_gradients(batch)
    assert float(loss.data) == pytest.approx(float(learner.meta_loss(batch).data), rel=1e-14)
    assert all(g is not None for g in grads.values())
    check_fd(kind, learner, batch, params, grads, monkeypatch)

    # the check has teeth: the second-order part is far above the FD tolerance
    fo = MAML(model, params, loss_fn, inner_lr=INNER_LR[kind], inner_steps=steps, first_order=True)
    _, fo_grads = fo.meta_gradients(batch)
    diff = rel_err([grads[k].data for k in params], [fo_grads[k].data for k in params])
    assert diff > 1e-3, f"MAML and FOMAML differ by only {diff:.1e}: the test would not see second order"


# ----------------------------------------------------------------------------- FOMAML
def independent_fomaml(model, loss_fn, params, batch, lr, steps):
    """Adapt each task with plain SGD on detached tensors, then ∇ of the query loss at θ'ᵢ."""
    T = len(batch.support_x)
    total = {k: np.zeros(v.shape) for k, v in params.items()}
    losses = []
    for t in range(T):
        w = {k: Tensor(v.data.copy(), requires_grad=True) for k, v in params.items()}
        xs, ys = Tensor(batch.support_x[t]), Tensor(batch.support_y[t])
        for _ in range(steps):
            names = list(w)
            gs = grad(loss_fn(model(w, xs), ys), [w[k] for k in names])
            w = {k: Tensor(w[k].data - lr * g.data, requires_grad=True) for k, g in zip(names, gs)}
        names = list(w)
        q = loss_fn(model(w, Tensor(batch.query_x[t])), Tensor(batch.query_y[t]))
        losses.append(float(q.data))
        for k, g in zip(names, grad(q, [w[k] for k in names])):
            total[k] += host(g) / T
    return float(np.mean(losses)), total


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_fomaml_gradient_is_query_gradient_at_adapted_parameters(kind, steps):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    lr = INNER_LR[kind]
    learner = MAML(model, params, loss_fn, inner_lr=lr, inner_steps=steps, first_order=True)
    loss, grads = learner.meta_gradients(batch)
    ref_loss, ref = independent_fomaml(model, loss_fn, params, batch, lr, steps)
    assert float(loss.data) == pytest.approx(ref_loss, rel=1e-12)
    scale = max(np.abs(g).max() for g in ref.values())
    for k in params:
        np.testing.assert_allclose(host(grads[k]), ref[k], atol=1e-12 * scale, **REIMPL, err_msg=k)

    # the same through the library's own inner loop: adapt without a graph, detach θ'ᵢ,
    # take a fresh gradient of the query loss there, average over tasks
    xs, ys = learner.inputs(batch, "support")
    xq, yq = learner.inputs(batch, "query")
    T = learner.n_tasks(batch)
    via_adapt = {k: np.zeros(v.shape) for k, v in params.items()}
    for t in range(T):
        fast = learner.inner_loop(params, xs[t], ys[t], steps, create_graph=False)
        fast = {k: Tensor(v.data.copy(), requires_grad=True) for k, v in fast.items()}
        names = list(fast)
        gs = grad(learner.task_losses(fast, xq[t], yq[t]), [fast[k] for k in names])
        for k, g in zip(names, gs):
            via_adapt[k] += host(g) / T
    for k in params:
        np.testing.assert_allclose(host(grads[k]), via_adapt[k], atol=1e-12 * scale, **REIMPL, err_msg=k)


# ----------------------------------------------------------------------------- ANIL
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_anil_inner_loop_leaves_body_untouched(kind, batched):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    learner = ANIL(model, params, loss_fn, inner_lr=INNER_LR[kind], inner_steps=2, batched=batched)
    xs, ys = learner.inputs(batch, "support")
    head = set(model.head)
    if batched:
        from tinymeta.parameters import broadcast_to_tasks
        T = learner.n_tasks(batch)
        fast = learner.inner_loop(broadcast_to_tasks(params, T), xs, ys, 2, create_graph=True)
        runs = [(fast, T)]
    else:
        runs = [(learner.inner_loop(params, xs[t], ys[t], 2, create_graph=True), None) for t in range(len(batch.support_x))]
    for fast, T in runs:
        for k, p in params.items():
            expected = host(p) if T is None else np.broadcast_to(host(p), (T,) + p.shape)
            if k in head:
                assert np.abs(host(fast[k]) - expected).max() > 1e-6, f"head {k} was not adapted"
            else:
                assert np.array_equal(host(fast[k]), expected), f"body {k} changed in the inner loop"


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_anil_meta_gradient_reaches_body_and_matches_finite_differences(kind, monkeypatch):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    learner = ANIL(model, params, loss_fn, inner_lr=INNER_LR[kind], inner_steps=2)
    assert set(learner.adapted_names()) == set(model.head)
    _, grads = learner.meta_gradients(batch)
    # the body's weights (conv biases before batch-norm have an exactly zero gradient)
    body = [k for k in params if k not in model.head and not (k.startswith("conv") and k.endswith(".b"))]
    for k in body:
        assert grads[k] is not None and np.abs(host(grads[k])).max() > 1e-6, f"no meta-gradient reaches {k}"
    check_fd(kind, learner, batch, params, grads, monkeypatch)


# ----------------------------------------------------------------------------- Meta-SGD
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_metasgd_step_sizes_get_the_finite_difference_gradient(kind, monkeypatch):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    lr = INNER_LR[kind]
    learner = MetaSGD(model, params, loss_fn, inner_lr=lr, inner_steps=1)
    rng = np.random.default_rng(5)
    for a in learner.alpha.values():                  # non-uniform step sizes around lr
        a.data[...] = backend.from_numpy(lr * rng.uniform(0.5, 1.5, size=a.shape))
    _, grads = learner.meta_gradients(batch)
    assert set(grads) == set(params) | set(learner.alpha)
    check_fd(kind, learner, batch, learner.alpha, grads, monkeypatch)
    if kind == "mlp":                                  # θ too, with the learned α in place
        check_full_fd(learner, batch, params, grads)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_metasgd_with_uniform_alpha_equals_maml(kind, steps):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    lr = INNER_LR[kind]
    msgd = MetaSGD(model, params, loss_fn, inner_lr=lr, inner_steps=steps)
    maml = MAML(model, params, loss_fn, inner_lr=lr, inner_steps=steps)
    l1, g1 = msgd.meta_gradients(batch)
    l2, g2 = maml.meta_gradients(batch)
    assert float(l1.data) == pytest.approx(float(l2.data), rel=1e-13)
    scale = max(np.abs(host(g)).max() for g in g2.values())
    for k in params:
        np.testing.assert_allclose(host(g1[k]), host(g2[k]), rtol=1e-12, atol=1e-13 * scale, err_msg=k)


# ----------------------------------------------------------------------------- Reptile
def own_adam(w, g, state, t, lr, beta1, beta2, eps=1e-8):
    m, v = state
    m[...] = beta1 * m + (1 - beta1) * g
    v[...] = beta2 * v + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps)


def own_task_weights(model, loss_fn, params, batch, lr, steps, optimizer, betas):
    Ws = []
    for t in range(len(batch.support_x)):
        w = {k: host(v).copy() for k, v in params.items()}
        state = {k: (np.zeros_like(a), np.zeros_like(a)) for k, a in w.items()}
        # Reptile trains on all of a task's examples: support, then query
        xs = Tensor(np.concatenate([batch.support_x[t], batch.query_x[t]]))
        ys = Tensor(np.concatenate([batch.support_y[t], batch.query_y[t]]))
        for step in range(1, steps + 1):
            leaves = {k: Tensor(a, requires_grad=True) for k, a in w.items()}
            names = list(leaves)
            gs = grad(loss_fn(model(leaves, xs), ys), [leaves[k] for k in names])
            for k, g in zip(names, gs):
                if optimizer == "sgd":
                    w[k] = w[k] - lr * host(g)
                else:
                    w[k] = own_adam(w[k], host(g), state[k], step, lr, *betas)
        Ws.append(w)
    return Ws


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("optimizer,betas", [("sgd", None), ("adam", (0.0, 0.999)), ("adam", (0.9, 0.99))])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_reptile_update_matches_definition(kind, optimizer, betas, batched):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    theta = {k: host(v).copy() for k, v in params.items()}
    lr, steps, eps = (0.01 if optimizer == "adam" else INNER_LR[kind]), 4, 0.3
    kwargs = {} if betas is None else {"adam_betas": betas}
    learner = Reptile(model, params, loss_fn, inner_lr=lr, inner_steps=steps, outer_lr=eps,
                      inner_optimizer=optimizer, batched=batched, **kwargs)
    Ws = own_task_weights(model, loss_fn, params, batch, lr, steps, optimizer, betas or (0.0, 0.999))
    # the returned loss, as for every learner: the mean query loss after adaptation (at Wᵢ)
    after = np.mean([float(loss_fn(model({k: Tensor(a) for k, a in W.items()}, Tensor(batch.query_x[t])),
                                   Tensor(batch.query_y[t])).data) for t, W in enumerate(Ws)])
    returned = learner.step(batch)
    assert returned["loss"] == pytest.approx(after, rel=1e-12)
    expected = {k: theta[k] + eps * np.mean([W[k] - theta[k] for W in Ws], axis=0)   # θ + ε·mean(Wᵢ − θ)
                for k in params}
    scale = max(np.abs(expected[k] - theta[k]).max() for k in params)   # the largest move
    for k in params:
        if kind == "conv" and k.startswith("conv") and k.endswith(".b"):
            # a conv bias feeding batch-norm has an exactly zero gradient (BN subtracts the
            # mean); its computed gradient is rounding noise (~1e-17) which Adam rescales by
            # lr/ε = 1e6, so both sides move it by noise only: just check it hardly moves.
            assert np.abs(host(params[k]) - theta[k]).max() < 1e-8 * max(scale, 1.0), k
            continue
        np.testing.assert_allclose(host(params[k]), expected[k], atol=1e-12 * scale, **REIMPL, err_msg=k)


def test_reptile_default_adam_betas_are_the_papers():
    """Nichol et al. use Adam with β₁ = 0 in the inner loop."""
    model, params, _, loss_fn = mlp_problem()
    assert Reptile(model, params, loss_fn, inner_optimizer="adam").adam_betas[0] == 0.0


# ----------------------------------------------------------------------------- inner_steps = 0
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_zero_inner_steps_gives_plain_query_gradient(kind, first_order):
    model, params, batch, loss_fn = PROBLEMS[kind]()
    learner = MAML(model, params, loss_fn, inner_lr=INNER_LR[kind], inner_steps=0, first_order=first_order)
    loss, grads = learner.meta_gradients(batch)
    ref_loss, ref = independent_fomaml(model, loss_fn, params, batch, lr=INNER_LR[kind], steps=0)
    assert float(loss.data) == pytest.approx(ref_loss, rel=1e-12)
    scale = max(np.abs(g).max() for g in ref.values())
    for k in params:
        np.testing.assert_allclose(host(grads[k]), ref[k], atol=1e-12 * scale, **REIMPL, err_msg=k)


def test_negative_inner_steps_rejected():
    model, params, _, loss_fn = mlp_problem()
    with pytest.raises(ValueError, match="inner_steps"):
        MAML(model, params, loss_fn, inner_steps=-1)
