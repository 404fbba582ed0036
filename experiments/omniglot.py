"""Few-shot Omniglot classification (Finn et al., 2017, Section 5.2; Nichol et al., 2018)
with MAML, FOMAML, ANIL, Meta-SGD or Reptile.

Training (the default subcommand, ``train`` may be written or left out)::

    python -m experiments.omniglot --algo maml --ways 5 --shots 1 --out runs/omni5w1s
    python -m experiments.omniglot --out runs/omni5w1s --resume          # continue it
    python -m experiments.omniglot --algo maml --ways 20 --shots 1 --out runs/omni20w1s

Evaluation of a checkpoint on the meta-test split, or on Lake et al.'s 20 one-shot runs::

    python -m experiments.omniglot evaluate runs/omni5w1s/checkpoint.npz [--tasks 600]
        [--eval-steps N] [--seed S] [--data-dir D] [--lake]

The data folder is ``--data-dir`` or ``$TINYMETA_DATA``: the folder that *contains* ``omniglot/``.

Data and model
--------------
Images 28×28 (area-resized, ink = 1). ``--split maml`` (default): the MAML split of all 1623
characters (``maml_split``, split seed 0): 1200 for meta-training, of which the last 100 are
held out for validation, and 423 for meta-testing; the 1100 training characters are
multiplied by four with 90° rotations (4400 training classes). ``--split lake``: background
alphabets for training (of which 100 characters, chosen with a fixed seed, are held out for
validation; the rest rotated ×4) and evaluation alphabets for testing. Model:
``Conv4(ways, in_channels=1, filters=64, image_size=28)`` with transductive batch norm
(``--non-transductive`` keeps running statistics for meta-test instead). Loss: cross-entropy.

Defaults (from the papers; an option given on the command line always wins)
-------------------------------------------------------------------------
MAML family (``maml``, ``fomaml``, ``anil``, ``metasgd``; Finn et al. 2017, Appendix A.1):

* 5-way:  inner SGD step α = 0.4, 1 inner step in training, 3 at test, meta-batch 32;
* 20-way: α = 0.1, 5 inner steps in training and at test, meta-batch 16;
* 15 query examples per class, Adam with ``--meta-lr`` 1e-3, 60 000 iterations.
  Meta-SGD starts its learned per-parameter step sizes at α.

Reptile (Nichol et al. 2018, Table 3, simplified): per task, 5 steps of Adam (lr 1e-3,
β₁ = 0, the moments reset for every task) on the task's support *and* query examples
together (full batch: Reptile has no support/query split), then θ ← θ + ε·mean(Wᵢ − θ)
with ε (``--outer-lr``) 1.0 annealed linearly to 0 over ``--iterations`` (ε at iteration i,
counted from 1, is ε₀·(1 − (i − 1)/iterations)); meta-batch 5, 100 000 iterations. At
test it adapts with 50 steps of the same inner Adam on the support set. The logged
"meta-loss" of Reptile is the mean loss *before* adaptation on the tasks' examples.

Training details
----------------
One iteration = one meta-batch. The batched task axis and the compiled (Numba) kernels are
always used. Every ``--val-every`` iterations (and at the end) the model is adapted on
``--val-tasks`` validation tasks, always the same ones (a fixed seed), and its query
accuracy after ``--eval-steps`` inner steps is logged. Every ``--checkpoint-every``
iterations (and at the end) ``<out>/checkpoint.npz`` is written atomically: parameters
(Meta-SGD's step sizes included), the Adam state, the model's batch-norm running statistics,
the state of the episode sampler (the only random stream used after initialisation), the
iteration, the full configuration and the log. ``--resume`` continues from it and ends
bit-identical to an uninterrupted run; options not given take the checkpoint's values,
and options given that change the training (algorithm, ways, shots, learning rates, seed,
...) are rejected. ``<out>/log.csv`` (one row per iteration; val_accuracy where validated)
and ``<out>/curves.png`` are rewritten at every checkpoint. Bit-exactness needs the same
numerical setup (kernels, backend, BLAS/Numba thread counts: the script defaults BLAS to one
thread, which was ~8x faster on a loaded 2-core machine); the checkpoint records them and a
resume under other settings warns.

The progress line (every 5 s) shows the iteration, the running mean of the meta-loss over
the last 100 iterations, the training query accuracy (from the query logits of the
meta-loss, free; MAML family only), iterations per second and the estimated time left.

Evaluation
----------
``evaluate``: ``--tasks`` (600) tasks from the checkpoint's test split with its ways,
shots and query size, drawn from ``--seed`` (default 1); the model adapts with
``--eval-steps`` (default: the checkpoint's) inner steps on each support set. Reports the
mean query accuracy ± 1.96·std/√n (std with ddof = 0, as the MAML code), in percent;
printed and written to ``<checkpoint stem>.eval.json``.

``evaluate --lake``: Lake et al.'s 20 runs of 20-way one-shot classification within an
alphabet (``all_runs.zip``). A 20-way checkpoint adapts, per run, to the 20 training
images (20-way 1-shot, ``--eval-steps`` steps) and classifies the 20 test images. A
checkpoint with another number of ways cannot use its head; it classifies each test image
as the training image whose body features (the 64 averaged filters, batch-normalised
transductively as in training) are nearest in cosine similarity -- a 1-nearest-neighbour
classifier in the learned feature space, without adaptation. Error rate per run and
overall, beside the published human error of 4.5%; written to ``<stem>.lake.json``. The
runs are drawn from the evaluation alphabets, so only a ``--split lake`` model has never
seen their characters (a MAML-split model has trained on some of them: a warning says so).
"""
import os

# One BLAS thread unless the user chose otherwise. The convolutions are batched GEMMs of
# modest size (e.g. 4 x [64, 576] @ [576, 80]) issued alongside Numba's parallel im2col;
# on the 2-core machine this was written on, OpenBLAS's own threads made a 5-way 1-shot MAML
# step with meta-batch 4 about 8x slower (3.4 s instead of 0.43 s, measured). This only
# takes effect if NumPy is not imported yet (``python -m experiments.omniglot`` runs).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from autograd.allocator import reuse_large_allocations  # noqa: E402
import numpy as np  # noqa: E402

import tinymeta  # noqa: E402
from autograd import Tensor, backend, no_grad  # noqa: E402
from autograd import functional as F  # noqa: E402
from tinymeta import checkpoint  # noqa: E402
from tinymeta.algorithms import ANIL, MAML, MetaSGD, Reptile  # noqa: E402
from tinymeta.data import DataError  # noqa: E402
from tinymeta.data.omniglot import (augment_rotations, lake_split, load_lake_runs,  # noqa: E402
                                    load_omniglot, maml_split)
from tinymeta.models import Conv4  # noqa: E402
from tinymeta.optim import Adam  # noqa: E402
from tinymeta.parameters import broadcast_to_tasks, to_arrays  # noqa: E402
from tinymeta.tasks.episodic import Episode, EpisodeSampler  # noqa: E402

ALGOS = ("maml", "fomaml", "reptile", "anil", "metasgd")
FORMAT = "tinymeta-omniglot-experiment"
FORMAT_VERSION = 1
IMAGE_SIZE = 28
DRAWINGS = 20
SPLIT_SEED = 0            # the MAML split's shuffle (and the Lake split's validation pick)
N_VAL = 100               # validation characters held out of the training characters
VAL_SEED = 20170309       # the validation tasks: the same ones at every validation
EVAL_SEED = 1             # default seed of the meta-test tasks
HUMAN_LAKE_ERROR = 4.5    # percent, Lake et al. (2015)
REPTILE_ADAM_BETAS = (0.0, 0.999)
# Test hook: kill this process (SIGKILL) right after writing the checkpoint of this iteration.
KILL_ENV = "TINYMETA_OMNIGLOT_KILL_AFTER_CHECKPOINT"

# The papers' settings, by family and ways (see the module docstring).
MAML_DEFAULTS = {
    5: {"inner_lr": 0.4, "inner_steps": 1, "eval_steps": 3, "meta_batch": 32},
    20: {"inner_lr": 0.1, "inner_steps": 5, "eval_steps": 5, "meta_batch": 16},
}
COMMON_DEFAULTS = {"shots": 1, "query": 15, "seed": 0, "split": "maml", "dtype": "float32",
                   "filters": 64, "transductive": True, "val_tasks": 100, "val_every": 500,
                   "checkpoint_every": 1000}
REPTILE_DEFAULTS = {"inner_lr": 1e-3, "inner_steps": 5, "eval_steps": 50, "meta_batch": 5,
                    "outer_lr": 1.0, "iterations": 100000}

# Options that change the training trajectory: a resume must not change them.
MATTERS = ("algo", "ways", "shots", "query", "inner_steps", "inner_lr", "meta_batch", "meta_lr",
           "outer_lr", "seed", "split", "dtype", "filters", "transductive", "image_size",
           "n_val", "split_seed")
# Options that may change on resume (they only affect logging, validation or the length).
FREE = ("iterations", "eval_steps", "val_every", "val_tasks", "checkpoint_every")
CONFIG_KEYS = MATTERS + FREE
FLAG = {k: "--" + k.replace("_", "-") for k in CONFIG_KEYS}
FLAG["transductive"] = "--non-transductive"


class UsageError(Exception):
    """A bad option or file: printed as ``error: ...`` without a traceback, exit status 2."""


# --- command line ---------------------------------------------------------------------------

from .arguments import integer as _int, non_negative_int as _non_negative_int  # noqa: E402
from .arguments import positive_float as _positive_float, positive_int as _positive_int  # noqa: E402


def train_parser():
    p = argparse.ArgumentParser(
        prog="python -m experiments.omniglot [train]",
        description="Meta-train a Conv4 on few-shot Omniglot. Defaults follow the MAML paper "
                    "(and the Reptile paper for --algo reptile) and depend on --ways; see the "
                    "module docstring. Evaluate with: python -m experiments.omniglot evaluate CKPT")
    p.add_argument("--algo", choices=ALGOS, help="meta-learner (default maml)")
    p.add_argument("--ways", type=_positive_int, help="classes per task (default 5)")
    p.add_argument("--shots", type=_positive_int, help="support examples per class (default 1)")
    p.add_argument("--query", type=_positive_int, help="query examples per class (default 15)")
    p.add_argument("--inner-steps", type=_non_negative_int,
                   help="inner steps in training (default 1 for 5-way, 5 for 20-way, Reptile 5)")
    p.add_argument("--inner-lr", type=_positive_float,
                   help="inner step size α (default 0.4 for 5-way, 0.1 for 20-way; Reptile: "
                        "inner Adam lr 1e-3)")
    p.add_argument("--meta-batch", type=_positive_int,
                   help="tasks per iteration (default 32 for 5-way, 16 for 20-way, Reptile 5)")
    p.add_argument("--meta-lr", type=_positive_float, help="outer Adam learning rate (default 1e-3; "
                   "not used by Reptile)")
    p.add_argument("--outer-lr", type=_positive_float,
                   help="Reptile's outer step size ε at the start, annealed linearly to 0 (default 1.0)")
    p.add_argument("--iterations", type=_positive_int,
                   help="meta-iterations (default 60000, Reptile 100000)")
    p.add_argument("--eval-steps", type=_non_negative_int,
                   help="inner steps at validation and test (default 3 for 5-way, 5 for 20-way, "
                        "Reptile 50)")
    p.add_argument("--seed", type=_int, help="seed of the initial weights and training tasks (default 0)")
    p.add_argument("--out", default="runs/omniglot", help="output folder (default runs/omniglot)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>/checkpoint.npz (options not given take its values)")
    p.add_argument("--data-dir", help="folder containing omniglot/ (default $TINYMETA_DATA)")
    p.add_argument("--split", choices=["maml", "lake"], help="class split (default maml)")
    p.add_argument("--val-every", type=_non_negative_int,
                   help="validate every N iterations, 0 = only at the end (default 500)")
    p.add_argument("--val-tasks", type=_non_negative_int,
                   help="validation tasks, 0 = no validation (default 100)")
    p.add_argument("--checkpoint-every", type=_non_negative_int,
                   help="checkpoint every N iterations, 0 = only at the end (default 1000)")
    p.add_argument("--dtype", choices=["float32", "float64"], help="float type (default float32)")
    p.add_argument("--filters", type=_positive_int, help="filters per conv layer (default 64)")
    p.add_argument("--non-transductive", dest="transductive", action="store_const", const=False,
                   help="batch norm with running statistics at meta-test (default: transductive)")
    p.add_argument("--progress-every", type=float, default=5.0,
                   help="seconds between progress lines (default 5)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def evaluate_parser():
    p = argparse.ArgumentParser(
        prog="python -m experiments.omniglot evaluate",
        description="Evaluate a checkpoint on meta-test tasks (mean accuracy ± 95% CI), or on "
                    "Lake et al.'s 20-way one-shot runs with --lake.")
    p.add_argument("checkpoint", help="a checkpoint.npz written by training")
    p.add_argument("--tasks", type=_positive_int, default=600, help="test tasks (default 600)")
    p.add_argument("--eval-steps", type=_non_negative_int,
                   help="inner steps (default: the checkpoint's --eval-steps)")
    p.add_argument("--seed", type=_int, default=EVAL_SEED, help=f"seed of the test tasks (default {EVAL_SEED})")
    p.add_argument("--data-dir", help="folder containing omniglot/ (default $TINYMETA_DATA)")
    p.add_argument("--lake", action="store_true", help="Lake et al.'s 20 runs of 20-way one-shot "
                   "within-alphabet classification instead of random test tasks")
    p.add_argument("--quiet", action="store_true", help="print only the result line")
    return p


def defaults_for(algo, ways):
    if algo == "reptile":
        return {**COMMON_DEFAULTS, **REPTILE_DEFAULTS, "meta_lr": None}
    per_ways = MAML_DEFAULTS[20] if ways >= 20 else MAML_DEFAULTS[5]
    return {**COMMON_DEFAULTS, **per_ways, "meta_lr": 1e-3, "outer_lr": None, "iterations": 60000}


def explicit_options(args):
    return {k: getattr(args, k) for k in CONFIG_KEYS if getattr(args, k, None) is not None}


def new_config(explicit):
    algo = explicit.get("algo", "maml")
    ways = explicit.get("ways", 5)
    cfg = {k: None for k in CONFIG_KEYS}
    cfg.update(defaults_for(algo, ways))
    cfg.update({"algo": algo, "ways": ways, "image_size": IMAGE_SIZE, "n_val": N_VAL,
                "split_seed": SPLIT_SEED})
    if algo == "reptile":
        ignored = [FLAG[k] for k in ("meta_lr",) if k in explicit]
    else:
        ignored = [FLAG[k] for k in ("outer_lr",) if k in explicit]
    if ignored:
        raise UsageError(f"{', '.join(ignored)} does not apply to --algo {algo}")
    cfg.update(explicit)
    return {k: cfg[k] for k in CONFIG_KEYS}


def check_config(cfg):
    if cfg["shots"] + cfg["query"] > DRAWINGS:
        raise UsageError(f"--shots + --query = {cfg['shots']} + {cfg['query']} = "
                         f"{cfg['shots'] + cfg['query']} is more than the {DRAWINGS} drawings of "
                         "each Omniglot character")
    if cfg["ways"] < 2:
        raise UsageError(f"--ways must be at least 2, got {cfg['ways']}")


def resumed_config(saved, explicit):
    """The checkpoint's configuration, with the given options that may change applied."""
    problems = []
    cfg = dict(saved)
    for k, v in explicit.items():
        if k in MATTERS or (k == "iterations" and saved["algo"] == "reptile"):
            if v != saved.get(k):
                shown = (lambda x: "on" if x else "off") if k == "transductive" else repr
                why = " (Reptile anneals ε over --iterations)" if k == "iterations" else ""
                problems.append(f"{FLAG[k]}: checkpoint {shown(saved.get(k))}, now {shown(v)}{why}")
        else:
            cfg[k] = v
    if problems:
        raise UsageError("--resume: the checkpoint was trained with different options that change "
                         "the training: " + "; ".join(problems) +
                         ". Leave them out (the checkpoint's values are used) or start a new --out.")
    return cfg


# --- data -----------------------------------------------------------------------------------

def load_split(cfg, data_dir):
    """(train classes rotated ×4, validation classes, test classes), each [n, 20, 28, 28]."""
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
    return augment_rotations(train), val, test


def check_classes(ways, **parts):
    for name, classes in parts.items():
        if ways > len(classes):
            hint = " (--val-tasks 0 turns validation off)" if name == "validation" else ""
            raise UsageError(f"--ways {ways} is more than the {len(classes)} {name} classes{hint}")


# --- the learner ----------------------------------------------------------------------------

class RecordingLoss:
    """Cross-entropy that remembers the logits and labels of its last call: after a MAML
    step that is the query pass at the adapted weights, so training accuracy is free."""

    def __init__(self):
        self.last = None

    def __call__(self, logits, labels, reduction="mean"):
        self.last = (logits.data, labels.data if isinstance(labels, Tensor) else labels)
        return F.cross_entropy(logits, labels, reduction=reduction)

    def accuracy(self):
        if self.last is None:
            return float("nan")
        logits, labels = self.last
        return float(backend.to_numpy((logits.argmax(axis=-1) == labels).mean()))


def build(cfg):
    """(model, learner, loss) with fresh weights (seeded by cfg['seed'])."""
    model = Conv4(cfg["ways"], in_channels=1, filters=cfg["filters"], image_size=cfg["image_size"],
                  transductive=cfg["transductive"])
    dtype = np.dtype(cfg["dtype"])
    params = model.init(np.random.default_rng([cfg["seed"], 0]), dtype=dtype)
    loss = RecordingLoss()
    algo = cfg["algo"]
    if algo == "reptile":
        learner = Reptile(model, params, loss, inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"],
                          outer_lr=cfg["outer_lr"], inner_optimizer="adam", adam_betas=REPTILE_ADAM_BETAS)
        return model, learner, loss
    kwargs = dict(inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"])
    if algo in ("maml", "fomaml"):
        learner = MAML(model, params, loss, first_order=(algo == "fomaml"),
                       optimizer=Adam(params, lr=cfg["meta_lr"]), **kwargs)
    elif algo == "anil":
        learner = ANIL(model, params, loss, optimizer=Adam(params, lr=cfg["meta_lr"]), **kwargs)
    else:
        learner = MetaSGD(model, params, loss, **kwargs)
        learner.optimizer = Adam(learner.meta_parameters(), lr=cfg["meta_lr"])
    return model, learner, loss


def learned(learner):
    """Everything the outer loop learns, by name (Meta-SGD's α included)."""
    return learner.params if isinstance(learner, Reptile) else learner.meta_parameters()


def reptile_lr(cfg, iteration):
    """ε at ``iteration`` (from 1): ε₀ annealed linearly, ε₀ at the first, ε₀/N at the last."""
    return cfg["outer_lr"] * (1.0 - (iteration - 1) / cfg["iterations"])


def reptile_batch(batch):
    """Reptile adapts on all of a task's examples: support and query together."""
    x = np.concatenate([batch.support_x, batch.query_x], axis=1)
    y = np.concatenate([batch.support_y, batch.query_y], axis=1)
    return Episode(x, y, batch.query_x, batch.query_y, batch.classes)


def adapted_accuracy(learner, batch, steps):
    """Query accuracy per task after ``steps`` inner steps on the support set: shape (T,).

    The model's running statistics are left as they were."""
    model = learner.model
    saved = model.running_state()
    try:
        if not isinstance(learner, Reptile):
            # What MetaLearner.evaluate does, batched, but only the final query pass:
            # evaluate() also scores the query set before and after every step (2·(steps+1)
            # query passes, which cost far more than the support steps here).
            xs, ys = learner.inputs(batch, "support")
            xq, yq = learner.inputs(batch, "query")
            start = {k: Tensor(v.data, requires_grad=True) for k, v in learner.params.items()}
            fast = broadcast_to_tasks(start, learner.n_tasks(batch))
            for _ in range(steps):
                fast = learner.inner_update(fast, xs, ys, create_graph=False, training=False)
                fast = {k: Tensor(v.data, requires_grad=True) for k, v in fast.items()}
            return learner.accuracies(fast, xq, yq, training=False)
        old = learner.inner_steps
        learner.inner_steps = steps
        try:
            weights = learner.task_weights(batch)          # inner Adam on the support sets
        finally:
            learner.inner_steps = old
        xq, yq = learner.inputs(batch, "query")
        fast = {k: Tensor(w) for k, w in weights.items()}
        return learner.accuracies(fast, xq, yq, training=False)
    finally:
        model.load_running_state(saved)


def task_chunk(cfg):
    """Tasks per evaluation call, so one call holds about 2000 images."""
    return max(1, 2000 // (cfg["ways"] * (cfg["shots"] + cfg["query"])))


def accuracy_on_tasks(learner, cfg, classes, n_tasks, seed, steps):
    """Accuracies (n_tasks,) on tasks drawn from ``classes`` with ``seed``."""
    sampler = EpisodeSampler(classes, cfg["ways"], cfg["shots"], cfg["query"], rng=seed,
                             dtype=np.dtype(cfg["dtype"]))
    chunk, out = task_chunk(cfg), []
    while len(out) < n_tasks:
        batch = sampler.sample_batch(min(chunk, n_tasks - len(out)))
        out.extend(np.asarray(adapted_accuracy(learner, batch, steps), dtype=np.float64).tolist())
    return np.array(out)


def mean_ci(acc):
    acc = np.asarray(acc, dtype=np.float64) * 100.0
    return float(acc.mean()), float(1.96 * acc.std() / math.sqrt(len(acc)))


# --- checkpoints ----------------------------------------------------------------------------

class Log:
    """Per-iteration meta-loss, training accuracy and elapsed time; validation results."""

    def __init__(self):
        self.loss, self.train_acc, self.elapsed = [], [], []
        self.val_iteration, self.val_acc, self.val_ci = [], [], []

    def arrays(self):
        return {"log/loss": np.array(self.loss, dtype=np.float64),
                "log/train_acc": np.array(self.train_acc, dtype=np.float64),
                "log/elapsed": np.array(self.elapsed, dtype=np.float64),
                "log/val_iteration": np.array(self.val_iteration, dtype=np.int64),
                "log/val_acc": np.array(self.val_acc, dtype=np.float64),
                "log/val_ci95": np.array(self.val_ci, dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays, iteration):
        log = cls()
        log.loss = arrays["log/loss"][:iteration].tolist()
        log.train_acc = arrays["log/train_acc"][:iteration].tolist()
        log.elapsed = arrays["log/elapsed"][:iteration].tolist()
        keep = arrays["log/val_iteration"] <= iteration
        log.val_iteration = arrays["log/val_iteration"][keep].tolist()
        log.val_acc = arrays["log/val_acc"][keep].tolist()
        log.val_ci = arrays["log/val_ci95"][keep].tolist()
        return log

    def write_csv(self, path):
        val = dict(zip(self.val_iteration, self.val_acc))
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["iteration", "loss", "train_accuracy", "val_accuracy", "elapsed_s"])
            for i, (loss, acc, t) in enumerate(zip(self.loss, self.train_acc, self.elapsed), start=1):
                w.writerow([i, f"{loss:.6g}", "" if math.isnan(acc) else f"{acc:.4f}",
                            f"{val[i]:.4f}" if i in val else "", f"{t:.2f}"])
        os.replace(tmp, path)


def save_checkpoint(path, cfg, model, learner, sampler, iteration, log, elapsed):
    opt = learner.optimizer.state_dict() if hasattr(learner, "optimizer") else {}
    opt_arrays = {k: v for k, v in opt.items() if hasattr(v, "shape")}
    opt_scalars = {k: v for k, v in opt.items() if k not in opt_arrays}
    arrays = {**checkpoint.join("params", to_arrays(learned(learner))),
              **checkpoint.join("optimizer", opt_arrays),
              **checkpoint.join("running", model.running_state()),
              **log.arrays()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg,
            "iteration": iteration, "finished": iteration >= cfg["iterations"],
            "sampler_state": sampler.get_state(), "optimizer": opt_scalars,
            "elapsed_s": elapsed, "tinymeta_version": tinymeta.__version__,
            "kernels": _kernels_name(), "backend": backend.name, "threads": _threads()}
    checkpoint.save(path, arrays, meta)


def _kernels_name():
    try:
        from autograd import kernels
        return kernels.kernels_name()
    except Exception:
        return "unknown"


def _threads():
    """Thread settings that change float rounding (and so bit-exact resumes)."""
    return {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                           "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def read_checkpoint(path):
    try:
        arrays, meta = checkpoint.load(path)
    except checkpoint.CheckpointError as e:
        raise UsageError(str(e)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(f"checkpoint {path}: not a checkpoint of experiments.omniglot "
                         f"(format {meta.get('format') if isinstance(meta, dict) else None!r})")
    return arrays, meta


def restore(arrays, meta):
    """(model, learner, loss) holding the checkpoint's weights, optimizer and running stats."""
    cfg = meta["config"]
    model, learner, loss = build(cfg)
    saved = checkpoint.split(arrays, "params")
    target = learned(learner)
    if sorted(saved) != sorted(target):
        raise UsageError(f"checkpoint parameters {sorted(saved)} do not match the model's {sorted(target)}")
    for k, p in target.items():
        if saved[k].shape != p.shape or saved[k].dtype != p.dtype:
            raise UsageError(f"checkpoint parameter {k}: {saved[k].dtype} {saved[k].shape}, model "
                             f"expects {p.dtype} {tuple(p.shape)}")
        p.data[...] = backend.xp.asarray(saved[k])
    if hasattr(learner, "optimizer"):
        learner.optimizer.load_state_dict({**meta["optimizer"], **checkpoint.split(arrays, "optimizer")})
    model.load_running_state(checkpoint.split(arrays, "running"))
    return model, learner, loss


# --- plotting -------------------------------------------------------------------------------

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
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax1.plot(it[w - 1:], smooth, color="tab:blue", lw=1.6, label=f"mean of {w}")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("pre-adaptation loss" if cfg["algo"] == "reptile" else "meta-loss (query, after adaptation)")
    ax1.set_title("training loss")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    if log.val_iteration:
        acc, ci = 100 * np.array(log.val_acc), 100 * np.array(log.val_ci)
        ax2.errorbar(log.val_iteration, acc, yerr=ci, color="tab:red", marker="o", ms=3, capsize=2)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel(f"accuracy after {cfg['eval_steps']} steps (%)")
    ax2.set_title(f"validation ({cfg['val_tasks']} tasks, ±95% CI)")
    ax2.grid(alpha=0.3)
    fig.suptitle(f"Omniglot {cfg['ways']}-way {cfg['shots']}-shot, {cfg['algo']}", fontsize=11)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# --- training -------------------------------------------------------------------------------

def _fmt_time(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def train(args):
    explicit = explicit_options(args)
    out = Path(args.out)
    path = out / "checkpoint.npz"
    log_print = (lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True))
    resumed = None
    if args.resume and path.exists():
        arrays, meta = read_checkpoint(path)
        cfg = resumed_config(meta["config"], explicit)
        resumed = (arrays, meta)
        now = {"kernels": _kernels_name(), "backend": backend.name, "threads": _threads()}
        changed = [f"{k} {meta.get(k)!r} -> {v!r}" for k, v in now.items() if meta.get(k, v) != v]
        if changed:
            print("warning: the checkpoint was written with other numerical settings (" +
                  "; ".join(changed) + "); the run continues correctly but not bit-identically "
                  "to an uninterrupted one.", file=sys.stderr, flush=True)
    else:
        if path.exists():
            raise UsageError(f"{path} exists: pass --resume to continue it, or choose another --out")
        if args.resume:
            log_print(f"--resume: no checkpoint at {path}; starting from scratch")
        cfg = new_config(explicit)
    check_config(cfg)
    if resumed and resumed[1]["iteration"] > cfg["iterations"]:
        raise UsageError(f"--resume: the checkpoint is at iteration {resumed[1]['iteration']}, past "
                         f"--iterations {cfg['iterations']}")

    t_load = time.perf_counter()
    train_classes, val_classes, _test = load_split(cfg, args.data_dir)
    check_classes(cfg["ways"], training=train_classes,
                  **({"validation": val_classes} if cfg["val_tasks"] else {}))
    dtype = np.dtype(cfg["dtype"])
    sampler = EpisodeSampler(train_classes, cfg["ways"], cfg["shots"], cfg["query"],
                             rng=np.random.default_rng([cfg["seed"], 1]), dtype=dtype)
    if resumed:
        arrays, meta = resumed
        model, learner, loss_fn = restore(arrays, meta)
        sampler.set_state(meta["sampler_state"])
        start, elapsed0 = int(meta["iteration"]), float(meta.get("elapsed_s", 0.0))
        log = Log.from_arrays(arrays, start)
    else:
        model, learner, loss_fn = build(cfg)
        start, elapsed0, log = 0, 0.0, Log()
    out.mkdir(parents=True, exist_ok=True)
    n_params = sum(int(np.prod(p.shape)) for p in learned(learner).values())
    log_print(f"omniglot {cfg['ways']}-way {cfg['shots']}-shot, {cfg['algo']}, split {cfg['split']}: "
              f"{len(train_classes)} training / {len(val_classes)} validation classes; "
              f"{n_params} parameters; data {time.perf_counter() - t_load:.1f} s; "
              f"kernels {_kernels_name()}; output {out}")
    log_print("config: " + json.dumps(cfg))
    if resumed:
        log_print(f"resuming from iteration {start} of {cfg['iterations']}")

    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    step_time = val_time = 0.0
    t0 = last_print = time.perf_counter()
    total = cfg["iterations"]
    reptile = cfg["algo"] == "reptile"

    def elapsed():
        return elapsed0 + time.perf_counter() - t0

    def write_outputs(iteration):
        save_checkpoint(path, cfg, model, learner, sampler, iteration, log, elapsed())
        log.write_csv(out / "log.csv")
        draw_curves(out / "curves.png", log, cfg)

    if start >= total:
        log_print(f"checkpoint already at iteration {start} of {total}; nothing to train")
        log.write_csv(out / "log.csv")
        draw_curves(out / "curves.png", log, cfg)
        return {"config": cfg, "iteration": start}

    for iteration in range(start + 1, total + 1):
        t_step = time.perf_counter()
        batch = sampler.sample_batch(cfg["meta_batch"])
        if reptile:
            learner.outer_lr = reptile_lr(cfg, iteration)
            loss = learner.step(reptile_batch(batch))
            acc = float("nan")
        else:
            loss = learner.step(batch)
            acc = loss_fn.accuracy()
        if not math.isfinite(loss):
            raise FloatingPointError(f"meta-loss is {loss} at iteration {iteration}")
        step_time += time.perf_counter() - t_step
        log.loss.append(float(loss))
        log.train_acc.append(acc)
        log.elapsed.append(elapsed())
        last = iteration == total
        if cfg["val_tasks"] and (last or (cfg["val_every"] and iteration % cfg["val_every"] == 0)):
            tv = time.perf_counter()
            accs = accuracy_on_tasks(learner, cfg, val_classes, cfg["val_tasks"], VAL_SEED, cfg["eval_steps"])
            m, ci = mean_ci(accs)
            val_time = time.perf_counter() - tv
            log.val_iteration.append(iteration)
            log.val_acc.append(m / 100)
            log.val_ci.append(ci / 100)
            log_print(f"  validation at {iteration}: {m:.2f} ± {ci:.2f}% on {len(accs)} tasks "
                      f"after {cfg['eval_steps']} steps ({val_time:.1f} s)")
        if last or (cfg["checkpoint_every"] and iteration % cfg["checkpoint_every"] == 0):
            write_outputs(iteration)
            if kill_at and iteration == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        now = time.perf_counter()
        if not args.quiet and (last or now - last_print >= args.progress_every):
            last_print = now
            per_it = step_time / (iteration - start)          # training steps only
            rate = (iteration - start) / max(now - t0, 1e-9)   # everything included
            left = total - iteration
            vals_left = 0
            if cfg["val_tasks"] and left:
                vals_left = (left // cfg["val_every"] if cfg["val_every"] else 0) + 1
            eta = left * per_it + vals_left * val_time
            window = log.loss[-100:]
            accs = [a for a in log.train_acc[-100:] if not math.isnan(a)]
            acc_text = f" | train acc {100 * sum(accs) / len(accs):5.1f}%" if accs else ""
            print(f"iter {iteration}/{total} | loss {sum(window) / len(window):.4f}{acc_text} | "
                  f"{1 / per_it:.2f} it/s ({per_it:.2f} s/it; {rate:.2f} it/s with validation) | "
                  f"ETA {_fmt_time(eta)}", flush=True)
    session = time.perf_counter() - t0
    done = total - start
    log_print(f"trained {done} iterations in {session:.1f} s ({step_time / done:.3f} s per training "
              f"step, {session / done:.3f} s/iteration with validation and checkpoints); "
              f"total training time {elapsed():.1f} s; wrote {path}, {out / 'log.csv'}, {out / 'curves.png'}")
    return {"config": cfg, "iteration": total, "seconds": session, "seconds_per_step": step_time / done,
            "seconds_per_iteration": session / done}


# --- evaluation -----------------------------------------------------------------------------

def evaluate(args):
    path = Path(args.checkpoint)
    arrays, meta = read_checkpoint(path)
    cfg = meta["config"]
    model, learner, _ = restore(arrays, meta)
    steps = cfg["eval_steps"] if args.eval_steps is None else args.eval_steps
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True))
    say(f"checkpoint {path}: {cfg['algo']} {cfg['ways']}-way {cfg['shots']}-shot, split "
        f"{cfg['split']}, iteration {meta['iteration']} of {cfg['iterations']}")
    if args.lake:
        return evaluate_lake(args, path, cfg, meta, learner, steps, say)
    t0 = time.perf_counter()
    _train, _val, test = load_split(cfg, args.data_dir)
    check_classes(cfg["ways"], test=test)
    accs = accuracy_on_tasks(learner, cfg, test, args.tasks, args.seed, steps)
    m, ci = mean_ci(accs)
    result = {"checkpoint": str(path), "iteration": meta["iteration"], "algo": cfg["algo"],
              "ways": cfg["ways"], "shots": cfg["shots"], "query": cfg["query"], "split": cfg["split"],
              "test_classes": int(len(test)), "tasks": args.tasks, "seed": args.seed, "eval_steps": steps,
              "accuracy_percent": m, "ci95_percent": ci,
              "ci": "1.96 * std(ddof=0) / sqrt(tasks), over per-task query accuracies",
              "per_task_accuracy": accs.tolist(), "seconds": time.perf_counter() - t0}
    out = path.with_name(path.stem + ".eval.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{cfg['ways']}-way {cfg['shots']}-shot test accuracy ({cfg['algo']}, {steps} steps, "
          f"{args.tasks} tasks): {m:.2f} ± {ci:.2f}%  (wrote {out})", flush=True)
    return result


def evaluate_lake(args, path, cfg, meta, learner, steps, say):
    t0 = time.perf_counter()
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
        acc = np.asarray(adapted_accuracy(learner, batch, steps), dtype=np.float64)
    else:
        method = (f"1-nearest neighbour (cosine) in the body's feature space: the {cfg['ways']}-way "
                  "head cannot label 20 classes, so no adaptation")
        say(f"note: {method}")
        acc = []
        with no_grad():
            for r in runs:
                def feats(images):
                    x = Tensor(np.asarray(images[:, None], dtype=dtype))
                    f = np.asarray(backend.to_numpy(learner.model.body(learner.params, x, training=False).data),
                                   dtype=np.float64)
                    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
                pred = (feats(r.test) @ feats(r.train).T).argmax(axis=1)
                acc.append(float((pred == r.labels).mean()))
        acc = np.array(acc)
    errors = (100.0 * (1.0 - acc)).tolist()
    overall = float(np.mean(errors))
    for r, e in zip(runs, errors):
        say(f"  {r.name}: error {e:5.1f}%")
    result = {"checkpoint": str(path), "iteration": meta["iteration"], "algo": cfg["algo"],
              "ways": cfg["ways"], "split": cfg["split"], "method": method, "eval_steps": steps,
              "runs": {r.name: e for r, e in zip(runs, errors)}, "error_percent": overall,
              "human_error_percent": HUMAN_LAKE_ERROR, "seconds": time.perf_counter() - t0}
    out = path.with_name(path.stem + ".lake.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"Lake 20-way one-shot (within alphabet), {len(runs)} runs: error {overall:.2f}% "
          f"(people: {HUMAN_LAKE_ERROR}%)  [{method}]  (wrote {out})", flush=True)
    return result


# --- main -----------------------------------------------------------------------------------

def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    reuse_large_allocations()          # keep big freed buffers: no page faults each iteration
    try:
        if argv and argv[0] == "evaluate":
            return evaluate(evaluate_parser().parse_args(argv[1:]))
        if argv and argv[0] == "train":
            argv = argv[1:]
        return train(train_parser().parse_args(argv))
    except (UsageError, DataError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
