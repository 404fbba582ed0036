"""The sinusoid regression experiment of MAML (Finn, Abbeel & Levine, 2017, Section 5.1,
Figures 2 and 3), with FOMAML, Reptile, a jointly "pretrained" network and an oracle.

    python -m experiments.sinusoid                        # the paper's run (a few minutes)
    python -m experiments.sinusoid --methods maml pretrained --iterations 5000 --out /tmp/s
    python -m experiments.sinusoid --out /tmp/s --resume  # continue (or re-evaluate) a run

Tasks: y = A sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5] (``SinusoidTasks``).
The configuration is ``experiments/configs/sinusoid_maml_paper.json`` (the paper's numbers);
``--config FILE.json`` and the command line override it. One iteration is one meta-batch of
25 tasks with K = 10 support and 10 query points each; every method starts from the same
weights (``default_rng([seed, 0])``) and sees the same tasks (``default_rng([seed, 1])``).
``METHODS`` says what each method is:

* ``maml``, ``fomaml``  one inner SGD step of 0.01 on the support set; second-order or
                        first-order meta-gradient of the query loss; Adam 1e-3.
* ``reptile``           5 SGD steps of 0.02 on all 2K points of a task, then
                        θ ← θ + ε · mean(Wᵢ − θ) with ε = 1.
* ``pretrained``        the same network trained on the mean loss of all 2K points of the
                        25 tasks (``JointTraining``), Adam 1e-3.
* ``oracle``            an MLP 3-40-40-1 that also gets (A, φ) as inputs, trained like
                        ``pretrained``; a lower bound, never adapted (step size 0).

Evaluation (Figure 3): 600 held-out tasks from their own seed (``HELD_OUT_SEED``), support
sets of K = 10 points and of their first 5, 0..10 SGD steps of 0.01 on the support set for
every method (``tinymeta.training.meta_test``), MSE on 100 points evenly spaced over
[−5, 5], mean ± 95% CI with fine-tuning runs that overflow counted and left out
(``tinymeta.training.summarize``).

Outputs in ``--out``: ``config.json`` (this run's configuration), ``<method>/checkpoint.npz``
and ``<method>/log.csv`` (``tinymeta.training.Training``: atomic, every
``--checkpoint-every`` iterations, at the end and on Ctrl-C/SIGTERM), then ``results.json``
and, last, ``figure2.png`` and ``figure3.png``. A folder that holds a run is only continued
with ``--resume``; every method then ends bit-identical to an uninterrupted run.
"""
import dataclasses
import json
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np

import tinymeta
from autograd import backend, no_grad
from autograd import functional as F
from tinymeta.algorithms import MAML, JointTraining, Reptile
from tinymeta.models import MLP
from tinymeta.optim import Adam
from tinymeta.tasks import SinusoidSampler, SinusoidTasks
from tinymeta.training import (pyplot, ArgumentParser, CONVENTION, Config, ConfigError, RunFolder, Training, UsageError,
                               meta_test, run_main, save_figure, summarize, write_json)
from tinymeta.training.config import Option, choice, non_negative_int, positive_float, positive_int

from . import configs

RECIPE = "sinusoid_maml_paper"
CONFIG_FILE = "config.json"          # marks a folder that holds a run of this experiment
HELD_OUT_SEED = 20170309             # the evaluation tasks: a seed apart from training's
HELD_OUT_SHOTS = (10, 5)             # K = 5 uses the first 5 of the same 10 points
QUERY_POINTS = 100                   # evenly spaced over the x range
TASKS = SinusoidTasks()              # A ∈ [0.1, 5], φ ∈ [0, π], x ∈ [−5, 5]


# --- the methods ----------------------------------------------------------------------------

def adam(cfg):
    return lambda params: Adam(params, lr=cfg["meta_lr"])


def maml(model, params, cfg, batched=True, first_order=False):
    return MAML(model, params, F.mse_loss, inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"],
                first_order=first_order, optimizer=adam(cfg), batched=batched)


def reptile(model, params, cfg, batched=True):
    return Reptile(model, params, F.mse_loss, inner_lr=cfg["reptile_inner_lr"],
                   inner_steps=cfg["reptile_inner_steps"], outer_lr=cfg["reptile_outer_lr"],
                   batched=batched)


def joint(model, params, cfg, batched=True):
    return JointTraining(model, params, F.mse_loss, inner_lr=cfg["eval_lr"], optimizer=adam(cfg),
                         batched=batched)


def same(batch):
    return batch


def with_task(batch):
    """The oracle's inputs: every point's x with its task's (A, φ) appended, (T, N, 3)."""
    def widen(x):
        T, N, _ = x.shape
        task = np.stack([batch.amplitude, batch.phase], axis=-1).astype(x.dtype)    # (T, 2)
        return np.concatenate([x, np.broadcast_to(task[:, None, :], (T, N, 2))], axis=-1)
    return dataclasses.replace(batch, support_x=widen(batch.support_x), query_x=widen(batch.query_x))


@dataclass(frozen=True)
class Method:
    label: str                        # in Figure 3 and the printed table
    color: str
    learner: Callable                 # (model, params, cfg, batched) -> a MetaLearner
    inputs: int = 1                   # the network's input width
    transform: Callable = same        # applied to every batch it trains and is tested on
    adapts: bool = True               # fine-tuned at meta-test (else step size 0: a flat line)
    figure2: Optional[str] = None     # its column title in Figure 2, if shown there


METHODS = {
    "maml": Method("MAML", "tab:red", maml, figure2="MAML"),
    "fomaml": Method("FOMAML", "tab:orange", partial(maml, first_order=True)),
    "reptile": Method("Reptile", "tab:purple", reptile),
    "pretrained": Method("pretrained (joint training)", "tab:blue", joint,
                         figure2="pretrained, step size {eval_lr}"),
    "oracle": Method("oracle (given A, φ)", "tab:gray", joint, inputs=3, transform=with_task,
                     adapts=False),
}


class Transformed:
    """A task sampler whose batches pass through ``transform`` (the oracle's inputs)."""

    def __init__(self, sampler, transform):
        self.sampler, self.transform = sampler, transform

    def sample_batch(self, n):
        return self.transform(self.sampler.sample_batch(n))

    def get_state(self):
        return self.sampler.get_state()

    def set_state(self, state):
        self.sampler.set_state(state)


def build(name, cfg, batched=True):
    """(learner, training task sampler) of one method, seeded by ``cfg["seed"]``."""
    method = METHODS[name]
    model = MLP([method.inputs, *cfg["hidden"], 1], activation="relu")
    params = model.init(np.random.default_rng([cfg["seed"], 0]), dtype=np.dtype(cfg["dtype"]))
    tasks = SinusoidSampler(TASKS, cfg["shots"], cfg["queries"], rng=np.random.default_rng([cfg["seed"], 1]),
                            dtype=np.dtype(cfg["dtype"]))
    return method.learner(model, params, cfg, batched=batched), Transformed(tasks, method.transform)


class HeldOutTasks:
    """The evaluation tasks, drawn from ``HELD_OUT_SEED``: K support points (the first K of
    each task's 10) and ``QUERY_POINTS`` query points evenly spaced over the x range."""

    def __init__(self, shots, dtype):
        self.shots, self.dtype = shots, np.dtype(dtype)
        self.rng = np.random.default_rng(HELD_OUT_SEED)

    def sample_batch(self, n):
        b = TASKS.sample(self.rng, n, max(HELD_OUT_SHOTS), queries=1)
        xq = np.broadcast_to(np.linspace(*TASKS.x_range, QUERY_POINTS)[None, :, None], (n, QUERY_POINTS, 1))
        yq = TASKS.function(xq, b.amplitude[:, None, None], b.phase[:, None, None])     # y = A sin(x − φ)
        cast = lambda a: a.astype(self.dtype)
        return dataclasses.replace(b, support_x=cast(b.support_x[:, :self.shots]),
                                   support_y=cast(b.support_y[:, :self.shots]), query_x=cast(xq),
                                   query_y=cast(yq))


# --- configuration --------------------------------------------------------------------------

def method_names(value):
    """'maml,oracle' or ['maml', ['oracle']] -> the names, in the order of ``METHODS``."""
    def words(v):
        if isinstance(v, str):
            return [w.strip().lower() for w in v.split(",") if w.strip()]
        if isinstance(v, (list, tuple)):
            return [w for item in v for w in words(item)]
        raise ValueError(f"expected method names, got {v!r}")
    names = words(value)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r} (choose from {', '.join(METHODS)})")
    if not names:
        raise ValueError("no method given")
    return [m for m in METHODS if m in names]


def widths(value):
    """'40,40' or [40, 40] -> [40, 40]."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"expected widths such as 40,40, got {value!r}")
    return [positive_int(v) for v in items]


OPTIONS = {
    "iterations": Option(positive_int, "meta-iterations (meta-batches) of every method", matters=False),
    "seed": Option(non_negative_int, "seed of the initial weights and the training tasks"),
    "methods": Option(method_names, f"methods to train and evaluate, of {', '.join(METHODS)} "
                      "(space or comma separated)", matters=False, many=True),
    "dtype": Option(choice("float32", "float64"), "float type"),
    "hidden": Option(widths, "hidden layer widths, e.g. 40,40"),
    "shots": Option(positive_int, "support points K per training task"),
    "queries": Option(positive_int, "query points per training task"),
    "meta_batch": Option(positive_int, "tasks per meta-iteration"),
    "inner_lr": Option(positive_float, "MAML's inner SGD step size"),
    "inner_steps": Option(positive_int, "MAML's inner steps in training"),
    "meta_lr": Option(positive_float, "outer Adam learning rate (all but Reptile)"),
    "reptile_inner_lr": Option(positive_float, "Reptile's inner SGD step size"),
    "reptile_inner_steps": Option(positive_int, "Reptile's inner SGD steps"),
    "reptile_outer_lr": Option(positive_float, "Reptile's outer step size"),
    "eval_tasks": Option(positive_int, "held-out tasks", matters=False),
    "eval_steps": Option(positive_int, "SGD steps at meta-test", matters=False),
    "eval_lr": Option(positive_float, "SGD step size at meta-test (every method but the oracle)", matters=False),
    "checkpoint_every": Option(non_negative_int, "checkpoint every N iterations (0: at the end)",
                               matters=False),
}
CONFIG = Config(OPTIONS, defaults=lambda chosen: configs.load(RECIPE))


def parse_args(argv):
    p = ArgumentParser(prog="python -m experiments.sinusoid",
               description="MAML's sinusoid regression experiment (Finn et al. 2017, Figures 2 "
                           f"and 3); defaults: experiments/configs/{RECIPE}.json.")
    CONFIG.add_arguments(p)
    p.add_argument("--out", default="runs/sinusoid", help="output folder (default runs/sinusoid)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--train-only", action="store_true",
                   help="train and checkpoint only (evaluate later with --resume)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p.parse_args(argv)


def configuration(args, say):
    """The configuration of a new run, or of the run in ``--out`` when resuming."""
    saved = Path(args.out) / CONFIG_FILE
    if not args.resume:
        return CONFIG.resolve(args)
    if not saved.is_file():
        say(f"--resume: {args.out} holds no run yet; starting one")
        return CONFIG.resolve(args)
    try:
        before = json.loads(saved.read_text())
    except ValueError as e:
        raise ConfigError(f"--resume: {saved} is not valid JSON ({e})") from None
    return CONFIG.resumed(before, args)


# --- evaluation -----------------------------------------------------------------------------

def evaluate(learner, name, cfg):
    """{"K10": summary, "K5": summary} of the MSE after 0..eval_steps steps (``summarize``)."""
    method = METHODS[name]
    out = {}
    for k in HELD_OUT_SHOTS:
        tasks = Transformed(HeldOutTasks(k, cfg["dtype"]), method.transform)
        with np.errstate(over="ignore", invalid="ignore"):     # overflowing tasks are counted
            losses = meta_test(learner, tasks, cfg["eval_tasks"], cfg["eval_steps"],
                               inner_lr=cfg["eval_lr"] if method.adapts else 0.0)["loss"]
        out[f"K{k}"] = summarize(losses)
    return out


def figure_task(cfg):
    """The held-out task shown in Figure 2: the first with amplitude in [2.5, 4.5]."""
    amplitude = HeldOutTasks(max(HELD_OUT_SHOTS), cfg["dtype"]).sample_batch(cfg["eval_tasks"]).amplitude
    good = np.flatnonzero((amplitude >= 2.5) & (amplitude <= 4.5))
    return int(good[0]) if len(good) else 0


def adapted_curves(learner, name, batch, steps, lr):
    """Predictions at ``batch``'s query points after each number of ``steps`` SGD steps."""
    batch = METHODS[name].transform(batch)
    xq, _ = learner.inputs(batch, "query")
    curves = {}
    with np.errstate(over="ignore", invalid="ignore"):        # an overflow is drawn as a gap
        for s in steps:
            fast = learner.adapt(batch, s, inner_lr=lr)
            with no_grad():
                out = learner.model(fast, xq, mode="test")
            curves[s] = np.asarray(backend.to_numpy(out.data), dtype=np.float64)[0, :, 0]
    return curves


# --- figures --------------------------------------------------------------------------------

def _pyplot():
    plt = pyplot()
    return plt


def figure2(path, learners, cfg, t):
    """MAML beside the pretrained network on held-out task ``t``: before, after 1 and after
    ``eval_steps`` SGD steps, for K = 5 (top) and K = 10 (bottom)."""
    columns = [name for name in learners if METHODS[name].figure2]
    if not columns:
        return
    plt = _pyplot()
    last = cfg["eval_steps"]
    styles = {0: ("pre-update", "tab:green", ":"), 1: ("1 grad step", "tab:olive", "--"),
              last: (f"{last} grad steps", "tab:red", "--")}
    fig, axes = plt.subplots(len(HELD_OUT_SHOTS), len(columns), squeeze=False, sharex=True,
                             figsize=(5.2 * len(columns), 3.6 * len(HELD_OUT_SHOTS)))
    for r, k in enumerate(sorted(HELD_OUT_SHOTS)):
        b = HeldOutTasks(k, cfg["dtype"]).sample_batch(cfg["eval_tasks"])
        x = np.linspace(*TASKS.x_range, 200)[None, :, None]
        one = dataclasses.replace(b, support_x=b.support_x[t:t + 1], support_y=b.support_y[t:t + 1],
                                  amplitude=b.amplitude[t:t + 1], phase=b.phase[t:t + 1],
                                  query_x=x, query_y=TASKS.function(x, b.amplitude[t], b.phase[t]))
        A = float(one.amplitude[0])
        for c, name in enumerate(columns):
            ax = axes[r, c]
            ax.plot(x[0, :, 0], one.query_y[0, :, 0], color="black", lw=2.0, label="ground truth")
            for s, y in adapted_curves(learners[name], name, one, sorted(styles), cfg["eval_lr"]).items():
                label, color, ls = styles[s]
                ax.plot(x[0, :, 0], y, color=color, ls=ls, lw=1.8, label=label)
            ax.scatter(one.support_x[0, :, 0], one.support_y[0, :, 0], marker="^", s=60,
                       color="tab:purple", zorder=5, label="support points (K)")
            ax.set_title(f"{METHODS[name].figure2.format(**cfg)}, K={k} support points")
            ax.set_ylim(-1.6 * max(A, 1.0) - 0.5, 1.6 * max(A, 1.0) + 0.5)
            ax.grid(alpha=0.3)
            ax.set_xlabel("x" if r == len(HELD_OUT_SHOTS) - 1 else "")
            ax.set_ylabel("y" if c == 0 else "")
    handles, labels = axes[-1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(f"Few-shot adaptation on a held-out sinusoid (A = {A:.2f}, "
                 f"φ = {float(one.phase[0]):.2f}); SGD step size {cfg['eval_lr']}", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save_figure(fig, path)
    plt.close(fig)


def figure3(path, results, cfg):
    """MSE against gradient steps, mean and 95% CI band, K = 10 and K = 5. The y-axis is
    fitted to the finite means (a wide band is clipped at the top, tasks that overflowed are
    left out and counted in the title)."""
    plt = _pyplot()
    steps = np.arange(cfg["eval_steps"] + 1)
    means = np.array([v for r in results.values() for s in r["mse"].values() for v in s["mean"]], dtype=float)
    finite = means[np.isfinite(means)]
    top = 1.12 * finite.max() if finite.size and finite.max() > 0 else 1.0
    fig, axes = plt.subplots(1, len(HELD_OUT_SHOTS), figsize=(6.2 * len(HELD_OUT_SHOTS), 4.6), squeeze=False)
    for ax, k in zip(axes[0], HELD_OUT_SHOTS):
        diverged = 0
        for name, res in results.items():
            s, method = res["mse"][f"K{k}"], METHODS[name]
            m, ci = np.array(s["mean"], dtype=float), np.array(s["ci95"], dtype=float)
            style = dict(marker="o", ms=4) if method.adapts else dict(ls="--")
            ax.plot(steps, m, color=method.color, lw=1.8, label=method.label, **style)
            ax.fill_between(steps, m - ci, m + ci, color=method.color, alpha=0.2, lw=0)
            diverged += s["diverged"]
        left_out = f" ({diverged} diverged fine-tuning run{'s' * (diverged != 1)} left out)" if diverged else ""
        ax.set_title(f"K = {k}: MSE on {cfg['eval_tasks']} held-out tasks{left_out}")
        ax.set_xlabel(f"number of gradient steps (SGD, step size {cfg['eval_lr']})")
        ax.set_ylabel("mean squared error")
        ax.set_xticks(steps)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5)
    fig.suptitle("Sinusoid regression: MSE after k gradient steps (shaded: 95% confidence "
                 "interval of the mean, clipped at the top)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def print_table(results, cfg):
    last = cfg["eval_steps"]
    print(f"\nMSE on {cfg['eval_tasks']} held-out tasks (mean ± 95% CI), SGD step size {cfg['eval_lr']}:")
    print(f"  {'method':<11}{'K':>3}  {'0 steps':>15}  {'1 step':>15}  {f'{last} steps':>15}  "
          f"{'diverged':>8}  {'train s':>8}")
    for name, res in results.items():
        for k in HELD_OUT_SHOTS:
            r = res["mse"][f"K{k}"]
            cells = "  ".join(f"{r['mean'][s]:7.3f} ± {r['ci95'][s]:5.3f}" for s in (0, 1, last))
            print(f"  {name:<11}{k:>3}  {cells}  {r['diverged']:>8}  {res['train_wall_time_s']:8.1f}")


# --- main -----------------------------------------------------------------------------------

def train(name, cfg, folder, resume, say, resume_command, after_checkpoint):
    """Train one method in ``folder`` (continuing its checkpoint when resuming); returns
    (learner, ``Training.run``'s summary, the per-iteration losses)."""
    learner, tasks = build(name, cfg)
    training = Training(learner, tasks, cfg["meta_batch"], cfg["iterations"], folder, cfg, label=name,
                        checkpoint_every=cfg["checkpoint_every"], say=say,
                        resume_command=resume_command, after_checkpoint=after_checkpoint)
    if resume and training.restore() and say:
        done = training.iteration == cfg["iterations"]
        say(f"{name}: checkpoint at iteration {training.iteration}"
            + ("; finished, not retrained" if done else f"; continuing to {cfg['iterations']}"))
    return learner, training.run(), training.log.loss


def result(name, learner, summary, losses, cfg, checkpoint):
    """One method's entry of results.json: its evaluation and how it was trained."""
    started = time.perf_counter()
    return {"mse": evaluate(learner, name, cfg),
            "eval_lr": cfg["eval_lr"] if METHODS[name].adapts else 0.0,
            "train_wall_time_s": summary["train_seconds_total"],
            "eval_wall_time_s": time.perf_counter() - started,
            "iterations": summary["iterations"], "resumed_from_iteration": summary["resumed_from"],
            "final_train_loss_mean_last_1000": float(np.mean(losses[-1000:])) if losses else None,
            "checkpoint": str(checkpoint)}


def main(argv=None, after_checkpoint=None):
    """Train, evaluate and plot; returns the results document (None with ``--train-only``).

    ``after_checkpoint(training, iteration)`` is passed to every ``Training`` (tests raise
    from it to kill a run at a known point)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_args(argv)
    say = None if args.quiet else partial(print, flush=True)
    log = say or (lambda *a: None)
    cfg = configuration(args, log)
    out, started = Path(args.out), time.perf_counter()
    resume = f"python -m experiments.sinusoid --out {out} --resume" + (" --train-only" if args.train_only else "")
    with ExitStack() as stack:
        stack.enter_context(RunFolder(out, resume=args.resume, marker=CONFIG_FILE, say=log))
        if not args.resume and (out / "results.json").exists():        # a run of an older layout
            raise UsageError(f"{out} already holds results.json: pass --resume to continue that "
                             "run, or choose another --out")
        folders = {name: stack.enter_context(RunFolder(out / name, resume=args.resume, say=log))
                   for name in cfg["methods"]}                  # all checked before any training
        write_json(out / CONFIG_FILE, cfg)
        log(f"sinusoid: {', '.join(cfg['methods'])}; {cfg['iterations']} iterations each; seed "
            f"{cfg['seed']}; {cfg['dtype']}; output {out}")
        trained = {name: train(name, cfg, folders[name].path, args.resume, say, resume, after_checkpoint)
                   for name in cfg["methods"]}                  # name -> (learner, summary, losses)
        if args.train_only:
            log(f"--train-only: checkpoints in {out}/<method>/; evaluate with --resume")
            return None

        log(f"evaluating on {cfg['eval_tasks']} held-out tasks (K = 10 and 5, 0..{cfg['eval_steps']} steps)")
        results = {name: result(name, *trained[name], cfg, folders[name] / "checkpoint.npz")
                   for name in trained}
        t = figure_task(cfg)
        document = {
            "experiment": "sinusoid regression, Finn et al. 2017 Section 5.1 (Figures 2 and 3)",
            "tinymeta_version": tinymeta.__version__, "argv": argv, "config": cfg,
            "evaluation": {"held_out_seed": HELD_OUT_SEED, "shots": list(HELD_OUT_SHOTS),
                           "query": f"{QUERY_POINTS} points evenly spaced over {list(TASKS.x_range)}",
                           "ci": CONVENTION, "figure2_task_index": t},
            "methods": results,
            "total_wall_time_s": time.perf_counter() - started,
            "total_train_wall_time_s": sum(r["train_wall_time_s"] for r in results.values()),
        }
        write_json(out / "results.json", document)             # before the figures: they can fail
        if say:
            print_table(results, cfg)
        figure2(out / "figure2.png", {name: learner for name, (learner, _, _) in trained.items()}, cfg, t)
        figure3(out / "figure3.png", results, cfg)
        log(f"wrote {out / 'results.json'}, {out / 'figure2.png'}, {out / 'figure3.png'}")
        return document


if __name__ == "__main__":
    run_main(main)
