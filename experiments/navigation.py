"""2D navigation with MAML for reinforcement learning (Finn et al., 2017, Section 5.3 and
Figure 4): configurations and figures; the training, checkpoints and evaluation are the run
layer's (``tinymeta.training``), the method is ``tinymeta.algorithms.MAMLRL``.

Training (the default subcommand, ``train`` may be written or left out)::

    python -m experiments.navigation --algo maml --out runs/nav_maml
    python -m experiments.navigation --out runs/nav_maml --resume            # continue it
    python -m experiments.navigation --algo pretrained --out runs/nav_pretrained
    python -m experiments.navigation --algo oracle --out runs/nav_oracle

Evaluation of one checkpoint, and Figure 4 (MAML, pretrained, random initialisation, oracle
on the same test goals)::

    python -m experiments.navigation evaluate runs/nav_maml/best.npz [--goals 40] [--seed 1]
    python -m experiments.navigation figure [--maml CKPT] [--pretrained CKPT] [--oracle CKPT]
        [--pretrained-lr A] [--random-lr A] [--seed 1] [--out DIR]

Tasks and policy
----------------
A task is a goal uniform in [−0.5, 0.5]²; the point robot starts at the origin, observes its
position, moves by 0.1·clip(a, −1, 1) per step and receives −‖position − goal‖ (the official
code's reward), for 100 steps or until it is within 0.01 of the goal
(``tinymeta.rl.navigation``). Policy: Gaussian MLP 2-100-100-2 (ReLU), learned log σ, σ = 1
at the start. Baseline: linear in (s, s², t, t², t³, 1), fitted per task by least squares;
γ = 0.99; advantages centred per task.

Defaults (the MAML paper, Appendix A.2, and the official code; ``configs/navigation_*.json``)
------------------------------------------------------------------------------------------
``--algo maml``: 20 trajectories per task for the inner step and 20 after it, one REINFORCE
step α = 0.1, meta-batch 20 goals, TRPO with mean KL ≤ 0.01 (conjugate gradient: 10
iterations, damping 1e-5; line search: ratio 0.8, 15 steps), 500 meta-iterations. At test:
40 trajectories per step, α = 0.1 for the first step and 0.05 for the later ones.
``--algo pretrained``: the same policy trained with TRPO on all tasks jointly (the tasks'
trajectories with no inner step); ``--algo oracle``: the same, observing the goal too.

One iteration = one meta-batch. Every ``--val-every`` iterations (and at the end) the average
return after ``--inner-steps`` steps on ``--val-tasks`` validation goals (always the same) is
logged. ``<out>/checkpoint.npz``, ``log.csv`` (loss = minus the average return of the
adapted policies in that iteration; and of each TRPO step: the returns before and after the
inner step, the surrogate, the mean KL, whether the line search accepted the step and its
backtracks) and ``curves.png`` (returns; the KL under its bound δ) are written every
``--checkpoint-every`` iterations, at the end, and on Ctrl-C or SIGTERM; ``--resume``
continues bit-identically (the trajectories' random stream is the goal sampler's). With
``--keep-best`` (the default; ``--no-keep-best`` turns it off) each validation return higher
than every earlier one writes the checkpoint of that iteration to ``<out>/best.npz``;
``evaluate`` takes it, ``checkpoint.npz`` or a run folder (its ``best.npz``, else its
``checkpoint.npz``).

Evaluation
----------
``--goals`` (40) test goals from ``--seed`` (default 1), each with its own rollout seed;
average return of 40 trajectories after 0, 1, …, ``--eval-steps`` (3) policy-gradient steps;
mean ± 95% CI over the goals (``tinymeta.training.stats``). ``figure`` evaluates the four
methods on the same goals and draws Figure 4 beside the official code's numbers; the
baselines' fine-tuning step sizes are options because the paper tuned them by hand (the
defaults, ``TUNED_LR``, were chosen on tuning goals; docs/navigation.md says how).
"""
import os
import signal
import time
from pathlib import Path

import numpy as np

from autograd.allocator import reuse_large_allocations
from experiments import configs
from tinymeta.algorithms import MAMLRL
from tinymeta.rl import GaussianMLPPolicy, GoalSampler, PointNavigation, TRPO
from tinymeta.training import (pyplot, ArgumentParser, CONVENTION, RunFolder, Training, Validation,
                               describe_checkpoint, mean_ci, meta_test, resolve_checkpoint, run_config,
                               restore_learner, run_commands, save_figure, summarize, write_json)
from tinymeta.training.config import (Config, ConfigError, Option, boolean, choice, non_negative_int,
                                      positive_float, positive_int)

ALGOS = ("maml", "pretrained", "oracle")
VAL_SEED = 20170710       # the validation goals: the same ones at every validation
EVAL_SEED = 1             # default seed of the test goals
# The official code's Figure 4 (mean return over 40 goals after 0, 1, 2, 3 steps).
OFFICIAL = {"maml": [-40.41, -11.68, -3.33, -3.23], "pretrained": [-40.81, -19.73, -11.72, -8.47],
            "random": [-82.66, -57.96, -53.84, -46.81], "oracle": [-2.29]}
# The baselines' fine-tuning step sizes (every step), chosen from a grid by the mean return
# after 1-3 steps on 40 tuning goals (seed 7), as the paper tuned them by hand (docs/navigation.md).
TUNED_LR = {"pretrained": 0.01, "random": 1.0}
SHIPPED = Path(__file__).with_name("checkpoints")
RESULTS = Path(__file__).with_name("results") / "navigation"
# Test hook: kill this process (SIGKILL) right after writing the checkpoint of this iteration.
KILL_ENV = "TINYMETA_NAVIGATION_KILL_AFTER_CHECKPOINT"

# --- configurations -------------------------------------------------------------------------

RECIPES = configs.FOLDER
PAPER = configs.load("navigation_maml")
RUN_DEFAULTS = {"seed": 0, "val_every": 10, "val_tasks": 40, "checkpoint_every": 10, "keep_best": True}

OPTIONS = {
    "algo": Option(choice(*ALGOS), "maml, pretrained (TRPO on all tasks jointly) or oracle (the same, "
                                   "observing the goal) (default maml)"),
    "inner_lr": Option(positive_float, "step size α of the inner policy-gradient step (default 0.1)"),
    "inner_steps": Option(non_negative_int, "inner steps in training (default 1; 0 for pretrained and oracle)"),
    "trajectories": Option(positive_int, "trajectories per task for each policy-gradient step (default 20)"),
    "meta_batch": Option(positive_int, "goals per meta-iteration (default 20)"),
    "horizon": Option(positive_int, "steps per trajectory (default 100)"),
    "discount": Option(positive_float, "discount γ of the returns the advantages use (default 0.99)"),
    "hidden": Option(positive_int, "units per hidden layer (default 100)"),
    "layers": Option(positive_int, "hidden layers (default 2)"),
    "init_std": Option(positive_float, "initial standard deviation of the policy (default 1.0)"),
    "max_kl": Option(positive_float, "TRPO's bound on the mean KL (default 0.01)"),
    "cg_iterations": Option(positive_int, "conjugate-gradient iterations (default 10)"),
    "cg_damping": Option(positive_float, "damping λ of the Fisher matrix, F + λI (default 1e-5)"),
    "backtrack_ratio": Option(positive_float, "line-search shrink factor (default 0.8)"),
    "max_backtracks": Option(positive_int, "line-search trials (default 15)"),
    "first_order": Option(boolean, "drop the inner step's second derivatives (default false)"),
    "seed": Option(non_negative_int, "seed of the initial weights and training goals (default 0)"),
    "dtype": Option(choice("float32", "float64"), "float type (default float32)"),
    "iterations": Option(positive_int, "meta-iterations (default 500)", matters=False),
    "later_inner_lr": Option(positive_float, "step size of the test steps after the first "
                                             "(default 0.05, the paper's α/2)", matters=False),
    "test_trajectories": Option(positive_int, "trajectories per task and step at test and "
                                              "validation (default 40)", matters=False),
    "eval_steps": Option(non_negative_int, "policy-gradient steps at test (default 3)", matters=False),
    "val_every": Option(non_negative_int, "validate every N iterations, 0 = only at the end "
                                          "(default 10)", matters=False),
    "val_tasks": Option(non_negative_int, "validation goals, 0 = no validation (default 40)", matters=False),
    "checkpoint_every": Option(non_negative_int, "checkpoint every N iterations, 0 = only at the end "
                                                 "(default 10)", matters=False),
    "keep_best": Option(boolean, "write the checkpoint of the best validation return so far to "
                                 "<out>/best.npz (default: on; needs --val-tasks)", matters=False,
                        negatable=True),
}


def defaults(chosen):
    """The paper's settings (configs/navigation_maml.json); the baselines take no inner step
    in training, and the oracle is not fine-tuned at test."""
    algo = chosen.get("algo", "maml")
    cfg = {**RUN_DEFAULTS, **PAPER, "algo": algo}
    if algo != "maml":
        cfg.update(inner_steps=0)
    if algo == "oracle":
        cfg.update(eval_steps=0)
    return cfg


def check(cfg):
    if cfg["algo"] != "maml" and cfg["inner_steps"] != 0:
        raise ConfigError(f"--inner-steps {cfg['inner_steps']}: --algo {cfg['algo']} is trained "
                          "without an inner step (use --algo maml)")
    if cfg["algo"] == "maml" and cfg["inner_steps"] == 0:
        raise ConfigError("--inner-steps 0 with --algo maml is the pretrained baseline: use --algo pretrained")
    if not cfg["discount"] <= 1:
        raise ConfigError(f"--discount must be at most 1, got {cfg['discount']}")
    if not cfg["backtrack_ratio"] < 1:
        raise ConfigError(f"--backtrack-ratio must be below 1, got {cfg['backtrack_ratio']}")


CONFIG = Config(OPTIONS, defaults, checks=[check])


def build(cfg):
    """The learner of a configuration, with fresh weights (seeded by cfg['seed'])."""
    env = PointNavigation(horizon=cfg["horizon"], oracle=cfg["algo"] == "oracle")
    policy = GaussianMLPPolicy(env.observation_dim, env.action_dim, hidden=(cfg["hidden"],) * cfg["layers"],
                               init_std=cfg["init_std"])
    params = policy.init(np.random.default_rng([cfg["seed"], 0]), dtype=np.dtype(cfg["dtype"]))

    def trpo(p):
        return TRPO(p, max_kl=cfg["max_kl"], damping=cfg["cg_damping"], cg_iterations=cfg["cg_iterations"],
                    backtrack_ratio=cfg["backtrack_ratio"], max_backtracks=cfg["max_backtracks"])
    return MAMLRL(env, policy, params, inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"],
                  trajectories=cfg["trajectories"], test_trajectories=cfg["test_trajectories"],
                  later_inner_lr=cfg["later_inner_lr"], discount=cfg["discount"],
                  first_order=cfg["first_order"], optimizer=trpo)


def hooks(cfg):
    if not cfg["val_tasks"]:
        return []

    def measure(learner):
        returns = meta_test(learner, GoalSampler(rng=VAL_SEED), cfg["val_tasks"], cfg["inner_steps"])
        return mean_ci(returns["return"][-1])
    return [Validation(measure, cfg["val_every"], label=f"validation return after {cfg['inner_steps']} "
                                                        f"step(s)", percent=False,
                       keep_best=cfg["keep_best"], higher_is_better=True)]


# --- figures --------------------------------------------------------------------------------

def draw_curves(path, log, cfg):
    plt = pyplot()
    trpo = "kl" in log.extra                # MAML and the baselines' TRPO steps log their KL
    if trpo:
        fig, (ax, ax_kl) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(2, 1))
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
    returns = -np.array(log.loss)
    it = np.arange(1, len(returns) + 1)
    adapted = "after the inner step" if cfg["inner_steps"] else "no adaptation"
    if len(returns):
        ax.plot(it, returns, color="tab:blue", alpha=0.35, lw=0.8, label=f"training goals ({adapted})")
        w = min(10, len(returns))
        ax.plot(it[w - 1:], np.convolve(returns, np.ones(w) / w, mode="valid"), color="tab:blue", lw=1.6,
                label=f"mean of {w}")
    if log.val_iteration:
        ax.errorbar(log.val_iteration, log.val_mean, yerr=log.val_ci, color="tab:red", marker="o", ms=3,
                    capsize=2, label=f"{cfg['val_tasks']} validation goals, ±95% CI")
    ax.set_ylabel("average return")
    ax.set_title(f"2D navigation, {cfg['algo']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if trpo:
        draw_trpo(ax_kl, it, log, cfg)
    (ax_kl if trpo else ax).set_xlabel("meta-iteration")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def trpo_steps(log):
    """(mean KL, accepted) of every TRPO step in the log, as arrays."""
    kl = np.array(log.extra["kl"])
    return kl, np.array(log.extra.get("accepted", np.ones_like(kl))) > 0.5


def draw_trpo(ax, it, log, cfg):
    """Mean KL of each accepted TRPO step against the bound δ, and the rejected steps
    (the line search found no step with lower surrogate and KL ≤ δ: parameters unchanged)."""
    kl, accepted = trpo_steps(log)
    ax.plot(it[accepted], kl[accepted], ".", ms=3, color="tab:purple", label="mean KL of the accepted step")
    if (~accepted).any():
        ax.plot(it[~accepted], np.zeros((~accepted).sum()), "x", ms=4, color="tab:red",
                label=f"line search rejected ({(~accepted).sum()} of {len(kl)})")
    ax.axhline(cfg["max_kl"], color="black", lw=0.8, ls="--", label=f"bound δ = {cfg['max_kl']}")
    ax.set_ylabel("mean KL")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def draw_figure4(path, results, steps):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    colours = {"maml": "tab:green", "pretrained": "tab:red", "random": "tab:blue", "oracle": "black"}
    x = np.arange(steps + 1)
    for name, r in results.items():
        mean, ci = np.array(r["return"]["mean"]), np.array(r["return"]["ci95"])
        if name == "oracle":
            ax.axhline(mean[0], color=colours[name], ls="--", lw=1.2, label=f"oracle ({mean[0]:.2f})")
            continue
        ax.errorbar(x, mean, yerr=ci, color=colours[name], marker="o", ms=4, capsize=3, label=name)
        ax.plot(x, OFFICIAL[name][:steps + 1], color=colours[name], marker="x", ls=":", lw=0.8, alpha=0.6)
    ax.plot([], [], color="grey", marker="x", ls=":", lw=0.8, label="official code (Figure 4)")
    ax.set_xticks(x)
    ax.set_xlabel("number of gradient steps")
    ax.set_ylabel("average return")
    ax.set_title("2D navigation (MAML paper, Figure 4), mean ± 95% CI over goals")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


# --- commands -------------------------------------------------------------------------------

def train_parser():
    p = ArgumentParser(
        prog="python -m experiments.navigation [train]",
        description="Meta-train a Gaussian MLP policy on 2D navigation with MAML (or the pretrained "
                    "and oracle baselines). Defaults follow the MAML paper; see the module docstring.")
    CONFIG.add_arguments(p)
    p.add_argument("--out", default="runs/navigation", help="output folder (default runs/navigation)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>/checkpoint.npz (options not given take its values)")
    p.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def train(args):
    say = None if args.quiet else (lambda msg: print(msg, flush=True))
    with RunFolder(args.out, resume=args.resume, say=say or (lambda m: None)) as folder:
        cfg, resuming = run_config(CONFIG, args, folder, say)
        learner = build(cfg)
        kill_at = int(os.environ.get(KILL_ENV, "0") or 0)

        def after_checkpoint(training, iteration):
            draw_curves(folder / "curves.png", training.log, cfg)
            if kill_at and iteration == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        training = Training(learner, GoalSampler(rng=[cfg["seed"], 1]), cfg["meta_batch"], cfg["iterations"],
                            folder, cfg, label=f"navigation {cfg['algo']}", hooks=hooks(cfg),
                            checkpoint_every=cfg["checkpoint_every"], say=say,
                            progress_every=args.progress_every,
                            resume_command=f"python -m experiments.navigation --out {args.out} --resume",
                            after_checkpoint=after_checkpoint)
        if resuming:
            training.restore()
        if say:
            n_params = sum(int(np.prod(p.shape)) for p in learner.meta_parameters().values())
            say(f"{training.label}: {n_params} parameters; output {folder.path}")
            say("config: " + " ".join(f"{k}={v}" for k, v in cfg.items()))
            if resuming:
                say(f"resuming from iteration {training.iteration} of {cfg['iterations']}")
        summary = training.run_to_end()
        if say and "kl" in training.log.extra:
            say(trpo_summary(training.log, cfg))
        return summary


def trpo_summary(log, cfg):
    """One line on what TRPO's line search did over the run."""
    kl, accepted = trpo_steps(log)
    text = f"TRPO: the line search accepted {accepted.sum()} of {len(kl)} steps"
    if accepted.any():
        text += (f"; mean KL of the accepted steps {kl[accepted].mean():.4f} "
                 f"(max {kl[accepted].max():.4f}, bound {cfg['max_kl']})")
    return text


def restore(path):
    """(cfg, meta, learner) of a checkpoint (``tinymeta.training.restore_learner``)."""
    return restore_learner(path, CONFIG, build)


def test_returns(learner, goals, seed, steps, inner_lr=None, later_inner_lr=None):
    """Average returns (steps + 1, goals) on the test goals of ``seed``."""
    if later_inner_lr is not None:
        learner.later_inner_lr = float(later_inner_lr)
    return meta_test(learner, GoalSampler(rng=seed), goals, steps, chunk=20, inner_lr=inner_lr)["return"]


def evaluate_parser():
    p = ArgumentParser(prog="python -m experiments.navigation evaluate",
                                description="Average return after 0..k policy-gradient steps on test "
                                            "goals (mean ± 95% CI over the goals).")
    p.add_argument("checkpoint", help="a checkpoint written by training (best.npz, checkpoint.npz), "
                                      "or a run folder: its best.npz, else its checkpoint.npz")
    add_test_options(p)
    p.add_argument("--out", help="output folder (default runs/eval/<checkpoint stem>-<time>)")
    p.add_argument("--quiet", action="store_true", help="print only the result line")
    return p


def add_test_options(p):
    p.add_argument("--goals", type=positive_int, default=40, help="test goals (default 40)")
    p.add_argument("--seed", type=non_negative_int, default=EVAL_SEED,
                   help=f"seed of the test goals and their trajectories (default {EVAL_SEED})")
    p.add_argument("--eval-steps", type=non_negative_int, help="policy-gradient steps (default: the checkpoint's)")
    p.add_argument("--inner-lr", type=positive_float, help="step size of the first step (default: the checkpoint's)")
    p.add_argument("--later-inner-lr", type=positive_float,
                   help="step size of the later steps (default: the checkpoint's)")


def evaluate(args):
    path = resolve_checkpoint(args.checkpoint)
    cfg, meta, learner = restore(path)
    steps = cfg["eval_steps"] if args.eval_steps is None else args.eval_steps
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True))
    out = Path(args.out) if args.out else Path("runs") / "eval" / f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    with RunFolder(out, marker="evaluation.json", say=say) as folder:
        say(f"{describe_checkpoint(path, meta)}: {cfg['algo']}, {cfg['iterations']} iterations in all")
        t0 = time.perf_counter()
        returns = test_returns(learner, args.goals, args.seed, steps, args.inner_lr, args.later_inner_lr)
        stats = summarize(returns)
        result = {"checkpoint": str(path), "iteration": meta["iteration"], "best": meta.get("best"),
                  "config": cfg, "goals": args.goals,
                  "seed": args.seed, "eval_steps": steps,
                  "inner_lr": args.inner_lr or cfg["inner_lr"], "later_inner_lr": learner.later_inner_lr,
                  "return": stats, "ci": CONVENTION, "per_goal_return": returns.tolist(),
                  "seconds": time.perf_counter() - t0}
        write_json(folder / "evaluation.json", result)
        shown = " / ".join(f"{m:.2f} ± {c:.2f}" for m, c in zip(stats["mean"], stats["ci95"]))
        print(f"2D navigation, {cfg['algo']}: average return after 0..{steps} steps ({args.goals} goals, "
              f"seed {args.seed}): {shown}  ({describe_checkpoint(path, meta)}; "
              f"wrote {folder / 'evaluation.json'})", flush=True)
        return result


def figure_parser():
    p = ArgumentParser(prog="python -m experiments.navigation figure",
                                description="Figure 4: MAML, pretrained, random initialisation and oracle "
                                            "on the same test goals.")
    p.add_argument("--maml", default=str(SHIPPED / "navigation_maml.npz"), help="MAML checkpoint")
    p.add_argument("--pretrained", default=str(SHIPPED / "navigation_pretrained.npz"),
                   help="pretrained checkpoint ('none' to leave it out)")
    p.add_argument("--oracle", default=str(SHIPPED / "navigation_oracle.npz"),
                   help="oracle checkpoint ('none' to leave it out)")
    add_test_options(p)
    p.add_argument("--pretrained-lr", type=positive_float, default=TUNED_LR["pretrained"],
                   help=f"step size of every fine-tuning step of the pretrained policy (default "
                        f"{TUNED_LR['pretrained']}, tuned like the paper's baselines)")
    p.add_argument("--random-lr", type=positive_float, default=TUNED_LR["random"],
                   help=f"step size of every fine-tuning step of the random initialisation (default "
                        f"{TUNED_LR['random']})")
    p.add_argument("--out", default="runs/navigation_figure", help="output folder (default runs/navigation_figure)")
    return p


def figure(args):
    steps = 3 if args.eval_steps is None else args.eval_steps
    with RunFolder(args.out, marker="results.json", say=print) as folder:
        t0 = time.perf_counter()
        maml_cfg, maml_meta, maml = restore(Path(args.maml))
        methods = {"maml": (maml, maml_meta, args.inner_lr, args.later_inner_lr, steps)}
        if args.pretrained != "none":
            _, meta, learner = restore(Path(args.pretrained))
            methods["pretrained"] = (learner, meta, args.pretrained_lr, args.pretrained_lr, steps)
        methods["random"] = (build(maml_cfg), {"iteration": 0}, args.random_lr, args.random_lr, steps)
        if args.oracle != "none":
            _, meta, learner = restore(Path(args.oracle))
            methods["oracle"] = (learner, meta, None, None, 0)
        results = {}
        for name, (learner, meta, lr, later, k) in methods.items():
            returns = test_returns(learner, args.goals, args.seed, k, lr, later)
            stats = summarize(returns)
            results[name] = {"iteration": meta["iteration"], "inner_lr": lr or learner.inner_lr,
                             "later_inner_lr": learner.later_inner_lr, "return": stats,
                             "official": OFFICIAL[name], "per_goal_return": returns.tolist()}
            print(f"{name:10s} " + " / ".join(f"{m:.2f} ± {c:.2f}" for m, c in zip(stats["mean"], stats["ci95"])),
                  flush=True)
        write_json(folder / "results.json", {"goals": args.goals, "seed": args.seed, "steps": steps,
                                             "ci": CONVENTION, "checkpoints": {"maml": args.maml,
                                             "pretrained": args.pretrained, "oracle": args.oracle},
                                             "methods": results, "seconds": time.perf_counter() - t0})
        draw_figure4(folder / "figure4.png", results, steps)
        print(f"wrote {folder / 'results.json'} and {folder / 'figure4.png'}", flush=True)
        return results


def main(argv=None):
    return run_commands(argv, {"train": lambda a: train(train_parser().parse_args(a)),
                               "evaluate": lambda a: evaluate(evaluate_parser().parse_args(a)),
                               "figure": lambda a: figure(figure_parser().parse_args(a))},
                        setup=reuse_large_allocations)   # keep big freed buffers: no page faults each iteration


if __name__ == "__main__":
    main()
