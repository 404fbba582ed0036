"""Few-shot Omniglot classification (Finn et al., 2017, Section 5.2; Nichol et al., 2018)
with MAML, FOMAML, ANIL, Meta-SGD or Reptile: configurations and figures; the training,
checkpoints and evaluation are the run layer's (``tinymeta.training``).

Training (the default subcommand, ``train`` may be written or left out)::

    python -m experiments.omniglot --algo maml --ways 5 --shots 1 --out runs/omni5w1s
    python -m experiments.omniglot --out runs/omni5w1s --resume          # continue it
    python -m experiments.omniglot --config experiments/configs/omniglot_5w1s_maml.json --out runs/x

Evaluation of a checkpoint on the meta-test split, or on Lake et al.'s 20 one-shot runs::

    python -m experiments.omniglot evaluate runs/omni5w1s/checkpoint.npz [--tasks 600]
        [--eval-steps N] [--seed S] [--data-dir D] [--lake] [--out FOLDER]

The data folder is ``--data-dir`` or ``$TINYMETA_DATA``: the folder that *contains* ``omniglot/``.

Data and model
--------------
Images 28×28 (area-resized, ink = 1). ``--split maml`` (default): the MAML split of all 1623
characters (split seed 0): 1200 for meta-training, of which the last 100 are held out for
validation, and 423 for meta-testing; the 1100 training characters are multiplied by four
with 90° rotations (4400 training classes). ``--split lake``: background alphabets for
training (of which 100 characters, chosen with a fixed seed, are held out for validation;
the rest rotated ×4) and evaluation alphabets for testing. Model: ``Conv4(ways,
in_channels=1, filters=64, image_size=28)`` with transductive batch norm
(``--non-transductive`` keeps running statistics for meta-test instead). Loss: cross-entropy.

Defaults (from the papers; a recipe file or the command line wins)
------------------------------------------------------------------
MAML family (``maml``, ``fomaml``, ``anil``, ``metasgd``; Finn et al. 2017, Appendix A.1):

* 5-way:  inner SGD step α = 0.4, 1 inner step in training, 3 at test, meta-batch 32;
* 20-way: α = 0.1, 5 inner steps in training and at test, meta-batch 16;
* 15 query examples per class, Adam with ``--meta-lr`` 1e-3, 60 000 iterations.
  Meta-SGD starts its learned per-parameter step sizes at α.

Reptile (Nichol et al. 2018, Table 3, simplified): per task, 5 steps of Adam (lr 1e-3,
β₁ = 0, the moments reset for every task) on the task's support *and* query examples
together, then θ ← θ + ε·mean(Wᵢ − θ) with ε (``--outer-lr``) 1.0 annealed linearly to 0
over ``--iterations``; meta-batch 5, 100 000 iterations. At test it adapts with 50 steps of
the same inner Adam on the support set.

One iteration = one meta-batch. Every ``--val-every`` iterations (and at the end) the model
is adapted on ``--val-tasks`` validation tasks, always the same ones (a fixed seed), and its
query accuracy after ``--eval-steps`` inner steps is logged. ``<out>/checkpoint.npz``,
``log.csv`` and ``curves.png`` are written every ``--checkpoint-every`` iterations, at the
end, and on Ctrl-C or SIGTERM; ``--resume`` continues bit-identically (same numerical
settings), taking the checkpoint's options; options that change the training are refused.

Evaluation
----------
``evaluate``: ``--tasks`` (600) tasks from the checkpoint's test split with its ways, shots
and query size, drawn from ``--seed`` (default 1), adapted with ``--eval-steps`` (default:
the checkpoint's) inner steps; mean query accuracy ± 95% CI (``tinymeta.training.stats``),
written to ``--out`` (default ``runs/eval/<checkpoint stem>-<time>``), never beside the
checkpoint. ``evaluate --lake``: Lake et al.'s 20 runs of 20-way one-shot classification
within an alphabet (``all_runs.zip``). A 20-way checkpoint adapts to each run's 20 training
images; a checkpoint with another number of ways classifies each test image as the training
image whose body features are nearest in cosine similarity (1-nearest neighbour, no
adaptation). The runs come from the evaluation alphabets, so only a ``--split lake`` model
has never seen their characters (a warning says so for a MAML-split model).
"""
import hashlib
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from autograd import Tensor, backend, no_grad
from autograd import functional as F
from autograd.allocator import reuse_large_allocations
from tinymeta import checkpoint
from tinymeta.algorithms import ANIL, MAML, MetaSGD, ProtoNet, Reptile
from tinymeta.data.omniglot import augment_rotations, lake_split, load_lake_runs, load_omniglot, maml_split
from tinymeta.models import Conv4
from tinymeta.optim import Adam
from tinymeta.tasks import episode_sampler
from tinymeta.tasks.episodic import Episode, EpisodeSampler
from tinymeta.training import (ArgumentParser, CHECKPOINT, LinearDecay, StepDecay, RunFolder, Training, UsageError, Validation,
                               mean_ci, meta_test, read_checkpoint, run_main, save_figure, summarize,
                               write_json, CONVENTION)
from tinymeta.training.config import (Config, ConfigError, Option, boolean, choice, non_negative_int,
                                      positive_float, positive_int)

ALGOS = ("maml", "fomaml", "reptile", "anil", "metasgd", "protonet")
IMAGE_SIZE = 28
DRAWINGS = 20
VAL_SEED = 20170309       # the validation tasks: the same ones at every validation
EVAL_SEED = 1             # default seed of the meta-test tasks
HUMAN_LAKE_ERROR = 4.5    # percent, Lake et al. (2015)
# Test hook: kill this process (SIGKILL) right after writing the checkpoint of this iteration.
KILL_ENV = "TINYMETA_OMNIGLOT_KILL_AFTER_CHECKPOINT"

# --- configurations -------------------------------------------------------------------------

MAML_DEFAULTS = {        # Finn et al. 2017, Appendix A.1, by ways
    5: {"inner_lr": 0.4, "inner_steps": 1, "eval_steps": 3, "meta_batch": 32},
    20: {"inner_lr": 0.1, "inner_steps": 5, "eval_steps": 5, "meta_batch": 16},
}
COMMON_DEFAULTS = {"ways": 5, "shots": 1, "query": 15, "seed": 0, "split": "maml", "dtype": "float32",
                   "filters": 64, "transductive": True, "val_tasks": 100, "val_every": 500,
                   "checkpoint_every": 1000, "image_size": IMAGE_SIZE, "n_val": 100, "split_seed": 0}
REPTILE_DEFAULTS = {"inner_lr": 1e-3, "inner_steps": 5, "eval_steps": 50, "meta_batch": 5,
                    "outer_lr": 1.0, "iterations": 100000, "meta_lr": None}
REPTILE_ADAM_BETAS = (0.0, 0.999)
PROTONET_DEFAULTS = {   # Snell et al. 2017, Section 3.1: 60-way training episodes, 5 queries per class
    "ways": 60, "query": 5, "test_ways": 5, "test_query": 15, "meta_batch": 1, "meta_lr": 1e-3,
    "lr_halve_every": 2000, "transductive": False, "inner_lr": None, "inner_steps": None,
    "outer_lr": None, "eval_steps": 0, "iterations": 20000, "val_every": 1000, "val_tasks": 200}

OPTIONS = {
    "algo": Option(choice(*ALGOS), "meta-learner (default maml)"),
    "ways": Option(positive_int, "classes per task (default 5)"),
    "shots": Option(positive_int, "support examples per class (default 1)"),
    "query": Option(positive_int, "query examples per class (default 15)"),
    "inner_steps": Option(positive_int, "inner steps in training (default 1 for 5-way, 5 for 20-way, Reptile 5)"),
    "inner_lr": Option(positive_float, "inner step size α (default 0.4 for 5-way, 0.1 for 20-way; "
                                       "Reptile: inner Adam lr 1e-3)"),
    "meta_batch": Option(positive_int, "tasks per iteration (default 32 for 5-way, 16 for 20-way, Reptile 5)"),
    "meta_lr": Option(positive_float, "outer Adam learning rate (default 1e-3; not used by Reptile)"),
    "outer_lr": Option(positive_float, "Reptile's outer step size ε at the start, annealed linearly "
                                       "to 0 (default 1.0)"),
    "seed": Option(non_negative_int, "seed of the initial weights and training tasks (default 0)"),
    "split": Option(choice("maml", "lake"), "class split (default maml)"),
    "dtype": Option(choice("float32", "float64"), "float type (default float32)"),
    "filters": Option(positive_int, "filters per conv layer (default 64)"),
    "transductive": Option(boolean, "batch norm with running statistics at meta-test "
                                    "(default: transductive)", flag="--non-transductive",
                           store_false=True),
    "image_size": Option(positive_int, "image side in pixels (default 28)", flag="--image-size"),
    "n_val": Option(non_negative_int, "validation characters held out of training (default 100)"),
    "split_seed": Option(non_negative_int, "seed of the class split (default 0)"),
    "lr_halve_every": Option(non_negative_int, "halve the outer learning rate every N iterations, "
                                               "0 = never (default 0; ProtoNets 2000)"),
    "iterations": Option(positive_int, "meta-iterations (default 60000, Reptile 100000, ProtoNets "
                                       "20000)", matters=False),
    "test_ways": Option(positive_int, "classes per validation and test task (default: --ways; "
                                      "ProtoNets 5)", matters=False),
    "test_query": Option(positive_int, "query examples per class in validation and test tasks "
                                       "(default: --query; ProtoNets 15)", matters=False),
    "eval_steps": Option(non_negative_int, "inner steps at validation and test (default 3 for 5-way, "
                                           "5 for 20-way, Reptile 50)", matters=False),
    "val_every": Option(non_negative_int, "validate every N iterations, 0 = only at the end "
                                          "(default 500)", matters=False),
    "val_tasks": Option(non_negative_int, "validation tasks, 0 = no validation (default 100)", matters=False),
    "checkpoint_every": Option(non_negative_int, "checkpoint every N iterations, 0 = only at the end "
                                                 "(default 1000)", matters=False),
}


def defaults(chosen):
    """The papers' defaults for the chosen algorithm and number of ways."""
    algo, ways = chosen.get("algo", "maml"), chosen.get("ways", 5)
    if algo == "protonet":
        return {**COMMON_DEFAULTS, **PROTONET_DEFAULTS, "algo": algo}
    if algo == "reptile":
        cfg = {**COMMON_DEFAULTS, **REPTILE_DEFAULTS, "algo": algo}
    else:
        per_ways = MAML_DEFAULTS[20] if ways >= 20 else MAML_DEFAULTS[5]
        cfg = {**COMMON_DEFAULTS, **per_ways, "algo": algo, "meta_lr": 1e-3, "outer_lr": None,
               "iterations": 60000}
    return {**cfg, "lr_halve_every": 0, "test_ways": chosen.get("ways", cfg["ways"]),
            "test_query": chosen.get("query", cfg["query"])}


def check(cfg):
    if cfg["shots"] + cfg["query"] > DRAWINGS:
        raise ConfigError(f"--shots + --query = {cfg['shots']} + {cfg['query']} = "
                          f"{cfg['shots'] + cfg['query']} is more than the {DRAWINGS} drawings of "
                          "each Omniglot character")
    if cfg["ways"] < 2:
        raise ConfigError(f"--ways must be at least 2, got {cfg['ways']}")
    if cfg["test_ways"] > 423:                      # the smallest split part a run uses: 423 test classes
        raise ConfigError(f"--test-ways {cfg['test_ways']} is more than the 423 test characters of "
                          "the MAML split (at most 423; the Lake split has 659)")
    if cfg["algo"] not in HEADLESS and cfg["test_ways"] != cfg["ways"]:
        raise ConfigError(f"--test-ways {cfg['test_ways']} differs from --ways {cfg['ways']}, but "
                          f"--algo {cfg['algo']} has a {cfg['ways']}-way head")
    if cfg["shots"] + cfg["test_query"] > DRAWINGS:
        raise ConfigError(f"--shots + --test-query = {cfg['shots'] + cfg['test_query']} is more than "
                          f"the {DRAWINGS} drawings of each Omniglot character")
    unused = {"reptile": ["meta_lr"], "protonet": ["outer_lr", "inner_lr", "inner_steps"]}.get(
        cfg["algo"], ["outer_lr"])
    for k in unused:
        if cfg.get(k) is not None:
            raise ConfigError(f"--{k.replace('_', '-')} does not apply to --algo {cfg['algo']}")


CONFIG = Config(OPTIONS, defaults, checks=[check])
RECIPES = Path(__file__).with_name("configs")

# --- data -----------------------------------------------------------------------------------


def load_split(cfg, data_dir):
    """(train classes rotated ×4, validation classes, test classes, fingerprint)."""
    data = load_omniglot(data_dir, size=cfg["image_size"])
    if cfg["split"] == "maml":
        split = maml_split(data, seed=cfg["split_seed"], n_val=cfg["n_val"])
        train, val, test = split.train, split.val, split.test
    else:
        split = lake_split(data)
        order = np.random.default_rng(cfg["split_seed"]).permutation(len(split.train))
        n_val = min(cfg["n_val"], len(order))
        train, val = split.train[np.sort(order[n_val:])], split.train[np.sort(order[:n_val])]
        test = split.test
    digest = hashlib.sha256()
    for part in (train, val, test):
        digest.update(np.ascontiguousarray(part).tobytes())
    return augment_rotations(train), val, test, digest.hexdigest()


def check_classes(ways, **parts):
    for name, classes in parts.items():
        if ways > len(classes):
            hint = " (--val-tasks 0 turns validation off)" if name == "validation" else ""
            raise UsageError(f"--ways {ways} is more than the {len(classes)} {name} classes{hint}")


def sampler(cfg, classes, seed, test=False):
    """Training episodes, or (``test``) validation/test episodes with the test ways and queries."""
    ways, query = (cfg["test_ways"], cfg["test_query"]) if test else (cfg["ways"], cfg["query"])
    make = EpisodeSampler if test else episode_sampler      # training: gathered on the GPU under CuPy
    return make(classes, ways, cfg["shots"], query, rng=seed, dtype=np.dtype(cfg["dtype"]))


def task_chunk(cfg):
    """Tasks per evaluation call, so one call holds about 2000 images."""
    return max(1, 2000 // (cfg["test_ways"] * (cfg["shots"] + cfg["test_query"])))


# --- the learner ----------------------------------------------------------------------------

LEARNERS = {     # algo → (model, params, cfg, batched) → learner; the bench builds from it too
    "maml": lambda m, p, c, batched=True: MAML(m, p, F.cross_entropy, c["inner_lr"], c["inner_steps"],
                                               optimizer=adam(c), batched=batched),
    "fomaml": lambda m, p, c, batched=True: MAML(m, p, F.cross_entropy, c["inner_lr"], c["inner_steps"],
                                                 first_order=True, optimizer=adam(c), batched=batched),
    "anil": lambda m, p, c, batched=True: ANIL(m, p, F.cross_entropy, inner_lr=c["inner_lr"],
                                               inner_steps=c["inner_steps"], optimizer=adam(c),
                                               batched=batched),
    "metasgd": lambda m, p, c, batched=True: MetaSGD(m, p, F.cross_entropy, inner_lr=c["inner_lr"],
                                                     inner_steps=c["inner_steps"], optimizer=adam(c),
                                                     batched=batched),
    "reptile": lambda m, p, c, batched=True: Reptile(m, p, F.cross_entropy, c["inner_lr"], c["inner_steps"],
                                                     outer_lr=c["outer_lr"], inner_optimizer="adam",
                                                     adam_betas=REPTILE_ADAM_BETAS, batched=batched),
    "protonet": lambda m, p, c, batched=True: ProtoNet(m, p, optimizer=adam(c), batched=batched),
}
HEADLESS = ("protonet",)       # learners whose model is an embedding: any ways at test


def adam(cfg):
    return lambda params: Adam(params, lr=cfg["meta_lr"])


def build(cfg):
    """The learner of a configuration, with fresh weights (seeded by cfg['seed'])."""
    headless = cfg["algo"] in HEADLESS              # Snell et al.'s encoder: max-pool blocks, no head
    model = Conv4(None if headless else cfg["ways"], in_channels=1, filters=cfg["filters"],
                  image_size=cfg["image_size"], max_pool=headless, transductive=cfg["transductive"])
    params = model.init(np.random.default_rng([cfg["seed"], 0]), dtype=np.dtype(cfg["dtype"]))
    return LEARNERS[cfg["algo"]](model, params, cfg)


def hooks(cfg, val_classes):
    out = []
    if cfg["algo"] == "reptile":
        out.append(LinearDecay(cfg["outer_lr"], cfg["iterations"]))     # ε annealed to 0
    if cfg["lr_halve_every"]:
        out.append(StepDecay(cfg["meta_lr"], cfg["lr_halve_every"], 0.5))
    if cfg["val_tasks"]:
        def measure(learner):
            acc = meta_test(learner, sampler(cfg, val_classes, VAL_SEED, test=True), cfg["val_tasks"],
                            cfg["eval_steps"], task_chunk(cfg))["accuracy"][-1]
            return mean_ci(acc)
        out.append(Validation(measure, cfg["val_every"]))
    return out


# --- figures --------------------------------------------------------------------------------

def draw_curves(path, log, cfg):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    it = np.arange(1, len(log.loss) + 1)
    loss = np.array(log.loss)
    if len(loss):
        ax1.plot(it, loss, color="tab:blue", alpha=0.25, lw=0.8, label="per iteration")
        w = min(100, len(loss))
        ax1.plot(it[w - 1:], np.convolve(loss, np.ones(w) / w, mode="valid"), color="tab:blue",
                 lw=1.6, label=f"mean of {w}")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("meta-loss (query, after adaptation)")
    ax1.set_title("training loss")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    if log.val_iteration:
        ax2.errorbar(log.val_iteration, 100 * np.array(log.val_mean), yerr=100 * np.array(log.val_ci),
                     color="tab:red", marker="o", ms=3, capsize=2)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel(f"accuracy after {cfg['eval_steps']} steps (%)")
    ax2.set_title(f"validation ({cfg['val_tasks']} tasks, ±95% CI)")
    ax2.grid(alpha=0.3)
    fig.suptitle(f"Omniglot {cfg['ways']}-way {cfg['shots']}-shot, {cfg['algo']}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


# --- commands -------------------------------------------------------------------------------

def train_parser():
    p = ArgumentParser(
        prog="python -m experiments.omniglot [train]",
        description="Meta-train a Conv4 on few-shot Omniglot. Defaults follow the MAML paper "
                    "(and the Reptile paper for --algo reptile) and depend on --ways; see the "
                    "module docstring. Evaluate with: python -m experiments.omniglot evaluate CKPT")
    CONFIG.add_arguments(p)
    p.add_argument("--out", default="runs/omniglot", help="output folder (default runs/omniglot)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>/checkpoint.npz (options not given take its values)")
    p.add_argument("--data-dir", help="folder containing omniglot/ (default $TINYMETA_DATA)")
    p.add_argument("--progress-every", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def evaluate_parser():
    p = ArgumentParser(
        prog="python -m experiments.omniglot evaluate",
        description="Evaluate a checkpoint on meta-test tasks (mean accuracy ± 95% CI), or on "
                    "Lake et al.'s 20-way one-shot runs with --lake.")
    p.add_argument("checkpoint", help="a checkpoint.npz written by training")
    p.add_argument("--tasks", type=positive_int, default=600, help="test tasks (default 600)")
    p.add_argument("--eval-steps", type=non_negative_int,
                   help="inner steps (default: the checkpoint's --eval-steps)")
    p.add_argument("--seed", type=non_negative_int, default=EVAL_SEED,
                   help=f"seed of the test tasks (default {EVAL_SEED})")
    p.add_argument("--data-dir", help="folder containing omniglot/ (default $TINYMETA_DATA)")
    p.add_argument("--lake", action="store_true", help="Lake et al.'s 20 runs of 20-way one-shot "
                   "within-alphabet classification instead of random test tasks")
    p.add_argument("--ways", type=positive_int, help="classes per test task (default: the "
                   "checkpoint's test ways; only learners without a fixed head may change it)")
    p.add_argument("--shots", type=positive_int, help="support examples per class (default: the checkpoint's)")
    p.add_argument("--query", type=positive_int, help="query examples per class (default: the "
                   "checkpoint's test queries)")
    p.add_argument("--out", help="output folder (default runs/eval/<checkpoint stem>-<time>)")
    p.add_argument("--quiet", action="store_true", help="print only the result line")
    return p


def train(args):
    say = None if args.quiet else (lambda msg: print(msg, flush=True))
    with RunFolder(args.out, resume=args.resume, say=say or (lambda m: None)) as folder:
        path = folder / CHECKPOINT
        resuming = args.resume and path.exists()
        if resuming:
            cfg = CONFIG.resumed(read_checkpoint(path)[1]["config"], args)
        else:
            if args.resume and say:
                say(f"--resume: no checkpoint at {path}; starting from scratch")
            cfg = CONFIG.resolve(args)
        t0 = time.perf_counter()
        train_classes, val_classes, _test, fingerprint = load_split(cfg, args.data_dir)
        check_classes(cfg["ways"], training=train_classes)
        if cfg["val_tasks"]:
            check_classes(cfg["test_ways"], validation=val_classes)
        learner = build(cfg)
        kill_at = int(os.environ.get(KILL_ENV, "0") or 0)

        def after_checkpoint(training, iteration):
            draw_curves(folder / "curves.png", training.log, cfg)
            if kill_at and iteration == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        training = Training(learner, sampler(cfg, train_classes, [cfg["seed"], 1]), cfg["meta_batch"],
                            cfg["iterations"], folder, cfg,
                            label=f"omniglot {cfg['ways']}w{cfg['shots']}s {cfg['algo']}",
                            hooks=hooks(cfg, val_classes), checkpoint_every=cfg["checkpoint_every"],
                            fingerprint=fingerprint, say=say, progress_every=args.progress_every,
                            resume_command=f"python -m experiments.omniglot --out {args.out} --resume",
                            after_checkpoint=after_checkpoint)
        if resuming:
            training.restore()
        n_params = sum(int(np.prod(p.shape)) for p in learner.meta_parameters().values())
        if say:
            say(f"{training.label}, split {cfg['split']}: {len(train_classes)} training / "
                f"{len(val_classes)} validation classes; {n_params} parameters; data "
                f"{time.perf_counter() - t0:.1f} s; output {folder.path}")
            say("config: " + " ".join(f"{k}={v}" for k, v in cfg.items()))
            if resuming:
                say(f"resuming from iteration {training.iteration} of {cfg['iterations']}")
        if training.iteration >= cfg["iterations"]:
            if say:
                say(f"checkpoint already at iteration {training.iteration}; nothing to train")
            return {"config": cfg, "iteration": training.iteration}
        summary = training.run()
        if say:
            done = cfg["iterations"] - summary["resumed_from"]
            say(f"trained {done} iterations in {summary['seconds']:.1f} s "
                f"({summary['seconds'] / done:.3f} s/iteration with validation and checkpoints); "
                f"total training time {summary['train_seconds_total']:.1f} s; wrote {path}")
        return {"config": cfg, **summary}


def restore(path):
    """(cfg, meta, learner) of a checkpoint; refuses non-finite parameters."""
    arrays, meta = read_checkpoint(path)
    cfg = CONFIG.complete(meta["config"])
    learner = build(cfg)
    try:
        learner.load_state_dict(checkpoint.unpack({k: v for k, v in arrays.items()
                                                   if not k.startswith("log/")}, meta["learner"]))
    except (ValueError, KeyError) as e:
        raise UsageError(f"checkpoint {path}: does not fit its own configuration ({e})") from None
    bad = [k for k, p in learner.meta_parameters().items()
           if not np.isfinite(backend.to_numpy(p.data)).all()]
    if bad:
        raise UsageError(f"checkpoint {path}: parameters {bad} are not finite; it cannot be evaluated")
    return cfg, meta, learner


def evaluate(args):
    path = Path(args.checkpoint)
    cfg, meta, learner = restore(path)
    for option, key in (("ways", "test_ways"), ("shots", "shots"), ("query", "test_query")):
        if getattr(args, option) is not None:
            cfg[key] = getattr(args, option)
    cfg = CONFIG.check(cfg)
    steps = cfg["eval_steps"] if args.eval_steps is None else args.eval_steps
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / "eval" / f"{path.stem}-{stamp}"
    with RunFolder(out, marker="evaluation.json", say=say) as folder:
        say(f"checkpoint {path}: {cfg['algo']} {cfg['ways']}-way {cfg['shots']}-shot, split "
            f"{cfg['split']}, iteration {meta['iteration']} of {cfg['iterations']}")
        t0 = time.perf_counter()
        _train, _val, test, fingerprint = load_split(cfg, args.data_dir)
        data_note = None
        if meta.get("data") and meta["data"] != fingerprint:
            data_note = (f"the data differ from those the checkpoint was trained on (fingerprint "
                         f"{meta['data'][:12]}…, now {fingerprint[:12]}…)")
            print(f"warning: {data_note}", file=sys.stderr, flush=True)
        if args.lake:
            return evaluate_lake(args, folder, path, cfg, meta, learner, steps, say, t0)
        check_classes(cfg["test_ways"], test=test)
        results = meta_test(learner, sampler(cfg, test, args.seed, test=True), args.tasks, steps,
                            task_chunk(cfg))
        acc = summarize(100.0 * results["accuracy"])
        m, ci = acc["mean"][-1], acc["ci95"][-1]
        result = {"checkpoint": str(path), "iteration": meta["iteration"], "config": cfg,
                  "test_classes": int(len(test)), "tasks": args.tasks, "seed": args.seed,
                  "eval_steps": steps, "accuracy_percent": m, "ci95_percent": ci,
                  "accuracy_by_step": acc, "ci": CONVENTION, "data_fingerprint": fingerprint,
                  "data_warning": data_note,
                  "per_task_accuracy": results["accuracy"][-1].tolist(),
                  "seconds": time.perf_counter() - t0}
        write_json(folder / "evaluation.json", result)
        print(f"{cfg['test_ways']}-way {cfg['shots']}-shot test accuracy ({cfg['algo']}, {steps} steps, "
              f"{args.tasks} tasks): {m:.2f} ± {ci:.2f}%  (wrote {folder / 'evaluation.json'})", flush=True)
        return result


def evaluate_lake(args, folder, path, cfg, meta, learner, steps, say, t0):
    runs = load_lake_runs(args.data_dir, size=cfg["image_size"])
    if cfg["split"] != "lake":
        print("warning: this model was trained on the MAML split, whose training classes include "
              "characters of the evaluation alphabets that Lake's runs are drawn from; the error is "
              "optimistic. Train with --split lake for the proper benchmark.", file=sys.stderr, flush=True)
    dtype = np.dtype(cfg["dtype"])
    n_classes = {len(r.train) for r in runs}
    if cfg["ways"] in n_classes and len(n_classes) == 1:
        method = f"adapt the {cfg['ways']}-way model to each run's 20 training images ({steps} steps)"
        batch = Episode(support_x=np.stack([r.train[:, None] for r in runs]).astype(dtype),
                        support_y=np.stack([np.arange(len(r.train), dtype=np.int64) for r in runs]),
                        query_x=np.stack([r.test[:, None] for r in runs]).astype(dtype),
                        query_y=np.stack([r.labels for r in runs]),
                        classes=np.zeros((len(runs), len(runs[0].train)), dtype=np.int64))
        acc = learner.evaluate(batch, steps)["accuracy"][-1]
    else:
        method = (f"1-nearest neighbour (cosine) in the body's feature space: the {cfg['ways']}-way "
                  "head cannot label 20 classes, so no adaptation")
        say(f"note: {method}")

        def features(images):
            with no_grad():
                x = Tensor(np.asarray(images[:, None], dtype=dtype))
                f = backend.to_numpy(learner.model.body(learner.params, x, mode="test").data)
            f = np.asarray(f, dtype=np.float64)
            return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        acc = np.array([float(((features(r.test) @ features(r.train).T).argmax(axis=1) == r.labels).mean())
                        for r in runs])
    errors = (100.0 * (1.0 - np.asarray(acc, dtype=np.float64))).tolist()
    overall = float(np.mean(errors))
    for r, e in zip(runs, errors):
        say(f"  {r.name}: error {e:5.1f}%")
    result = {"checkpoint": str(path), "iteration": meta["iteration"], "config": cfg, "method": method,
              "eval_steps": steps, "runs": {r.name: e for r, e in zip(runs, errors)},
              "error_percent": overall, "human_error_percent": HUMAN_LAKE_ERROR,
              "seconds": time.perf_counter() - t0}
    write_json(folder / "lake.json", result)
    write_json(folder / "evaluation.json", {"lake": True, "error_percent": overall})
    print(f"Lake 20-way one-shot (within alphabet), {len(runs)} runs: error {overall:.2f}% "
          f"(people: {HUMAN_LAKE_ERROR}%)  [{method}]  (wrote {folder / 'lake.json'})", flush=True)
    return result


def main(argv=None):
    def dispatch(argv):
        reuse_large_allocations()          # keep big freed buffers: no page faults each iteration
        if argv and argv[0] == "evaluate":
            return evaluate(evaluate_parser().parse_args(argv[1:]))
        if argv and argv[0] == "train":
            argv = argv[1:]
        return train(train_parser().parse_args(argv))
    return run_main(dispatch, argv)


if __name__ == "__main__":
    main()
