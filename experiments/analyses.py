"""Analyses of why MAML works, each an experiment with a figure and a JSON file.

    python -m experiments.analyses taylor [--out experiments/results/analyses]
    python -m experiments.analyses reuse --data-dir DATA [--checkpoint FILE] [--tasks 200]
    python -m experiments.analyses trainval [--iterations 3000]
    python -m experiments.analyses trainval-omniglot --data-dir DATA [--iterations 1000] [--tasks 600]
    python -m experiments.analyses imaml-cg --checkpoint RUN/best.npz --data-dir DATA [--tasks 64]

``taylor``: the Taylor expansion of Nichol, Achiam & Schulman (2018, §5.1). One task, a
support loss L⁰ and a query loss L¹ on a tanh MLP (sinusoid, float64); at θ write
gⱼ = ∇Lʲ(θ), Hⱼ = ∇²Lʲ(θ). For one inner step of size α (Reptile: one step on L⁰, then
one on L¹):

    g_MAML    = ∇θ L¹(θ − α g₀)           = g₁ − α H₁g₀ − α H₀g₁ + O(α²)
    g_FOMAML  = ∇L¹(θ − α g₀)             = g₁ − α H₁g₀ + O(α²)
    g_Reptile = (θ − φ₂)/α                 = g₀ + g₁ − α H₁g₀ + O(α²)

so the distance between each measured gradient and its leading terms must fall like α²:
the figure plots it against α on log-log axes, and the JSON records the fitted slopes
(2 expected). The H v products are ``autograd.hvp``. With one step on each loss,
g_Reptile = g₀ + g_FOMAML exactly (its first step's gradient is g₀ itself), so Reptile's and
FOMAML's remainders coincide. The term α H₀g₁, which only MAML has,
is what maximises the inner product of the two losses' gradients (generalisation across
minibatches); FOMAML lacks it and Reptile gets it back only in expectation over the order.

``reuse``: rapid learning or feature reuse? (Raghu, Raghu, Bengio & Vinyals 2020.) On a
trained MAML checkpoint (Omniglot Conv4), the meta-test accuracy when the inner loop adapts
only the blocks after the first k (k = 0..4; the head always adapts, k = 4 is ANIL's inner
loop, an ``ANIL`` learner whose "head" is the adapted names), on the same test tasks for
every k; and the linear CKA (Kornblith et al. 2019) between each block's representation of
the query images, and the logits, before and after the full inner loop:

    CKA(X, Y) = ⟨K, L⟩_F / (‖K‖_F ‖L‖_F),   K = HXXᵀH, L = HYYᵀH,   H = I − 11ᵀ/n

(per task, averaged over tasks). CKA near 1 means the inner loop left that representation
as it was, up to rotation and scale: the features are reused, not learned per task.

``imaml-cg``: iMAML's conjugate gradient assumes A = I + H/λ positive definite; on an iMAML
Omniglot checkpoint, for training tasks with the inner problem solved as in training, the
curvature pᵀAp/pᵀp of each CG direction, and the size and residual of each task's solution,
without and with the damping d of ``IMAML(cg_damping=d)`` (A = I + H/(λ + d)).

``trainval``: MAML on sinusoids trained with each task's query set equal to its support set
("train-train") against the usual disjoint query set ("train-val"), same tasks, same
initial weights, same iterations, both evaluated on the held-out protocol of
``experiments.sinusoid`` (``HeldOutTasks``: 100 evenly spaced query points). ``trainval-omniglot``:
the same on Omniglot 5-way 1-shot (MAML, one query per class in training as in the MAML code,
so train-train's query set is the 5 support images), both tested on the same test tasks with
15 disjoint queries per class.
"""
import dataclasses
import time
from pathlib import Path

import numpy as np

from autograd import Tensor, backend, grad, hvp, no_grad
from autograd import functional as F
from tinymeta.algorithms import ANIL, MAML
from tinymeta.models import MLP
from tinymeta.parameters import broadcast_to_tasks, detached
from tinymeta.tasks import SinusoidTasks
from tinymeta.training import (pyplot, ArgumentParser, Training, UsageError, mean_ci, meta_test, run_main, save_figure,
                               summarize, write_json)
from tinymeta.training.config import positive_int

CHECKPOINT = Path(__file__).with_name("checkpoints") / "omniglot_5w1s_maml.npz"


def taylor_problem(seed=0, hidden=16, shots=10):
    """(loss⁰, loss¹, θ as a list of arrays): support and query MSE of one sinusoid task."""
    model = MLP([1, hidden, hidden, 1], activation="tanh", init_std=0.5)
    params = model.init(np.random.default_rng(seed), dtype=np.float64)
    names = list(params)
    batch = SinusoidTasks().sample(np.random.default_rng(seed + 1), tasks=1, shots=shots)

    def loss_on(x, y):
        return lambda *ws: F.mse_loss(model(dict(zip(names, ws)), Tensor(x[0])), Tensor(y[0]))
    return (loss_on(batch.support_x, batch.support_y), loss_on(batch.query_x, batch.query_y),
            [params[k].data.copy() for k in names])


def gradient(f, point, create_graph=False):
    leaves = [Tensor(p, requires_grad=True) for p in point]
    return [g.data for g in grad(f(*leaves), leaves, create_graph=create_graph)]


def flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


def measured(loss0, loss1, theta, alpha):
    """(g_MAML, g_FOMAML, g_Reptile) after one inner step of size α, flattened."""
    step = lambda point, f: [p - alpha * g for p, g in zip(point, gradient(f, point))]
    leaves = [Tensor(p, requires_grad=True) for p in theta]
    g0 = grad(loss0(*leaves), leaves, create_graph=True)
    adapted = [w - alpha * g for w, g in zip(leaves, g0)]                       # θ' = θ − α∇L⁰(θ), recorded
    g_maml = [g.data for g in grad(loss1(*adapted), leaves)]                    # ∇θ L¹(θ')
    phi1 = step(theta, loss0)
    g_fomaml = gradient(loss1, phi1)                                           # ∇L¹ at θ'
    phi2 = step(phi1, loss1)
    g_reptile = [(t - p) / alpha for t, p in zip(theta, phi2)]                 # (θ − φ₂)/α
    return flat(g_maml), flat(g_fomaml), flat(g_reptile)


def leading_terms(loss0, loss1, theta, alpha):
    g0, g1 = gradient(loss0, theta), gradient(loss1, theta)
    H1g0 = flat(h.data for h in hvp(loss1, theta, g0)[1])
    H0g1 = flat(h.data for h in hvp(loss0, theta, g1)[1])
    g0, g1 = flat(g0), flat(g1)
    return (g1 - alpha * H1g0 - alpha * H0g1,                                  # MAML
            g1 - alpha * H1g0,                                                 # FOMAML
            g0 + g1 - alpha * H1g0)                                            # Reptile


def taylor(alphas, seed=0, hidden=16):
    """{method: remainders ‖measured − leading terms‖₂ over α}, and the fitted log-log slopes."""
    loss0, loss1, theta = taylor_problem(seed, hidden)
    methods = ("MAML", "FOMAML", "Reptile")
    rem = {m: [] for m in methods}
    for a in alphas:
        for m, got, want in zip(methods, measured(loss0, loss1, theta, a), leading_terms(loss0, loss1, theta, a)):
            rem[m].append(float(np.linalg.norm(got - want)))
    slopes = {m: float(np.polyfit(np.log(alphas), np.log(rem[m]), 1)[0]) for m in methods}
    return {"alphas": list(map(float, alphas)), "remainders": rem, "slopes": slopes,
            "gradient_norm": float(np.linalg.norm(flat(gradient(loss0, theta))))}


def draw_taylor(path, result):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    a = np.array(result["alphas"])
    for (m, r), marker in zip(result["remainders"].items(), "osd"):
        ax.loglog(a, r, marker=marker, label=f"{m} (slope {result['slopes'][m]:.2f})")
    r0 = max(r[0] for r in result["remainders"].values())
    ax.loglog(a, r0 * (a / a[0]) ** 2, "k--", lw=0.8, label="∝ α²")
    ax.set_xlabel("inner step size α")
    ax.set_ylabel("‖measured gradient − leading terms‖₂")
    ax.set_title("Reptile paper §5.1: remainders of the Taylor expansion")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


# --- rapid learning or feature reuse (Raghu et al. 2020) -------------------------------------

def linear_cka(X, Y):
    """Linear CKA of two representations of the same n examples, X (n, p) and Y (n, q), in
    its Gram form (n × n, cheap for wide conv maps):
    CKA = ⟨K, L⟩_F / (‖K‖_F ‖L‖_F) with K = HXXᵀH, L = HYYᵀH."""
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    if len(X) != len(Y):
        raise ValueError(f"linear_cka: X has {len(X)} examples but Y has {len(Y)}")
    X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)               # HX, HY: centred over examples
    K, L = X @ X.T, Y @ Y.T
    return float(np.sum(K * L) / (np.linalg.norm(K) * np.linalg.norm(L)))


def frozen_learner(learner, blocks):
    """The learner's MAML with the first ``blocks`` conv blocks (conv and batch-norm) frozen in
    the inner loop: an ANIL whose adapted names are everything else (blocks = 4: the head)."""
    if type(learner) is not MAML or learner.lslr:
        raise ValueError(f"frozen_learner: needs a plain MAML learner (one inner step size), got "
                         f"{type(learner).__name__}" + (" with per-step learned step sizes" if learner.lslr else ""))
    frozen = tuple(f"{layer}{i}." for i in range(blocks) for layer in ("conv", "bn"))
    adapted = [k for k in learner.params if not k.startswith(frozen)]
    return ANIL(learner.model, learner.params, learner.loss_fn, head=adapted, inner_lr=learner.inner_lr,
                inner_steps=learner.inner_steps, batched=learner.batched)


def representations(learner, fast, x):
    """[(T, N, features) of each conv block's output, (T, N, ways) logits] of images x under
    task-stacked parameters ``fast``, as the meta-test forward pass ("test" mode) computes them."""
    with no_grad():
        maps = [backend.to_numpy(h.data) for h in learner.model.blocks(fast, x, mode="test")]
        logits = backend.to_numpy(learner.forward(fast, x, "test").data)
    T, N = x.shape[:2]
    return [np.moveaxis(m, 2, 1).reshape(T, N, -1) for m in maps] + [logits]   # (T, C, N, h, w) → (T, N, C·h·w)


def cka_before_after(learner, batch, steps):
    """(layers, T): CKA of each block's and the logits' representation of the query images at
    θ and at the task's θ' after ``steps`` inner steps."""
    xq, _ = learner.inputs(batch, "query")
    T = learner.n_tasks(batch)
    before = representations(learner, broadcast_to_tasks(detached(learner.params), T), xq)
    after = representations(learner, learner.adapt(batch, steps), xq)
    return np.array([[linear_cka(b[t], a[t]) for t in range(T)] for b, a in zip(before, after)])


LAYERS = ["block 1", "block 2", "block 3", "block 4", "head (logits)"]


def feature_reuse(learner, tasks, cka_tasks, n_tasks, steps, chunk, task_seed):
    """Accuracy (%) with 0..4 blocks frozen, each on the same test tasks (``tasks(seed)`` makes
    the stream), and the CKA before/after the full inner loop on the tasks of ``cka_tasks(seed)``
    (more queries: CKA needs examples), each as mean ± 95% CI."""
    frozen = {}
    for k in range(5):
        acc = meta_test(frozen_learner(learner, k), tasks(task_seed), n_tasks, steps, chunk)["accuracy"]
        frozen[k] = mean_ci(100.0 * acc[-1])
    stream, cka = cka_tasks(task_seed), []
    for done in range(0, n_tasks, chunk):
        cka.append(cka_before_after(learner, stream.sample_batch(min(chunk, n_tasks - done)), steps))
    cka = np.concatenate(cka, axis=1)
    return {"frozen_blocks": {str(k): {"accuracy_percent": m, "ci95_percent": ci} for k, (m, ci) in frozen.items()},
            "cka": {name: dict(zip(("mean", "ci95"), mean_ci(row))) for name, row in zip(LAYERS, cka)},
            "tasks": n_tasks, "steps": steps, "task_seed": task_seed}


def draw_reuse(path, result):
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    runs = result["frozen_blocks"]
    ks = [int(k) for k in runs]
    left.errorbar(ks, [runs[str(k)]["accuracy_percent"] for k in ks],
                  yerr=[runs[str(k)]["ci95_percent"] for k in ks], marker="o", capsize=3)
    left.set_xticks(ks, [f"{k}" + (" (ANIL)" if k == 4 else "") for k in ks])
    left.set_xlabel("conv blocks frozen in the inner loop (head always adapts)")
    left.set_ylabel(f"test accuracy after {result['steps']} steps (%)")
    left.grid(alpha=0.3)
    cka = result["cka"]
    right.bar(range(len(cka)), [c["mean"] for c in cka.values()], yerr=[c["ci95"] for c in cka.values()],
              capsize=3, color=["tab:blue"] * 4 + ["tab:red"])
    right.set_xticks(range(len(cka)), list(cka), fontsize=8)
    right.set_ylim(0, 1.05)
    right.set_ylabel("linear CKA, before vs after the inner loop")
    right.grid(alpha=0.3, axis="y")
    fig.suptitle("Rapid learning or feature reuse? MAML, Omniglot 5-way 1-shot")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def run_reuse(args, out):
    from experiments import omniglot
    cfg, meta, learner = omniglot.restore(Path(args.checkpoint))
    if cfg["algo"] not in ("maml", "fomaml") or cfg.get("per_step_lr"):
        raise UsageError(f"reuse: checkpoint {args.checkpoint} is a {cfg['algo']} run; the analysis "
                         "freezes the inner loop of a MAML or FOMAML one (without --per-step-lr)")
    if args.query is not None:
        cfg = omniglot.CONFIG.check({**cfg, "test_query": args.query})
    cka_cfg = omniglot.CONFIG.check({**cfg, "test_query": args.cka_query})
    _train, _val, test, _fingerprint = omniglot.load_split(cfg, args.data_dir)
    omniglot.check_classes(cfg, test=test)
    t0 = time.perf_counter()
    result = feature_reuse(learner, lambda seed: omniglot.sampler(cfg, test, seed, test=True),
                           lambda seed: omniglot.sampler(cka_cfg, test, seed, test=True), args.tasks,
                           args.steps, omniglot.task_chunk(cka_cfg), args.seed)
    result.update(checkpoint=str(args.checkpoint), iteration=meta["iteration"], seconds=time.perf_counter() - t0,
                  setting=f"{cfg['test_ways']}-way {cfg['shots']}-shot, inner step {learner.inner_lr}; "
                          f"{cfg['test_query']} queries per class for accuracy, {args.cka_query} for CKA")
    write_json(out / "reuse.json", result)
    draw_reuse(out / "reuse.png", result)
    print("accuracy with k blocks frozen: " + ", ".join(
        f"{k}: {r['accuracy_percent']:.2f} ± {r['ci95_percent']:.2f}%" for k, r in result["frozen_blocks"].items()))
    print("CKA before/after: " + ", ".join(f"{n} {c['mean']:.3f}" for n, c in result["cka"].items())
          + f"  (wrote {out / 'reuse.json'})")
    return result


# --- iMAML's linear system (Omniglot) ------------------------------------------------------

def task_norms(arrays):
    """‖v‖ of each task over every array of v, float64: (T,)."""
    return np.sqrt(sum((np.asarray(backend.to_numpy(a), np.float64).reshape(a.shape[0], -1) ** 2).sum(axis=1)
                       for a in arrays))


def cg_diagnosis(learner, batches, dampings):
    """For each task of ``batches`` (the inner problem solved as in training): how far φ is
    from stationary, ‖∇L̂(φ) + λ(φ − θ)‖/‖∇L̂(θ)‖ (the implicit gradient assumes 0); and for
    each CG damping d, the curvature pᵀAp/pᵀp of every CG direction for A = I + H/(λ + d), the
    size ‖x‖/‖g‖ of the solution after ``learner.cg_steps`` steps, and its relative residual
    ‖g − A x‖/‖g‖."""
    found = {d: {"curvature": [], "size": [], "residual": []} for d in dampings}
    stationarity, own_damping = [], learner.cg_damping
    for batch in batches:
        xs, ys = learner.inputs(batch, "support")
        xq, yq = learner.inputs(batch, "query")
        theta = learner.tasks_view(detached(learner.params), learner.n_tasks(batch))
        fast = learner.solve_inner(theta, xs, ys)
        g = [gi.data for gi in grad(learner.query_loss(fast, xq, yq), list(fast.values()))]
        names, point = list(fast), [fast[k].data for k in fast]

        def loss_at(*leaves):
            return learner.support_loss(dict(zip(names, leaves)), xs, ys, "adapt")
        start = detached(theta)
        g_theta = [gi.data for gi in grad(learner.support_loss(start, xs, ys, "adapt"), [start[k] for k in names])]
        g_phi = [gi.data for gi in grad(learner.support_loss(fast, xs, ys, "adapt"), [fast[k] for k in names])]
        left = [gp + learner.lam * (fast[k].data - theta[k].data) for gp, k in zip(g_phi, names)]
        stationarity.append(task_norms(left) / task_norms(g_theta))   # ‖∇L̂(φ) + λ(φ − θ)‖ / ‖∇L̂(θ)‖
        for d in dampings:
            learner.cg_damping, trace = d, []
            solved = learner.implicit_gradient(fast, xs, ys, g, trace=trace)
            x = [solved[k] for k in names]
            _, hx = hvp(loss_at, point, x)
            residual = [gi - (xi + h.data / (learner.lam + d)) for gi, xi, h in zip(g, x, hx)]   # g − A x
            found[d]["curvature"].append(np.stack([backend.to_numpy(c) for c in trace], axis=1))  # (T, steps)
            found[d]["size"].append(task_norms(x) / task_norms(g))
            found[d]["residual"].append(task_norms(residual) / task_norms(g))
    learner.cg_damping = own_damping
    stationarity = np.concatenate(stationarity)
    out = {}
    for d, f in found.items():
        curvature = np.concatenate(f["curvature"])
        size, residual = np.concatenate(f["size"]), np.concatenate(f["residual"])
        out[str(d)] = {"tasks": int(len(size)),
                       "share_with_nonpositive_curvature": float((curvature <= 0).any(axis=1).mean()),
                       "share_nonpositive_by_step": (curvature <= 0).mean(axis=0).tolist(),
                       "smallest_curvature": float(curvature.min()),
                       "size_median": float(np.median(size)), "size_max": float(size.max()),
                       "residual_median": float(np.median(residual)), "residual_max": float(residual.max()),
                       "size_sorted": np.sort(size).tolist()}
    return {"inner_stationarity": {"median": float(np.median(stationarity)), "max": float(stationarity.max()),
                                   "sorted": np.sort(stationarity).tolist()},
            "dampings": out}


def draw_cg(path, result):
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for d, r in result["dampings"].items():
        steps = np.arange(1, len(r["share_nonpositive_by_step"]) + 1)
        ax1.plot(steps, 100 * np.array(r["share_nonpositive_by_step"]), marker="o", label=f"d = {d}")
        ax2.plot(np.linspace(0, 100, r["tasks"]), r["size_sorted"], label=f"d = {d}")
    ax1.set_xlabel("CG step")
    ax1.set_ylabel("tasks with pᵀAp ≤ 0 (%)")
    ax1.set_title("negative curvature of A = I + H/(λ + d)")
    ax2.set_yscale("log")
    ax2.set_xlabel("tasks, sorted (%)")
    ax2.set_ylabel("‖x‖ / ‖∇L_query‖ after CG")
    ax2.set_title("size of each task's meta-gradient")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"iMAML on Omniglot, λ = {result['lam']}, {result['cg_steps']} CG steps, iteration "
                 f"{result['iteration']}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def run_cg(args, out):
    from experiments import omniglot
    path = Path(args.checkpoint)
    cfg, meta, learner = omniglot.restore(path)
    if cfg["algo"] != "imaml":
        raise UsageError(f"imaml-cg: checkpoint {path} is a {cfg['algo']} run, not iMAML")
    train, _val, _test, _fingerprint = omniglot.load_split(cfg, args.data_dir)
    tasks = omniglot.sampler(cfg, train, args.seed)
    chunk = cfg["meta_batch"]
    batches = [tasks.sample_batch(min(chunk, args.tasks - i)) for i in range(0, args.tasks, chunk)]
    t0 = time.perf_counter()
    result = {"checkpoint": str(path), "iteration": meta["iteration"], "lam": learner.lam,
              "cg_steps": learner.cg_steps, "tasks": args.tasks, "seed": args.seed,
              **cg_diagnosis(learner, batches, args.dampings)}
    result["seconds"] = time.perf_counter() - t0
    write_json(out / "imaml_cg.json", result)
    draw_cg(out / "imaml_cg.png", result)
    for d, r in result["dampings"].items():
        print(f"d = {d}: {100 * r['share_with_nonpositive_curvature']:.0f}% of {r['tasks']} tasks meet pᵀAp ≤ 0; "
              f"‖x‖/‖g‖ median {r['size_median']:.2f}, max {r['size_max']:.2f}; relative residual median "
              f"{r['residual_median']:.2f}, max {r['residual_max']:.2f}")
    st = result["inner_stationarity"]
    print(f"inner problem after {learner.inner_steps} steps: ‖∇L̂(φ) + λ(φ − θ)‖ / ‖∇L̂(θ)‖ median "
          f"{st['median']:.2f}, max {st['max']:.2f} (0 at the minimum the implicit gradient assumes)")
    print(f"(wrote {out / 'imaml_cg.json'})")
    return result


# --- train-train vs train-val (sinusoid) ---------------------------------------------------

VARIANTS = ("train-val", "train-train")


def support_as_query(batch):
    """Train-train: each task's query set is its support set."""
    return dataclasses.replace(batch, query_x=batch.support_x, query_y=batch.support_y)


def trainval_setup(cfg, variant):
    """(MAML learner, training task stream) of one variant; both start from the same weights
    and draw the same support sets (``experiments.sinusoid.build``)."""
    from experiments import sinusoid
    learner, tasks = sinusoid.build("maml", cfg)
    return learner, (sinusoid.Transformed(tasks, support_as_query) if variant == "train-train" else tasks)


def held_out_losses(learner, cfg):
    """{"K10"/"K5": (eval_steps + 1, eval_tasks) MSE on the held-out tasks of
    ``experiments.sinusoid`` (the same tasks for every learner)."""
    from experiments import sinusoid
    with np.errstate(over="ignore", invalid="ignore"):         # overflowing tasks are counted
        return {f"K{k}": meta_test(learner, sinusoid.HeldOutTasks(k, cfg["dtype"]), cfg["eval_tasks"],
                                   cfg["eval_steps"], inner_lr=cfg["eval_lr"])["loss"]
                for k in sinusoid.HELD_OUT_SHOTS}


def trainval(cfg, runs, say=None):
    """{variant: {"K10"/"K5": held-out MSE after 0..eval_steps steps (``summarize``),
    "train_seconds"}, "paired_difference": {"K10"/"K5": ``summarize`` of train-train − train-val
    per held-out task}}: each variant trained by the run layer in ``runs/<variant>`` (continued
    if its checkpoint is there)."""
    result, losses = {}, {}
    for variant in VARIANTS:
        learner, tasks = trainval_setup(cfg, variant)
        folder = Path(runs) / variant
        folder.mkdir(parents=True, exist_ok=True)
        training = Training(learner, tasks, cfg["meta_batch"], cfg["iterations"], folder, cfg, label=variant,
                            checkpoint_every=cfg["checkpoint_every"], say=say)
        training.restore()
        summary = training.run()
        losses[variant] = held_out_losses(learner, cfg)
        result[variant] = {**{k: summarize(v) for k, v in losses[variant].items()},
                           "train_seconds": summary["train_seconds_total"]}
    tt, tv = losses["train-train"], losses["train-val"]
    result["paired_difference"] = {k: summarize(tt[k] - tv[k]) for k in tt}
    return result


def draw_trainval(path, result, cfg):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, shots in zip(axes, ("K10", "K5")):
        for variant, color in zip(VARIANTS, ("tab:red", "tab:green")):
            s = result[variant][shots]
            m, ci = np.array(s["mean"]), np.array(s["ci95"])
            ax.plot(np.arange(len(m)), m, marker="o", color=color, label=variant)
            ax.fill_between(np.arange(len(m)), m - ci, m + ci, color=color, alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("SGD steps at meta-test")
        ax.set_title(f"K = {shots[1:]} support points")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(f"held-out MSE ({cfg['eval_tasks']} tasks, 95% CI)")
    axes[0].legend()
    fig.suptitle(f"MAML on sinusoids, {cfg['iterations']} iterations: query = support vs disjoint query")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def trainval_omniglot(cfg, runs, data_dir, n_tasks, say=None):
    """The same comparison on Omniglot: MAML trained with each task's query set equal to its
    support set and with the usual disjoint one (same weights, same training tasks), both
    tested on the same ``n_tasks`` test tasks with disjoint queries. {variant: {"accuracy":
    ``summarize`` by meta-test step (%), "train_seconds"}, "paired_difference": ``summarize`` of
    train-train − train-val per test task (%)}."""
    from experiments import omniglot, sinusoid
    train, _val, test, _fingerprint = omniglot.load_split(cfg, data_dir)
    result, accuracy = {}, {}
    for variant in VARIANTS:
        learner = omniglot.build(cfg)
        tasks = omniglot.sampler(cfg, train, [cfg["seed"], 1])
        if variant == "train-train":
            tasks = sinusoid.Transformed(tasks, support_as_query)
        folder = Path(runs) / variant
        folder.mkdir(parents=True, exist_ok=True)
        training = Training(learner, tasks, cfg["meta_batch"], cfg["iterations"], folder, cfg,
                            label=f"omniglot {variant}", checkpoint_every=cfg["checkpoint_every"], say=say)
        training.restore()
        summary = training.run()
        found = meta_test(learner, omniglot.sampler(cfg, test, omniglot.EVAL_SEED, test=True), n_tasks,
                          cfg["eval_steps"], omniglot.task_chunk(cfg))
        accuracy[variant] = 100.0 * found["accuracy"]
        result[variant] = {"accuracy": summarize(accuracy[variant]), "train_seconds": summary["train_seconds_total"]}
    result["paired_difference"] = summarize(accuracy["train-train"] - accuracy["train-val"])
    return result


def draw_trainval_omniglot(path, result, cfg):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, color in zip(VARIANTS, ("tab:red", "tab:green")):
        s = result[variant]["accuracy"]
        m, ci = np.array(s["mean"]), np.array(s["ci95"])
        ax.errorbar(np.arange(len(m)), m, yerr=ci, marker="o", capsize=3, color=color, label=variant)
    ax.set_xticks(np.arange(len(result["train-val"]["accuracy"]["mean"])))
    ax.set_xlabel("inner steps at meta-test")
    ax.set_ylabel(f"test accuracy (%), {result['train-val']['accuracy']['tasks']} tasks, 95% CI")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"MAML, Omniglot {cfg['ways']}-way {cfg['shots']}-shot, {cfg['iterations']} iterations")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def saved_comparison(stem, cfg, draw, run, evaluation):
    """{"config", "variants": run(), "evaluation", "seconds"}, written to ``stem``.json and
    drawn to ``stem``.png by ``draw(path, variants, cfg)``."""
    t0 = time.perf_counter()
    result = {"config": cfg, "variants": run(), "evaluation": evaluation}
    result["seconds"] = time.perf_counter() - t0
    write_json(stem.with_suffix(".json"), result)
    draw(stem.with_suffix(".png"), result["variants"], cfg)
    return result


def run_trainval_omniglot(args, out):
    from experiments import omniglot
    cfg = omniglot.CONFIG.complete({"algo": "maml", "ways": 5, "shots": 1, "query": 1, "meta_batch": args.meta_batch,
                                    "iterations": args.iterations, "seed": args.seed, "val_tasks": 0,
                                    "checkpoint_every": min(args.iterations, 100), "test_query": 15})
    result = saved_comparison(out / "trainval_omniglot", cfg, draw_trainval_omniglot,
                              lambda: trainval_omniglot(cfg, args.runs, args.data_dir, args.tasks, say=print),
                              f"{args.tasks} test tasks (seed {omniglot.EVAL_SEED}), {cfg['test_query']} "
                              f"queries per class, {cfg['eval_steps']} inner steps")
    for variant in VARIANTS + ("paired_difference",):
        a = result["variants"][variant] if variant == "paired_difference" else result["variants"][variant]["accuracy"]
        print(f"{variant}: accuracy after 0..{cfg['eval_steps']} steps " +
              ", ".join(f"{m:.2f} ± {c:.2f}" for m, c in zip(a["mean"], a["ci95"])))
    print(f"wrote {out / 'trainval_omniglot.json'}")
    return result


def run_trainval(args, out):
    from experiments import configs, sinusoid
    cfg = {**configs.load(sinusoid.RECIPE), "iterations": args.iterations, "seed": args.seed, "methods": ["maml"],
           "checkpoint_every": args.iterations}
    result = saved_comparison(out / "trainval", cfg, draw_trainval, lambda: trainval(cfg, args.runs, say=print),
                              f"{cfg['eval_tasks']} held-out tasks (seed {sinusoid.HELD_OUT_SEED}), "
                              f"SGD {cfg['eval_lr']}, MSE on {sinusoid.QUERY_POINTS} points")
    for variant in VARIANTS + ("paired_difference",):
        r = result["variants"][variant]
        m, ci = r["K10"]["mean"], r["K10"]["ci95"]
        print(f"{variant}: K=10 MSE after 0/1/10 steps {m[0]:.3f} ± {ci[0]:.3f}, {m[1]:.3f} ± {ci[1]:.3f}, "
              f"{m[-1]:.3f} ± {ci[-1]:.3f}")
    print(f"wrote {out / 'trainval.json'}")
    return result


def main(argv=None):
    def run(argv):
        p = ArgumentParser(prog="python -m experiments.analyses", description="Analyses of MAML, each "
                           "with a figure and JSON.")
        p.add_argument("analysis", choices=["taylor", "reuse", "trainval", "trainval-omniglot", "imaml-cg"])
        p.add_argument("--out", default="runs/analyses")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--points", type=positive_int, default=7, help="taylor: step sizes α₀·2^-j, j < points")
        p.add_argument("--checkpoint", default=str(CHECKPOINT), help="reuse: a MAML Omniglot checkpoint; "
                       "imaml-cg: an iMAML one")
        p.add_argument("--dampings", type=float, nargs="+", default=[0.0, 10.0], help="imaml-cg: CG dampings d")
        p.add_argument("--data-dir", default=None, help="reuse: the folder that holds omniglot/")
        p.add_argument("--tasks", type=positive_int, default=200, help="reuse: test tasks; imaml-cg: training tasks")
        p.add_argument("--steps", type=positive_int, default=3, help="reuse: inner steps at meta-test")
        p.add_argument("--query", type=positive_int, default=None,
                       help="reuse: query images per class for accuracy (default: the checkpoint's)")
        p.add_argument("--cka-query", type=positive_int, default=15, help="reuse: query images per class for CKA")
        p.add_argument("--iterations", type=positive_int, default=3000, help="trainval: meta-iterations each")
        p.add_argument("--runs", default="runs/analyses/trainval", help="trainval: the two training runs' folder")
        p.add_argument("--meta-batch", type=positive_int, default=32, help="trainval-omniglot: tasks per iteration")
        args = p.parse_args(argv)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if args.analysis == "reuse":
            return run_reuse(args, out)
        if args.analysis == "trainval":
            return run_trainval(args, out)
        if args.analysis == "imaml-cg":
            return run_cg(args, out)
        if args.analysis == "trainval-omniglot":
            return run_trainval_omniglot(args, out)
        t0 = time.perf_counter()
        result = taylor(0.02 * 0.5 ** np.arange(args.points), seed=args.seed)
        result["seconds"] = time.perf_counter() - t0
        write_json(out / "taylor.json", result)
        draw_taylor(out / "taylor.png", result)
        print("log-log slopes of the remainders (2 expected): " +
              ", ".join(f"{m} {s:.3f}" for m, s in result["slopes"].items()) + f"  (wrote {out / 'taylor.json'})")
        return result
    return run_main(run, argv)


if __name__ == "__main__":
    main()
