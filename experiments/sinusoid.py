"""The sinusoid regression experiment of MAML (Finn, Abbeel & Levine, 2017, Section 5.1,
Figures 2 and 3), with FOMAML, Reptile, a jointly "pretrained" network and an oracle.

    python -m experiments.sinusoid                      # the default run (a few minutes)
    python -m experiments.sinusoid --methods maml pretrained --iterations 5000 --out /tmp/s

Task distribution: y = A sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5]
(``tinymeta.tasks.SinusoidTasks``). Network: MLP 1-40-40-1 with ReLU.

Training (every method sees the same task sequence and starts from the same weights; one
*iteration* = one meta-batch of 25 tasks, each with K = 10 support and K = 10 query points):

* ``maml``       MAML, one inner SGD step α = 0.01 on the support set, second-order
                 meta-gradient of the query loss, Adam 1e-3 outer.
* ``fomaml``     the same with the first-order approximation.
* ``reptile``    Reptile (batched): per task, ``REPTILE["inner_steps"]`` plain SGD steps of
                 ``REPTILE["inner_lr"]`` on the task's support *and* query points (Reptile has
                 no support/query split; it sees the same 2K points per task as the others),
                 then θ ← θ + ε · mean(Wᵢ − θ) with a constant ε = ``REPTILE["outer_lr"]``.
                 One Reptile iteration is one such meta-batch, so it costs about
                 ``inner_steps`` gradient evaluations per task.
* ``pretrained`` the same network trained jointly on all tasks: one Adam 1e-3 step on the
                 mean MSE over all 2K points of the 25 tasks (no inner loop).
* ``oracle``     MLP 3-40-40-1 that is also given (A, φ) as inputs, trained like
                 ``pretrained``; a lower bound, not adapted (a flat line in Figure 3).

Evaluation (Figure 3 protocol): 600 held-out tasks drawn from a separate fixed seed; K = 10
(and K = 5: the first 5 of the same points) support points; 0..10 steps of plain SGD with
step size 0.01 on the support set from the learned weights (``MetaLearner.evaluate``, the
non-MAML methods wrapped in a ``MAML`` object with ``inner_lr=0.01``); MSE on 100 query
points evenly spread over [−5, 5]; mean and 95% interval 1.96 · std / √(tasks).

Outputs in ``--out``: ``figure2.png``, ``figure3.png``, ``results.json`` and
``checkpoints/<method>.npz`` (params, Adam state, task-sampler state, iteration, loss
history; written atomically every ``--checkpoint-every`` iterations and at the end).
``--resume`` continues every method from its checkpoint and ends with exactly the
parameters of an uninterrupted run; a method whose checkpoint already reached
``--iterations`` is only evaluated.

For tests, ``main(argv, after_iteration=f)`` calls ``f(method, iteration)`` after every
training iteration (after that iteration's checkpoint, if any); raising from it simulates a
run killed at that point.
"""
import os

# The matrices here are tiny (at most 500 × 40): a multithreaded BLAS only adds
# synchronisation, and on a loaded 2-core machine it made the pretrained baseline's step
# ~10× slower (55 ms instead of 6 ms, measured). One BLAS thread unless the user chose
# otherwise; this only takes effect if NumPy is not imported yet (``python -m`` runs).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import tinymeta  # noqa: E402
from autograd import Tensor, grad, no_grad
from autograd import functional as F
from tinymeta import checkpoint
from tinymeta.algorithms import MAML, Reptile
from tinymeta.models import MLP
from tinymeta.optim import Adam
from tinymeta.parameters import leaves, to_arrays
from tinymeta.tasks import SinusoidBatch, SinusoidTasks

METHODS = ("maml", "fomaml", "reptile", "pretrained", "oracle")
LABELS = {"maml": "MAML", "fomaml": "FOMAML", "reptile": "Reptile",
          "pretrained": "pretrained (joint training)", "oracle": "oracle (given A, φ)"}
COLORS = {"maml": "tab:red", "fomaml": "tab:orange", "reptile": "tab:purple",
          "pretrained": "tab:blue", "oracle": "tab:gray"}

DEFAULT_ITERATIONS = 30000
DEFAULT_SEED = 0
EVAL_SEED = 20170309          # held-out tasks: a fixed seed apart from the training seeds
CHECKPOINT_EVERY = 2000

# The paper's settings (Section 5.1 and Appendix A.1 of Finn et al., 2017).
SETTINGS = {
    "hidden": [40, 40], "activation": "relu", "init": "truncated normal std 0.01, zero biases",
    "shots": 10, "queries": 10, "meta_batch": 25,
    "inner_lr": 0.01, "inner_steps": 1, "outer_optimizer": "adam", "outer_lr": 1e-3,
    "adam_betas": [0.9, 0.999], "adam_eps": 1e-8,
    "amplitude": [0.1, 5.0], "phase": [0.0, math.pi], "x_range": [-5.0, 5.0],
}
REPTILE = {"inner_optimizer": "sgd", "inner_lr": 0.02, "inner_steps": 5, "outer_lr": 1.0,
           "inner_data": "support+query (2K points)"}
EVAL = {"steps": 10, "shots": [5, 10], "step_size": 0.01, "query_points": 100,
        "query": "evenly spaced over [-5, 5]", "seed": EVAL_SEED, "ci": "1.96 * std(ddof=1) / sqrt(tasks)"}


# --- command line ---------------------------------------------------------------------------

from .arguments import integer as _int, non_negative_int as _non_negative_int  # noqa: E402
from .arguments import positive_int as _positive_int  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m experiments.sinusoid",
        description="MAML's sinusoid regression experiment (Finn et al. 2017, Figures 2 and 3).")
    p.add_argument("--iterations", type=_positive_int, default=DEFAULT_ITERATIONS,
                   help=f"meta-iterations (meta-batches of 25 tasks) for every method (default {DEFAULT_ITERATIONS})")
    p.add_argument("--seed", type=_int, default=DEFAULT_SEED, help="seed of initial weights and training tasks")
    p.add_argument("--out", default="runs/sinusoid", help="output folder (default runs/sinusoid)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), metavar="METHOD",
                   help=f"subset of {', '.join(METHODS)} (space or comma separated; default all)")
    p.add_argument("--eval-tasks", type=_positive_int, default=600, help="held-out tasks (default 600)")
    p.add_argument("--checkpoint-every", type=_non_negative_int, default=CHECKPOINT_EVERY,
                   help=f"checkpoint every N iterations, 0 = only at the end (default {CHECKPOINT_EVERY})")
    p.add_argument("--resume", action="store_true", help="continue each method from <out>/checkpoints")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="float32 (default: ~28%% faster here than float64, as the PyTorch reference) or float64")
    p.add_argument("--train-only", action="store_true",
                   help="train and checkpoint only; no evaluation, figures or results.json "
                        "(evaluate later with --resume)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    methods = []
    for item in args.methods:
        for name in item.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in METHODS:
                parser.error(f"argument --methods: unknown method {name!r} (choose from {', '.join(METHODS)})")
            if name not in methods:
                methods.append(name)
    if not methods:
        parser.error("argument --methods: no method given")
    args.methods = [m for m in METHODS if m in methods]     # a fixed order
    return args


# --- the methods ----------------------------------------------------------------------------

def _joint_inputs(batch, with_task=False):
    """All 2K points of every task of a batch as one regression set: x (T·2K, 1 or 3), y."""
    x = np.concatenate([batch.support_x, batch.query_x], axis=1)
    y = np.concatenate([batch.support_y, batch.query_y], axis=1)
    if with_task:
        T, N, _ = x.shape
        task = np.stack([batch.amplitude, batch.phase], axis=-1).astype(x.dtype)    # (T, 2)
        x = np.concatenate([x, np.broadcast_to(task[:, None, :], (T, N, 2))], axis=-1)
    return x.reshape(-1, x.shape[-1]), y.reshape(-1, 1)


class Trainer:
    """One method's network, optimizer and training step."""
    sizes = [1, 40, 40, 1]

    def __init__(self, name, arrays, dtype):
        self.name, self.dtype = name, dtype
        self.model = MLP(self.sizes, activation=SETTINGS["activation"])
        self.params = leaves(arrays, dtype)
        self.optimizer = None

    def step(self, batch):
        raise NotImplementedError

    def optimizer_state(self):
        return self.optimizer.state_dict() if self.optimizer is not None else {}

    def load_optimizer_state(self, state):
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state)

    def evaluator(self):
        """A learner whose ``evaluate`` adapts with plain SGD, step size 0.01, from θ."""
        return MAML(self.model, self.params, F.mse_loss, inner_lr=EVAL["step_size"],
                    optimizer=_NoOptimizer())


class _NoOptimizer:
    def step(self, grads):
        raise RuntimeError("evaluation only")


class MAMLTrainer(Trainer):
    def __init__(self, name, arrays, dtype):
        super().__init__(name, arrays, dtype)
        self.learner = MAML(self.model, self.params, F.mse_loss, inner_lr=SETTINGS["inner_lr"],
                            inner_steps=SETTINGS["inner_steps"], first_order=(name == "fomaml"),
                            optimizer=Adam(self.params, lr=SETTINGS["outer_lr"]))
        self.optimizer = self.learner.optimizer

    def step(self, batch):
        return self.learner.step(batch)

    def evaluator(self):
        return self.learner                      # its inner loop is SGD with α = 0.01 already


class ReptileTrainer(Trainer):
    def __init__(self, name, arrays, dtype):
        super().__init__(name, arrays, dtype)
        self.learner = Reptile(self.model, self.params, F.mse_loss, inner_lr=REPTILE["inner_lr"],
                               inner_steps=REPTILE["inner_steps"], outer_lr=REPTILE["outer_lr"],
                               inner_optimizer=REPTILE["inner_optimizer"])

    def step(self, batch):
        # Reptile's inner loop runs on the task's "support" arrays: give it all 2K points.
        x = np.concatenate([batch.support_x, batch.query_x], axis=1)
        y = np.concatenate([batch.support_y, batch.query_y], axis=1)
        return self.learner.step(SinusoidBatch(x, y, x, y, batch.amplitude, batch.phase))


class JointTrainer(Trainer):
    """Plain regression on all points of the meta-batch: the pretrained baseline."""
    with_task = False

    def __init__(self, name, arrays, dtype):
        super().__init__(name, arrays, dtype)
        self.optimizer = Adam(self.params, lr=SETTINGS["outer_lr"])

    def loss(self, x, y):
        return F.mse_loss(self.model(self.params, Tensor(x)), Tensor(y))

    def step(self, batch):
        x, y = _joint_inputs(batch, self.with_task)
        loss = self.loss(x, y)
        names = list(self.params)
        grads = grad(loss, [self.params[k] for k in names])
        self.optimizer.step(dict(zip(names, grads)))
        return float(loss.data)


class OracleTrainer(JointTrainer):
    sizes = [3, 40, 40, 1]
    with_task = True


TRAINERS = {"maml": MAMLTrainer, "fomaml": MAMLTrainer, "reptile": ReptileTrainer,
            "pretrained": JointTrainer, "oracle": OracleTrainer}


def initial_arrays(method, seed):
    """Initial weights: the same for every 1-40-40-1 method (the oracle's input layer differs)."""
    sizes = TRAINERS[method].sizes
    return to_arrays(MLP(sizes).init(np.random.default_rng([seed, 0])))


def task_rng(seed):
    return np.random.default_rng([seed, 1])


# --- training with checkpoints --------------------------------------------------------------

def method_settings(method):
    s = {"method": method, "sizes": TRAINERS[method].sizes, **SETTINGS}
    if method == "reptile":
        s["reptile"] = REPTILE
    return s


def checkpoint_path(out, method):
    return Path(out) / "checkpoints" / f"{method}.npz"


def save_checkpoint(path, trainer, rng, iteration, iterations, history, wall, seed, dtype):
    opt = trainer.optimizer_state()
    opt_arrays = {k: v for k, v in opt.items() if isinstance(v, np.ndarray) or hasattr(v, "shape")}
    opt_scalars = {k: v for k, v in opt.items() if k not in opt_arrays}
    arrays = {**checkpoint.join("params", to_arrays(trainer.params)),
              **checkpoint.join("optimizer", opt_arrays),
              "loss_history": np.asarray(history, dtype=np.float64)}
    meta = {"method": trainer.name, "iteration": iteration, "iterations": iterations,
            "finished": iteration >= iterations, "rng_state": rng.bit_generator.state,
            "optimizer": opt_scalars, "seed": seed, "dtype": dtype, "train_wall_time_s": wall,
            "settings": method_settings(trainer.name), "tinymeta_version": tinymeta.__version__}
    checkpoint.save(path, arrays, meta)


def _canonical(obj):
    return json.loads(json.dumps(obj))


def load_checkpoint(path, method, args):
    """(trainer, rng, iteration, history, wall) from a checkpoint, after checking it fits."""
    try:
        arrays, meta = checkpoint.load(path)
    except checkpoint.CheckpointError as e:
        raise SystemExit(f"--resume: {e}") from None
    problems = []
    if meta.get("method") != method:
        problems.append(f"it is for method {meta.get('method')!r}")
    if meta.get("seed") != args.seed:
        problems.append(f"it was trained with --seed {meta.get('seed')}, not {args.seed}")
    if meta.get("dtype") != args.dtype:
        problems.append(f"it was trained with --dtype {meta.get('dtype')}, not {args.dtype}")
    if meta.get("settings") != _canonical(method_settings(method)):
        problems.append("its hyperparameters differ from this version of the script")
    if meta.get("iteration", 0) > args.iterations:
        problems.append(f"it is at iteration {meta['iteration']}, past --iterations {args.iterations}")
    if problems:
        raise SystemExit(f"--resume: checkpoint {path} does not fit this run: " + "; ".join(problems))
    dtype = np.dtype(args.dtype)
    trainer = TRAINERS[method](method, checkpoint.split(arrays, "params"), dtype)
    if trainer.optimizer is not None:
        trainer.load_optimizer_state({**meta["optimizer"], **checkpoint.split(arrays, "optimizer")})
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng_state"]
    history = [float(v) for v in arrays["loss_history"]]
    return trainer, rng, int(meta["iteration"]), history, float(meta.get("train_wall_time_s", 0.0))


class Progress:
    def __init__(self, method, total, start, quiet, every_s=2.0):
        self.method, self.total, self.quiet, self.every_s = method, total, quiet, every_s
        self.t0 = self.last = time.perf_counter()
        self.start = start

    def update(self, iteration, history, force=False):
        now = time.perf_counter()
        if self.quiet or (not force and now - self.last < self.every_s):
            return
        self.last = now
        done = iteration - self.start
        rate = done / max(now - self.t0, 1e-9)
        left = (self.total - iteration) / rate if rate > 0 else float("nan")
        window = history[-500:]
        running = sum(window) / len(window) if window else float("nan")
        print(f"  {self.method:<10} {iteration:>7}/{self.total:<7} loss {running:8.4f} (mean of last "
              f"{len(window)})  {rate:7.1f} it/s  {left:6.0f} s left", flush=True)


def train(method, args, tasks, log, after_iteration=None):
    """Train (or resume, or just load) one method; returns (trainer, info)."""
    path = checkpoint_path(args.out, method)
    dtype = np.dtype(args.dtype)
    if args.resume and path.is_file():
        trainer, rng, start, history, wall = load_checkpoint(path, method, args)
        if start >= args.iterations:
            log(f"{method}: checkpoint finished at iteration {start}; not retrained")
            return trainer, {"iterations": start, "history": history, "train_wall_time_s": wall,
                             "resumed_from": start}
        log(f"{method}: resuming from iteration {start} of {args.iterations}")
    else:
        if args.resume:
            log(f"{method}: no checkpoint at {path}; training from scratch")
        trainer = TRAINERS[method](method, initial_arrays(method, args.seed), dtype)
        rng, start, history, wall = task_rng(args.seed), 0, [], 0.0
    resumed_from = start
    progress = Progress(method, args.iterations, start, args.quiet)
    t0 = time.perf_counter()
    sample = dict(tasks=SETTINGS["meta_batch"], shots=SETTINGS["shots"], queries=SETTINGS["queries"],
                  dtype=dtype)
    for iteration in range(start + 1, args.iterations + 1):
        loss = trainer.step(tasks.sample(rng, **sample))
        if not math.isfinite(loss):
            raise FloatingPointError(f"{method}: training loss is {loss} at iteration {iteration}")
        history.append(loss)
        last = iteration == args.iterations
        if last or (args.checkpoint_every and iteration % args.checkpoint_every == 0):
            save_checkpoint(path, trainer, rng, iteration, args.iterations, history,
                            wall + time.perf_counter() - t0, args.seed, args.dtype)
        progress.update(iteration, history, force=last)
        if after_iteration is not None:
            after_iteration(method, iteration)
    wall += time.perf_counter() - t0
    done = args.iterations - resumed_from
    log(f"{method}: {done} iterations in {wall:.1f} s total training time "
        f"({done / max(time.perf_counter() - t0, 1e-9):.0f} it/s this session)")
    return trainer, {"iterations": args.iterations, "history": history, "train_wall_time_s": wall,
                     "resumed_from": resumed_from}


# --- evaluation -----------------------------------------------------------------------------

def held_out_tasks(n, dtype):
    """n held-out tasks from EVAL_SEED: K = 10 support points each (the K = 5 support set is
    their first 5) and 100 query points evenly spaced over [−5, 5]."""
    tasks = SinusoidTasks(SETTINGS["amplitude"], SETTINGS["phase"], SETTINGS["x_range"])
    rng = np.random.default_rng(EVAL_SEED)
    b = tasks.sample(rng, n, max(EVAL["shots"]), queries=1, dtype=np.float64)
    xq = np.broadcast_to(np.linspace(*SETTINGS["x_range"], EVAL["query_points"])[None, :, None],
                         (n, EVAL["query_points"], 1))
    yq = tasks.function(xq, b.amplitude[:, None, None], b.phase[:, None, None])
    return {k: SinusoidBatch(b.support_x[:, :k].astype(dtype), b.support_y[:, :k].astype(dtype),
                             xq.astype(dtype), yq.astype(dtype), b.amplitude, b.phase)
            for k in EVAL["shots"]}


def summarize(losses):
    """losses (steps+1, T) → per-step mean and 95% CI half-width."""
    losses = np.asarray(losses, dtype=np.float64)
    T = losses.shape[1]
    std = losses.std(axis=1, ddof=1) if T > 1 else np.zeros(losses.shape[0])
    return {"mean": losses.mean(axis=1).tolist(), "ci95": (1.96 * std / math.sqrt(T)).tolist(),
            "median": np.median(losses, axis=1).tolist(), "max": losses.max(axis=1).tolist()}


def evaluate(method, trainer, eval_sets):
    out = {}
    for k, batch in eval_sets.items():
        if method == "oracle":
            T, Q = batch.query_x.shape[:2]
            task = np.stack([batch.amplitude, batch.phase], axis=-1).astype(batch.query_x.dtype)
            x = np.concatenate([batch.query_x, np.broadcast_to(task[:, None, :], (T, Q, 2))], axis=-1)
            with no_grad():
                pred = trainer.model(trainer.params, Tensor(x.reshape(T * Q, 3))).data.reshape(T, Q)
            per_task = ((np.asarray(pred, dtype=np.float64) - batch.query_y[..., 0]) ** 2).mean(axis=1)
            losses = np.repeat(per_task[None, :], EVAL["steps"] + 1, axis=0)   # no adaptation
        else:
            losses = trainer.evaluator().evaluate(batch, EVAL["steps"])["loss"]
        out[f"K{k}"] = summarize(losses)
    return out


def adapted_curves(trainer, xs, ys, x_plot, steps=(0, 1, 10)):
    """Predictions on x_plot after 0, 1 and 10 SGD steps (0.01) on one task's support set."""
    learner = trainer.evaluator()
    fast = {k: Tensor(v.data.copy(), requires_grad=True) for k, v in trainer.params.items()}
    xs, ys, xp = (Tensor(np.asarray(a, dtype=trainer.dtype)) for a in (xs, ys, x_plot))
    curves = {}
    for step in range(max(steps) + 1):
        if step in steps:
            curves[step] = np.asarray(trainer.model(fast, xp).data, dtype=np.float64)[:, 0]
        if step < max(steps):
            fast = learner.inner_update(fast, xs, ys, create_graph=False)
            fast = {k: Tensor(v.data, requires_grad=True) for k, v in fast.items()}
    return curves


# --- figures --------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_task_index(eval_sets):
    """The held-out task shown in Figure 2: the first with amplitude in [2.5, 4.5]."""
    amplitude = eval_sets[max(eval_sets)].amplitude
    good = np.flatnonzero((amplitude >= 2.5) & (amplitude <= 4.5))
    return int(good[0]) if len(good) else 0


def figure2(path, trainers, eval_sets):
    columns = [m for m in ("maml", "pretrained") if m in trainers]
    if not columns:
        return None
    plt = _pyplot()
    t = figure_task_index(eval_sets)
    shots = sorted(eval_sets)
    x_plot = np.linspace(*SETTINGS["x_range"], 200)[:, None]
    batch = eval_sets[shots[0]]
    A, phi = float(batch.amplitude[t]), float(batch.phase[t])
    y_true = SinusoidTasks.function(x_plot[:, 0], A, phi)
    fig, axes = plt.subplots(len(shots), len(columns), figsize=(5.2 * len(columns), 3.6 * len(shots)),
                             squeeze=False, sharex=True)
    styles = {0: ("pre-update", "tab:green", ":"), 1: ("1 grad step", "tab:olive", "--"),
              10: ("10 grad steps", "tab:red", "--")}
    for r, k in enumerate(shots):
        b = eval_sets[k]
        xs, ys = b.support_x[t], b.support_y[t]
        for c, method in enumerate(columns):
            ax = axes[r, c]
            ax.plot(x_plot[:, 0], y_true, color="black", lw=2.0, label="ground truth")
            curves = adapted_curves(trainers[method], xs, ys, x_plot)
            for step, y in curves.items():
                label, color, ls = styles[step]
                ax.plot(x_plot[:, 0], y, color=color, ls=ls, lw=1.8, label=label)
            ax.scatter(np.asarray(xs)[:, 0], np.asarray(ys)[:, 0], marker="^", s=60, color="tab:purple",
                       zorder=5, label="used for grad")
            name = "MAML" if method == "maml" else "pretrained, step size 0.01"
            ax.set_title(f"{name}, K={k} support points")
            ax.set_ylim(-1.6 * max(A, 1.0) - 0.5, 1.6 * max(A, 1.0) + 0.5)
            ax.grid(alpha=0.3)
            if r == len(shots) - 1:
                ax.set_xlabel("x")
            if c == 0:
                ax.set_ylabel("y")
    handles, labels = axes[-1, 0].get_legend_handles_labels()
    labels = [("support points (K)" if lab.startswith("used for grad") else lab) for lab in labels]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(f"Few-shot adaptation on a held-out sinusoid (A = {A:.2f}, φ = {phi:.2f}); "
                 f"SGD step size {EVAL['step_size']}", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return t


def figure3(path, results, n_tasks):
    plt = _pyplot()
    shots = sorted(EVAL["shots"], reverse=True)            # K = 10 first, as in the paper
    fig, axes = plt.subplots(1, len(shots), figsize=(6.2 * len(shots), 4.6), squeeze=False)
    steps = np.arange(EVAL["steps"] + 1)
    # A few tasks can make 0.01-step SGD diverge (e.g. K = 5 points bunched on one side of a
    # large-amplitude sine): their huge MSE widens a band far past every mean. The y-axis
    # is fitted to the means; wider bands are clipped at the top.
    top = 1.12 * max(max(r["mse"][f"K{k}"]["mean"]) for r in results.values() for k in shots)
    for ax, k in zip(axes[0], shots):
        for method, res in results.items():
            m = np.array(res["mse"][f"K{k}"]["mean"])
            ci = np.array(res["mse"][f"K{k}"]["ci95"])
            color = COLORS[method]
            if method == "oracle":
                ax.plot(steps, m, color=color, ls="--", lw=1.8, label=LABELS[method])
            else:
                ax.plot(steps, m, color=color, marker="o", ms=4, lw=1.8, label=LABELS[method])
            ax.fill_between(steps, m - ci, m + ci, color=color, alpha=0.2, lw=0)
        ax.set_title(f"K = {k}: MSE on {n_tasks} held-out tasks")
        ax.set_xlabel("number of gradient steps (SGD, step size 0.01)")
        ax.set_ylabel("mean squared error")
        ax.set_xticks(steps)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5)
    fig.suptitle("Sinusoid regression: MSE after k gradient steps (shaded: 95% confidence interval "
                 "of the mean, clipped at the top)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------

def main(argv=None, after_iteration=None):
    """Run the experiment; returns the results dict that is written to results.json
    (None with ``--train-only``).

    ``after_iteration(method, iteration)``, if given, is called after every training
    iteration (and after the checkpoint of that iteration); tests raise from it to simulate
    a run killed at that point.
    """
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(args.dtype)
    start_all = time.perf_counter()
    tasks = SinusoidTasks(SETTINGS["amplitude"], SETTINGS["phase"], SETTINGS["x_range"])
    log(f"sinusoid: methods {', '.join(args.methods)}; {args.iterations} iterations each; "
        f"seed {args.seed}; {args.dtype}; output {out}")

    trainers, infos = {}, {}
    for method in args.methods:
        trainers[method], infos[method] = train(method, args, tasks, log, after_iteration)

    if args.train_only:
        log(f"--train-only: checkpoints in {out / 'checkpoints'}; evaluate with --resume")
        return None

    log(f"evaluating on {args.eval_tasks} held-out tasks (K = {EVAL['shots']}, 0..{EVAL['steps']} steps)")
    eval_sets = held_out_tasks(args.eval_tasks, dtype)
    results = {}
    for method in args.methods:
        t0 = time.perf_counter()
        mse = evaluate(method, trainers[method], eval_sets)
        info = infos[method]
        history = info["history"]
        results[method] = {
            "mse": mse,
            "train_wall_time_s": info["train_wall_time_s"],
            "eval_wall_time_s": time.perf_counter() - t0,
            "iterations": info["iterations"],
            "resumed_from_iteration": info["resumed_from"],
            "final_train_loss_mean_last_1000": float(np.mean(history[-1000:])) if history else None,
            "checkpoint": str(checkpoint_path(args.out, method)),
        }
    figure_task = figure2(out / "figure2.png", trainers, eval_sets)
    figure3(out / "figure3.png", results, args.eval_tasks)
    total = time.perf_counter() - start_all
    document = {
        "experiment": "sinusoid regression, Finn et al. 2017 Section 5.1 (Figures 2 and 3)",
        "tinymeta_version": tinymeta.__version__,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "settings": {
            **SETTINGS, "iterations": args.iterations, "seed": args.seed,
            "init_seed": [args.seed, 0], "task_seed": [args.seed, 1], "dtype": args.dtype,
            "methods": args.methods, "reptile": REPTILE,
            "oracle": "MLP 3-40-40-1 on (x, A, phi), Adam 1e-3 on all 2K points of 25 tasks per iteration",
            "pretrained": "MLP 1-40-40-1, Adam 1e-3 on the mean MSE of all 2K points of 25 tasks per iteration",
            "evaluation": {**EVAL, "tasks": args.eval_tasks, "figure2_task_index": figure_task},
            "checkpoint_every": args.checkpoint_every,
        },
        "methods": results,
        "total_wall_time_s": total,          # this invocation (evaluation only on a finished --resume)
        "total_train_wall_time_s": sum(r["train_wall_time_s"] for r in results.values()),
    }
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")

    if not args.quiet:
        print(f"\nMSE on {args.eval_tasks} held-out tasks (mean ± 95% CI), SGD step size {EVAL['step_size']}:")
        print(f"  {'method':<11}{'K':>3}  {'0 steps':>15}  {'1 step':>15}  {'10 steps':>15}  {'train s':>8}")
        for method, res in results.items():
            for k in sorted(EVAL["shots"], reverse=True):
                r = res["mse"][f"K{k}"]
                cells = "  ".join(f"{r['mean'][s]:7.3f} ± {r['ci95'][s]:5.3f}" for s in (0, 1, EVAL["steps"]))
                print(f"  {method:<11}{k:>3}  {cells}  {res['train_wall_time_s']:8.1f}")
        print(f"total wall time {total:.1f} s; wrote {out / 'figure2.png'}, {out / 'figure3.png'}, "
              f"{out / 'results.json'}")
    return document


if __name__ == "__main__":
    main()
