"""Analyses of why MAML works, each an experiment with a figure and a JSON file.

    python -m experiments.analyses taylor [--out experiments/results/analyses]

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
"""
import time
from pathlib import Path

import numpy as np

from autograd import Tensor, grad, hvp
from autograd import functional as F
from tinymeta.models import MLP
from tinymeta.tasks import SinusoidTasks
from tinymeta.training import ArgumentParser, run_main, save_figure, write_json
from tinymeta.training.config import positive_int


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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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


def main(argv=None):
    def run(argv):
        p = ArgumentParser(prog="python -m experiments.analyses", description="Analyses of MAML, each "
                           "with a figure and JSON.")
        p.add_argument("analysis", choices=["taylor"])
        p.add_argument("--out", default="runs/analyses")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--points", type=positive_int, default=7, help="step sizes α₀·2^-j, j < points")
        args = p.parse_args(argv)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
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
