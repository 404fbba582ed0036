"""Few-shot Omniglot classification (Finn et al., 2017, Section 5.2; Nichol et al., 2018)
with MAML, FOMAML, ANIL, Meta-SGD or Reptile, and the metric-based Prototypical, Matching
(with or without full context embeddings) and Relation Networks and the Siamese network:
configurations and figures; the training, checkpoints and evaluation are the run layer's
(``tinymeta.training``).

Training (the default subcommand, ``train`` may be written or left out)::

    python -m experiments.omniglot --algo maml --ways 5 --shots 1 --out runs/omni5w1s
    python -m experiments.omniglot --out runs/omni5w1s --resume          # continue it
    python -m experiments.omniglot --config experiments/configs/omniglot_5w1s_maml.json --out runs/x

Evaluation of a checkpoint on the meta-test split, or on Lake et al.'s 20 one-shot runs::

    python -m experiments.omniglot evaluate runs/omni5w1s/best.npz [--tasks 600]
        [--eval-steps N] [--seed S] [--data-dir D] [--lake] [--out FOLDER]

(any checkpoint: ``best.npz``, ``checkpoint.npz``, or the run folder, which means its
``best.npz`` where validation kept one, else its ``checkpoint.npz``).

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
The metric learners use the headless max-pool Conv4 (64 features) with running statistics at
meta-test, the Relation Network its own Conv4-family modules (``tinymeta.algorithms.relation``).

Defaults (from the papers; a recipe file or the command line wins)
------------------------------------------------------------------
MAML family (``maml``, ``fomaml``, ``anil``, ``metasgd``; Finn et al. 2017, Appendix A.1):

* 5-way:  inner SGD step α = 0.4, 1 inner step in training, 3 at test, meta-batch 32;
* 20-way: α = 0.1, 5 inner steps in training and at test, meta-batch 16;
* 15 query examples per class, Adam with ``--meta-lr`` 1e-3, 60 000 iterations.
  Meta-SGD starts its learned per-parameter step sizes at α.

iMAML (``imaml``; Rajeswaran et al. 2019): the 5-way settings above with 16 proximal
descent steps of α = 0.1 (``--inner-lr``, our choice, not tuned) toward λ = 2 (``--lam``),
the meta-gradient by 5 conjugate-gradient steps (``--cg-steps``), 16 steps at test.

MAML++ (Antoniou et al. 2019) as options of ``maml``/``fomaml``, each off by default:
``--multi-step-loss N``, ``--per-step-lr true``, ``--per-step-bn true``,
``--first-order-iterations N``, ``--cosine-meta-lr true`` (see ``tinymeta.algorithms.maml``).

Reptile (Nichol et al. 2018, Table 3, simplified): per task, 5 steps of Adam (lr 1e-3,
β₁ = 0, the moments reset for every task) on the task's support *and* query examples
together, then θ ← θ + ε·mean(Wᵢ − θ) with ε (``--outer-lr``) 1.0 annealed linearly to 0
over ``--iterations``; meta-batch 5, 100 000 iterations. At test it adapts with 50 steps of
the same inner Adam on the support set.

Metric learners (no inner loop; one model serves any ``--ways``/``--shots`` at evaluation;
Adam ``--meta-lr`` 1e-3, one episode per iteration; test episodes with 15 queries per class):

* ``protonet`` (Snell et al. 2017): 60-way training episodes with 5 queries per class, the
  learning rate halved every 2000 episodes, 20 000 iterations, tested 5-way.
* ``matchingnet``, ``matchingnet_fce`` (Vinyals et al. 2016): trained at the test ways (5 by
  default, ``--ways 20``) with 15 queries per class, 60 000 iterations (ours: the paper gives
  no count); with FCE the attention LSTM reads the support set ``--fce-steps`` (5, ours) times.
* ``relationnet`` (Sung et al. 2018): query images per class by setting as in the paper
  (5-way 1-shot 19, 5-shot 15; 20-way 1-shot 10, 5-shot 5), the learning rate halved every
  100 000 episodes, 1 000 000 episodes; batch norm always with the episode's statistics.
* ``siamese`` (Koch et al. 2015): minibatches of ``--meta-batch`` 128 same/different pairs
  (half each) from the training classes, 50 000 iterations (ours: the paper stops early on a
  validation set); ``--ways``/``--shots``/``--query`` (default 20-way 1-shot) set only the
  validation and test episodes, where a query takes the class of its most similar support image.

Meta Networks (``metanet``; Munkhdalai & Yu 2017, ``tinymeta.algorithms.metanet``), from the
official Chainer script where the paper gives no number: one task per update with 10 queries
per class (test episodes too), Adam ``--meta-lr`` 1e-3 with the gradient clipped as the code
does, 100 000 iterations (ours: the script loops until stopped); its own 5-block networks
(``--filters`` 64), no batch norm, a ``--ways``-way output layer (evaluated at the trained
ways); no inner steps. Paper (its own split, not re-verified here): 98.95 (5-way) and 97.00
(20-way) 1-shot.

One iteration = one meta-batch. Every ``--val-every`` iterations (and at the end) the model
is adapted on ``--val-tasks`` validation tasks, always the same ones (a fixed seed), and its
query accuracy after ``--eval-steps`` inner steps is logged. ``<out>/checkpoint.npz``,
``log.csv`` and ``curves.png`` are written every ``--checkpoint-every`` iterations, at the
end, and on Ctrl-C or SIGTERM; ``--resume`` continues bit-identically (same numerical
settings), taking the checkpoint's options; options that change the training are refused.
With ``--keep-best`` (the default; ``--no-keep-best`` turns it off) each validation accuracy
higher than every earlier one writes the checkpoint of that iteration to ``<out>/best.npz``
(the MAML paper's protocol: evaluate the model with the best validation accuracy).

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
adaptation); a metric learner takes each run's 20 training images as its support set. The
runs come from the evaluation alphabets, so only a ``--split lake`` model has never seen
their characters (a warning says so for a MAML-split model).
"""
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from autograd import Tensor, backend, no_grad
from autograd import functional as F
from autograd.allocator import reuse_large_allocations
from tinymeta.algorithms import (ANIL, IMAML, MAML, LSTMMetaLearner, FullContextEmbedding, MatchingNet, MetaNet,
                                 MetaNetModel, MetaSGD, ProtoNet, RelationModel, RelationNet, Reptile, Siamese,
                                 SiameseModel)
from tinymeta.data import load_splits
from tinymeta.data.omniglot import load_lake_runs
from tinymeta.data.splits import DATASETS, dataset_defaults
from tinymeta.models import Conv4
from tinymeta.optim import Adam
from tinymeta.tasks import episode_sampler
from tinymeta.tasks.episodic import Episode, EpisodeSampler
from tinymeta.tasks.pairs import PairSampler
from tinymeta.training import (ArgumentParser, CosineDecay, LinearDecay, SetIteration, StepDecay,
                               RunFolder, Training, UsageError, Validation,
                               describe_checkpoint, mean_ci, meta_test, resolve_checkpoint, run_config,
                               restore_learner, run_commands, draw_training_curves, summarize, write_json, CONVENTION)
from tinymeta.training.config import (Config, ConfigError, Option, boolean, choice, non_negative_float,
                                      non_negative_int, positive_float, positive_int)

ALGOS = ("maml", "fomaml", "reptile", "anil", "metasgd", "imaml", "protonet", "matchingnet",
         "matchingnet_fce", "relationnet", "siamese", "lstm_meta", "metanet")
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
                   "transductive": True, "val_tasks": 100, "val_every": 500, "checkpoint_every": 1000,
                   "n_val": 100, "split_seed": 0, "fce_steps": None, "cosine_scale": None, "keep_best": True}
IMAML_DEFAULTS = {       # Rajeswaran et al. 2019, Omniglot: λ = 2, 16 proximal steps, 5 CG steps
    "lam": 2.0, "cg_steps": 5, "inner_steps": 16, "eval_steps": 16, "inner_lr": 0.1}
MAMLPP = {"multi_step_loss": 0, "per_step_lr": False, "per_step_bn": False,   # all off by default
          "first_order_iterations": 0, "cosine_meta_lr": False}
MAMLPP_MIN_LR = 1e-5     # Antoniou et al.'s code: the cosine schedule's floor
REPTILE_DEFAULTS = {"inner_lr": 1e-3, "inner_steps": 5, "eval_steps": 50, "meta_batch": 5,
                    "outer_lr": 1.0, "iterations": 100000, "meta_lr": None}
REPTILE_ADAM_BETAS = (0.0, 0.999)
PROTONET_DEFAULTS = {   # Snell et al. 2017, Section 3.1: 60-way training episodes, 5 queries per class
    "lr_halve_every": 2000, "ways": 60, "query": 5, "test_ways": 5, "test_query": 15, "meta_batch": 1, "meta_lr": 1e-3,
    "lr_halve_every": 2000, "transductive": False, "inner_lr": None, "inner_steps": None,
    "outer_lr": None, "eval_steps": 0, "iterations": 20000, "val_every": 1000, "val_tasks": 200}
METRIC_DEFAULTS = {     # what the metric learners share: no inner loop; test episodes with 15 queries per class
    "test_query": 15, "meta_batch": 1, "meta_lr": 1e-3, "lr_halve_every": 0, "inner_lr": None,
    "inner_steps": None, "outer_lr": None, "eval_steps": 0, "val_every": 1000, "val_tasks": 200}
MATCHING_DEFAULTS = {   # Vinyals et al. 2016: one N-way episode per minibatch, trained at the test ways
    "ways": 5, "query": 15, "transductive": False, "iterations": 60000}
FCE_STEPS = 5           # the attention LSTM's read steps K (the paper gives none for Omniglot; ours)
RELATION_DEFAULTS = {   # Sung et al. 2018, Section 4.1: Adam 1e-3 halved every 100 000 episodes, 10⁶ episodes
    "ways": 5, "transductive": True, "lr_halve_every": 100000, "iterations": 1000000, "val_every": 5000}
RELATION_QUERY = {(5, 1): 19, (5, 5): 15, (20, 1): 10, (20, 5): 5}   # query images per class in training
METANET_DEFAULTS = {    # Munkhdalai & Yu 2017, official Omniglot script: one task per update, 10 queries per class
    "query": 10, "test_query": 10, "meta_batch": 1, "transductive": True, "iterations": 100000}
METANET_CLIP = 10.0     # official: gradient norm clipped to 10 of the summed query loss
SIAMESE_DEFAULTS = {    # Koch et al. 2015: minibatches of 128 pairs; validated on 20-way one-shot tasks
    "ways": 20, "query": 15, "meta_batch": 128, "transductive": False, "iterations": 50000}

OPTIONS = {
    "dataset": Option(choice(*DATASETS), "data set (default omniglot; see docs/data.md)"),
    "algo": Option(choice(*ALGOS), "meta-learner (default maml)"),
    "ways": Option(positive_int, "classes per task (default 5)"),
    "shots": Option(positive_int, "support examples per class (default 1)"),
    "query": Option(positive_int, "query examples per class in training (default 15; ProtoNets 5, "
                                 "Relation Net 19/15/10/5 by setting)"),
    "inner_steps": Option(positive_int, "inner steps in training (default 1 for 5-way, 5 for 20-way, Reptile 5)"),
    "inner_lr": Option(positive_float, "inner step size α (default 0.4 for 5-way, 0.1 for 20-way; "
                                       "Reptile: inner Adam lr 1e-3)"),
    "meta_batch": Option(positive_int, "tasks per iteration (default 32 for 5-way, 16 for 20-way, Reptile 5, "
                                      "metric learners 1); Siamese: pairs per iteration (default 128)"),
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
    "image_size": Option(positive_int, "image side in pixels (default 28; mini-ImageNet 84)"),
    "in_channels": Option(positive_int, "image channels (default: the data set's, 1 or 3)"),
    "max_pool": Option(boolean, "Conv4 blocks with 2x2 max-pool instead of stride 2 (default: "
                                "the data set's paper setting; ProtoNets always)"),
    "lam": Option(positive_float, "iMAML's proximal strength λ in (λ/2)‖φ − θ‖² (default 2)"),
    "cg_steps": Option(positive_int, "iMAML's conjugate-gradient steps for (I + H/λ)⁻¹ (default 5)"),
    "cg_damping": Option(non_negative_float, "iMAML: CG solves (I + H/(λ + d)) x = ∇L, d = this; the "
                                             "authors' code uses 10 (default 0, the paper's)"),
    "multi_step_loss": Option(non_negative_int, "MAML++: query losses of every inner step, weights "
                              "annealed to the last over N iterations (default 0: off)"),
    "per_step_lr": Option(boolean, "MAML++: learned step size per layer and inner step (default false)"),
    "per_step_bn": Option(boolean, "MAML++: batch-norm scale, offset and statistics per inner step "
                          "(default false)"),
    "first_order_iterations": Option(non_negative_int, "MAML++: first-order for the first N iterations, "
                                     "then second-order (default 0)"),
    "cosine_meta_lr": Option(boolean, f"MAML++: --meta-lr annealed along a cosine to {MAMLPP_MIN_LR:g} "
                             "over --iterations (default false)"),
    "n_val": Option(non_negative_int, "validation characters held out of training (default 100)"),
    "split_seed": Option(non_negative_int, "seed of the class split (default 0)"),
    "fce_steps": Option(positive_int, f"read steps K of the attention LSTM of --algo matchingnet_fce "
                                      f"(default {FCE_STEPS})"),
    "cosine_scale": Option(positive_float, "Matching Nets: learn a scale α of the cosines, softmax(α·cos), "
                                           "starting at this value (TADAM's metric scaling; default: none, "
                                           "as in the paper)"),
    "lr_halve_every": Option(non_negative_int, "halve the outer learning rate every N iterations, "
                                               "0 = never (default 0; ProtoNets 2000, Relation Net 100000)"),
    "iterations": Option(positive_int, "meta-iterations (default 60000, Reptile 100000, ProtoNets "
                                       "20000, Relation Net 1000000, Siamese 50000)", matters=False),
    "test_ways": Option(positive_int, "classes per validation and test task (default: --ways; "
                                      "ProtoNets 5)", matters=False),
    "test_query": Option(positive_int, "query examples per class in validation and test tasks "
                                       "(default: --query; metric learners 15)", matters=False),
    "eval_steps": Option(non_negative_int, "inner steps at validation and test (default 3 for 5-way, "
                                           "5 for 20-way, Reptile 50)", matters=False),
    "val_every": Option(non_negative_int, "validate every N iterations, 0 = only at the end "
                                          "(default 500)", matters=False),
    "val_tasks": Option(non_negative_int, "validation tasks, 0 = no validation (default 100)", matters=False),
    "checkpoint_every": Option(non_negative_int, "checkpoint every N iterations, 0 = only at the end "
                                                 "(default 1000)", matters=False),
    "keep_best": Option(boolean, "write the checkpoint of the best validation accuracy so far to "
                                 "<out>/best.npz (default: on; needs --val-tasks)", matters=False,
                        negatable=True),
}


def defaults(chosen):
    """The papers' defaults for the chosen data set, algorithm, ways and shots."""
    algo, ways, dataset = chosen.get("algo", "maml"), chosen.get("ways", 5), chosen.get("dataset", "omniglot")
    if algo == "protonet":
        cfg = {**COMMON_DEFAULTS, **PROTONET_DEFAULTS}
    elif algo in ("matchingnet", "matchingnet_fce"):
        cfg = {**COMMON_DEFAULTS, **METRIC_DEFAULTS, **MATCHING_DEFAULTS,
               "fce_steps": FCE_STEPS if algo == "matchingnet_fce" else None}
    elif algo == "relationnet":
        cfg = {**COMMON_DEFAULTS, **METRIC_DEFAULTS, **RELATION_DEFAULTS}
        key = (20 if ways >= 20 else 5, 1 if chosen.get("shots", 1) == 1 else 5)
        cfg["query"] = RELATION_QUERY[key]
    elif algo == "siamese":
        cfg = {**COMMON_DEFAULTS, **METRIC_DEFAULTS, **SIAMESE_DEFAULTS}
    elif algo == "metanet":
        cfg = {**COMMON_DEFAULTS, **METRIC_DEFAULTS, **METANET_DEFAULTS}
    elif algo == "reptile":
        cfg = {**COMMON_DEFAULTS, **REPTILE_DEFAULTS}
    else:
        per_ways = MAML_DEFAULTS[20] if ways >= 20 else MAML_DEFAULTS[5]
        cfg = {**COMMON_DEFAULTS, **per_ways, "meta_lr": 1e-3, "outer_lr": None, "iterations": 60000}
        if algo == "imaml":
            cfg.update(IMAML_DEFAULTS)
    paper = dataset_defaults(dataset, ways, chosen.get("shots", 1))
    if dataset != "omniglot" and algo not in ("reptile", "metanet", *HEADLESS):
        cfg.update({k: paper[k] for k in ("inner_lr", "inner_steps", "eval_steps", "meta_batch", "query")})
    cfg.update({"algo": algo, "dataset": dataset, "image_size": paper["image_size"],
                "in_channels": paper["model"]["in_channels"], "filters": paper["model"]["filters"],
                "max_pool": paper["model"]["max_pool"] or algo in HEADLESS})
    if algo in HEADLESS:
        cfg["filters"] = 64                                   # Snell et al.'s encoder on every data set
    cfg.setdefault("lr_halve_every", 0)
    cfg.setdefault("lam", None)
    for k, off in MAMLPP.items():
        cfg.setdefault(k, off)
    cfg.setdefault("cg_steps", None)
    cfg.setdefault("cg_damping", None)
    cfg.setdefault("test_ways", chosen.get("ways", cfg["ways"]))
    cfg.setdefault("test_query", chosen.get("query", cfg["query"]))
    return cfg


def check(cfg):
    if cfg["dataset"] == "omniglot":
        for queries, flag in ((cfg["query"], "--query"), (cfg["test_query"], "--test-query")):
            if cfg["shots"] + queries > DRAWINGS:
                raise ConfigError(f"--shots + {flag} = {cfg['shots']} + {queries} = {cfg['shots'] + queries} "
                                  f"is more than the {DRAWINGS} drawings of each Omniglot character")
    if cfg["ways"] < 2 or cfg["test_ways"] < 2:
        raise ConfigError(f"--ways and --test-ways must be at least 2, got {cfg['ways']} and {cfg['test_ways']}")
    if cfg["algo"] not in HEADLESS and cfg["test_ways"] != cfg["ways"]:
        raise ConfigError(f"--test-ways {cfg['test_ways']} differs from --ways {cfg['ways']}, but "
                          f"--algo {cfg['algo']} has a {cfg['ways']}-way head")
    unused = ["meta_lr"] if cfg["algo"] == "reptile" else ["outer_lr"]
    if cfg["algo"] in HEADLESS or cfg["algo"] == "metanet":
        unused = ["outer_lr", "inner_lr", "inner_steps"]
    if cfg["algo"] != "matchingnet_fce":
        unused.append("fce_steps")
    if cfg["algo"] not in ("matchingnet", "matchingnet_fce"):
        unused.append("cosine_scale")
    if cfg["algo"] != "imaml":
        unused += ["lam", "cg_steps", "cg_damping"]
    for k in unused:
        if cfg.get(k) is not None:
            raise ConfigError(f"--{k.replace('_', '-')} does not apply to --algo {cfg['algo']}")
    for k, off in MAMLPP.items():
        if cfg.get(k, off) != off and cfg["algo"] not in ("maml", "fomaml"):
            raise ConfigError(f"--{k.replace('_', '-')} is a MAML++ option of --algo maml or fomaml, "
                              f"not {cfg['algo']}")
    if cfg["algo"] == "metanet" and not cfg["transductive"]:
        raise ConfigError("--non-transductive does not apply to --algo metanet: its networks have no batch norm")
    if cfg["algo"] == "relationnet" and not cfg["transductive"]:
        raise ConfigError("--non-transductive does not apply to --algo relationnet: its batch norm "
                          "uses the statistics of each episode, as the paper's code does")


CONFIG = Config(OPTIONS, defaults, checks=[check])
RECIPES = Path(__file__).with_name("configs")

# --- data -----------------------------------------------------------------------------------


def load_split(cfg, data_dir):
    """(training, validation, test classes, data fingerprint) from ``tinymeta.data``."""
    options = {"split": cfg["split"], "split_seed": cfg["split_seed"], "n_val": cfg["n_val"]}
    if cfg["dataset"] == "folder":
        options = {"split_seed": cfg["split_seed"]}
    elif cfg["dataset"] != "omniglot":
        options = {}
    splits = load_splits(cfg["dataset"], data_dir, image_size=cfg["image_size"], **options)
    return splits.train, splits.val, splits.test, splits.fingerprint


def check_classes(cfg, training=None, validation=None, test=None):
    """Every split a run will draw tasks from has enough classes: checked before training."""
    for name, classes, ways, flag in (("training", training, cfg["ways"], "--ways"),
                                      ("validation", validation, cfg["test_ways"], "--test-ways"),
                                      ("test", test, cfg["test_ways"], "--test-ways")):
        if classes is not None and ways > len(classes):
            hint = " (--val-tasks 0 turns validation off)" if name == "validation" else ""
            raise UsageError(f"{flag} {ways} is more than the {len(classes)} {name} classes{hint}")


def check_images(cfg, classes):
    """The model's input (channels, size) matches the data's images."""
    first = classes[0] if isinstance(classes, list) else classes[0]
    shape = tuple(first.shape[1:])
    channels = 1 if len(shape) == 2 else shape[0]
    if channels != cfg["in_channels"] or shape[-1] != cfg["image_size"]:
        raise UsageError(f"the {cfg['dataset']} images are {channels}x{shape[-2]}x{shape[-1]} but the "
                         f"model expects {cfg['in_channels']}x{cfg['image_size']}x{cfg['image_size']}: "
                         f"pass --in-channels {channels}")


def sampler(cfg, classes, seed, test=False):
    """Training episodes (Siamese: same/different pairs), or (``test``) validation/test episodes
    with the test ways and queries."""
    if cfg["algo"] == "siamese" and not test:
        return PairSampler(classes, rng=seed, dtype=np.dtype(cfg["dtype"]))
    ways, query = (cfg["test_ways"], cfg["test_query"]) if test else (cfg["ways"], cfg["query"])
    make = EpisodeSampler if test else episode_sampler      # training: gathered on the GPU under CuPy
    try:
        return make(classes, ways, cfg["shots"], query, rng=seed, dtype=np.dtype(cfg["dtype"]))
    except ValueError as e:                       # e.g. a class with fewer images than shots + queries
        which = "--test-ways/--test-query" if test else "--ways/--shots/--query"
        raise UsageError(f"{e} (check {which})") from None


def task_chunk(cfg):
    """Tasks per evaluation call, so one call holds about 2000 images."""
    return max(1, 2000 // (cfg["test_ways"] * (cfg["shots"] + cfg["test_query"])))


# --- the learner ----------------------------------------------------------------------------

def matching(model, params, cfg, batched=True):
    """Matching Networks, with or without full context (the model says which)."""
    return MatchingNet(model, params, optimizer=adam(cfg), batched=batched, scale=cfg.get("cosine_scale"))


LEARNERS = {     # algo → (model, params, cfg, batched) → learner; the bench builds from it too
    "maml": lambda m, p, c, batched=True: MAML(m, p, F.cross_entropy, c["inner_lr"], c["inner_steps"],
                                               optimizer=adam(c), batched=batched, **mamlpp(c)),
    "fomaml": lambda m, p, c, batched=True: MAML(m, p, F.cross_entropy, c["inner_lr"], c["inner_steps"],
                                                 first_order=True, optimizer=adam(c), batched=batched,
                                                 **mamlpp(c)),
    "anil": lambda m, p, c, batched=True: ANIL(m, p, F.cross_entropy, inner_lr=c["inner_lr"],
                                               inner_steps=c["inner_steps"], optimizer=adam(c),
                                               batched=batched),
    "metasgd": lambda m, p, c, batched=True: MetaSGD(m, p, F.cross_entropy, inner_lr=c["inner_lr"],
                                                     inner_steps=c["inner_steps"], optimizer=adam(c),
                                                     batched=batched),
    "reptile": lambda m, p, c, batched=True: Reptile(m, p, F.cross_entropy, c["inner_lr"], c["inner_steps"],
                                                     outer_lr=c["outer_lr"], inner_optimizer="adam",
                                                     adam_betas=REPTILE_ADAM_BETAS, batched=batched),
    "imaml": lambda m, p, c, batched=True: IMAML(m, p, F.cross_entropy, c["inner_lr"], c["inner_steps"],
                                                 lam=c["lam"], cg_steps=c["cg_steps"], optimizer=adam(c),
                                                 batched=batched, cg_damping=c.get("cg_damping") or 0.0),
    "protonet": lambda m, p, c, batched=True: ProtoNet(m, p, optimizer=adam(c), batched=batched),
    "matchingnet": matching,
    "matchingnet_fce": matching,          # the same learner; the model (MODELS) adds the full context
    "relationnet": lambda m, p, c, batched=True: RelationNet(m, p, optimizer=adam(c), batched=batched),
    "siamese": lambda m, p, c, batched=True: Siamese(m, p, optimizer=adam(c), batched=batched),
    # Ravi & Larochelle's learned update on the same Conv4 (always batched); --inner-lr is not used
    "lstm_meta": lambda m, p, c, batched=True: LSTMMetaLearner(m, p, F.cross_entropy, c["inner_steps"],
                                                               optimizer=adam(c), rng=[c["seed"], 2]),
    # Meta Networks (always batched): the official clipping of the summed loss's gradient at 10 is
    # the mean loss's at 10 / (queries per task) under Adam
    "metanet": lambda m, p, c, batched=True: MetaNet(m, p, optimizer=adam(c),
                                                     clip_norm=METANET_CLIP / (c["ways"] * c["query"])),
}
# learners whose model compares embeddings instead of ending in a head: any ways at test
HEADLESS = ("protonet", "matchingnet", "matchingnet_fce", "relationnet", "siamese")


def mamlpp(cfg):
    """MAML's keyword arguments for the MAML++ options of a configuration (absent: off)."""
    return {"multi_step_loss": cfg.get("multi_step_loss", 0), "per_step_lr": cfg.get("per_step_lr", False),
            "first_order_iterations": cfg.get("first_order_iterations", 0)}


def adam(cfg):
    return lambda params: Adam(params, lr=cfg["meta_lr"])


def conv4(cfg):
    """Conv4 with a ways-way head, or for the metric learners the encoder of Snell et al. and
    Vinyals et al.: max-pool blocks, no head (64 features on 28×28)."""
    headless = cfg["algo"] in HEADLESS
    return Conv4(None if headless else cfg["ways"], in_channels=cfg["in_channels"], filters=cfg["filters"],
                 image_size=cfg["image_size"], max_pool=cfg["max_pool"], transductive=cfg["transductive"],
                 bn_steps=cfg["inner_steps"] if cfg.get("per_step_bn") else None)


MODELS = {              # the model of each learner that is not a plain Conv4
    "matchingnet_fce": lambda c: FullContextEmbedding(conv4(c), c["fce_steps"]),
    "relationnet": lambda c: RelationModel(c["in_channels"], filters=c["filters"], image_size=c["image_size"]),
    "siamese": lambda c: SiameseModel(conv4(c)),
    "metanet": lambda c: MetaNetModel(c["ways"], in_channels=c["in_channels"], filters=c["filters"],
                                      image_size=c["image_size"]),
}


def build(cfg):
    """The learner of a configuration, with fresh weights (seeded by cfg['seed'])."""
    model = MODELS.get(cfg["algo"], conv4)(cfg)
    params = model.init(np.random.default_rng([cfg["seed"], 0]), dtype=np.dtype(cfg["dtype"]))
    return LEARNERS[cfg["algo"]](model, params, cfg)


def hooks(cfg, val_classes):
    out = []
    if cfg["algo"] == "reptile":
        out.append(LinearDecay(cfg["outer_lr"], cfg["iterations"]))     # ε annealed to 0
    if cfg.get("multi_step_loss") or cfg.get("first_order_iterations"):
        out.append(SetIteration())                                      # MAML++'s annealing reads it
    if cfg.get("cosine_meta_lr"):
        out.append(CosineDecay(cfg["meta_lr"], cfg["iterations"], MAMLPP_MIN_LR))
    if cfg["lr_halve_every"]:
        out.append(StepDecay(cfg["meta_lr"], cfg["lr_halve_every"], 0.5))
    if cfg["val_tasks"]:
        def measure(learner):
            acc = meta_test(learner, sampler(cfg, val_classes, VAL_SEED, test=True), cfg["val_tasks"],
                            cfg["eval_steps"], task_chunk(cfg))["accuracy"][-1]
            return mean_ci(acc)
        out.append(Validation(measure, cfg["val_every"], keep_best=cfg["keep_best"]))
    return out


# --- figures --------------------------------------------------------------------------------

def draw_curves(path, log, cfg):
    draw_training_curves(path, log, f"Omniglot {cfg['ways']}-way {cfg['shots']}-shot, {cfg['algo']}",
                         "meta-loss (query, after adaptation)",
                         f"accuracy after {cfg['eval_steps']} steps, {cfg['val_tasks']} tasks (%)")


# --- commands -------------------------------------------------------------------------------

def train_parser():
    p = ArgumentParser(
        prog="python -m experiments.omniglot [train]",
        description="Meta-train a Conv4 on few-shot Omniglot. Defaults follow each method's "
                    "paper and depend on --ways (and --shots); see the module docstring. Evaluate with: python -m experiments.omniglot evaluate CKPT")
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
    p.add_argument("checkpoint", help="a checkpoint written by training (best.npz, checkpoint.npz), "
                                      "or a run folder: its best.npz, else its checkpoint.npz")
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
        cfg, resuming = run_config(CONFIG, args, folder, say)
        t0 = time.perf_counter()
        train_classes, val_classes, test_classes, fingerprint = load_split(cfg, args.data_dir)
        check_classes(cfg, training=train_classes, test=test_classes,
                      validation=val_classes if cfg["val_tasks"] else None)
        check_images(cfg, train_classes)
        for classes in ((val_classes,) if cfg["val_tasks"] else ()) + (test_classes,):
            sampler(cfg, classes, 0, test=True)          # evaluation must accept this configuration
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
        return training.run_to_end()


def restore(path):
    """(cfg, meta, learner) of a checkpoint (``tinymeta.training.restore_learner``)."""
    return restore_learner(path, CONFIG, build)


def evaluate(args):
    path = resolve_checkpoint(args.checkpoint)
    cfg, meta, learner = restore(path)
    for option, key in (("ways", "test_ways"), ("shots", "shots"), ("query", "test_query")):
        if getattr(args, option) is not None:
            cfg[key] = getattr(args, option)
    if cfg["dataset"] == "omniglot":                  # training queries play no part in evaluation
        cfg["query"] = max(1, min(cfg["query"], DRAWINGS - cfg["shots"]))
    cfg = CONFIG.check(cfg)
    steps = cfg["eval_steps"] if args.eval_steps is None else args.eval_steps
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / "eval" / f"{path.stem}-{stamp}"
    with RunFolder(out, marker="evaluation.json", say=say) as folder:
        say(f"{describe_checkpoint(path, meta)}: {cfg['algo']} {cfg['ways']}-way {cfg['shots']}-shot, "
            f"split {cfg['split']}, {cfg['iterations']} iterations in all")
        t0 = time.perf_counter()
        _train, _val, test, fingerprint = load_split(cfg, args.data_dir)
        data_note = None
        if meta.get("data") and meta["data"] != fingerprint:
            data_note = (f"the data differ from those the checkpoint was trained on (fingerprint "
                         f"{meta['data'][:12]}…, now {fingerprint[:12]}…)")
            print(f"warning: {data_note}", file=sys.stderr, flush=True)
        if args.lake:
            return evaluate_lake(args, folder, path, cfg, meta, learner, steps, say, t0)
        check_classes(cfg, test=test)
        results = meta_test(learner, sampler(cfg, test, args.seed, test=True), args.tasks, steps,
                            task_chunk(cfg))
        acc = summarize(100.0 * results["accuracy"])
        m, ci = acc["mean"][-1], acc["ci95"][-1]
        result = {"checkpoint": str(path), "iteration": meta["iteration"], "best": meta.get("best"),
                  "config": cfg, "test_classes": int(len(test)), "tasks": args.tasks, "seed": args.seed,
                  "eval_steps": steps, "accuracy_percent": m, "ci95_percent": ci,
                  "accuracy_by_step": acc, "ci": CONVENTION, "data_fingerprint": fingerprint,
                  "data_warning": data_note,
                  "per_task_accuracy": results["accuracy"][-1].tolist(),
                  "seconds": time.perf_counter() - t0}
        write_json(folder / "evaluation.json", result)
        print(f"{cfg['test_ways']}-way {cfg['shots']}-shot test accuracy ({cfg['algo']}, {steps} steps, "
              f"{args.tasks} tasks): {m:.2f} ± {ci:.2f}%  ({describe_checkpoint(path, meta)}; "
              f"wrote {folder / 'evaluation.json'})", flush=True)
        return result


def lake_episode(runs, dtype):
    """Lake's runs as a task batch: each run's training images are the support set (label j for
    image j) and its test images the queries."""
    return Episode(support_x=np.stack([r.train[:, None] for r in runs]).astype(dtype),
                   support_y=np.stack([np.arange(len(r.train), dtype=np.int64) for r in runs]),
                   query_x=np.stack([r.test[:, None] for r in runs]).astype(dtype),
                   query_y=np.stack([r.labels for r in runs]),
                   classes=np.zeros((len(runs), len(runs[0].train)), dtype=np.int64))


def evaluate_lake(args, folder, path, cfg, meta, learner, steps, say, t0):
    if cfg["dataset"] != "omniglot":
        raise UsageError(f"--lake needs an Omniglot model, this one was trained on {cfg['dataset']}")
    runs = load_lake_runs(args.data_dir, size=cfg["image_size"])
    if cfg["split"] != "lake":
        print("warning: this model was trained on the MAML split, whose training classes include "
              "characters of the evaluation alphabets that Lake's runs are drawn from; the error is "
              "optimistic. Train with --split lake for the proper benchmark.", file=sys.stderr, flush=True)
    dtype = np.dtype(cfg["dtype"])
    n_classes = {len(r.train) for r in runs}
    if cfg["algo"] in HEADLESS:
        method = f"the {cfg['algo']} model with each run's {len(runs[0].train)} training images as its support set"
        acc = np.concatenate([learner.evaluate(lake_episode([r], dtype), 0)["accuracy"][-1] for r in runs])
    elif cfg["ways"] in n_classes and len(n_classes) == 1:
        method = f"adapt the {cfg['ways']}-way model to each run's 20 training images ({steps} steps)"
        acc = learner.evaluate(lake_episode(runs, dtype), steps)["accuracy"][-1]
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
    result = {"checkpoint": str(path), "iteration": meta["iteration"], "best": meta.get("best"),
              "config": cfg, "method": method,
              "eval_steps": steps, "runs": {r.name: e for r, e in zip(runs, errors)},
              "error_percent": overall, "human_error_percent": HUMAN_LAKE_ERROR,
              "seconds": time.perf_counter() - t0}
    write_json(folder / "lake.json", result)
    write_json(folder / "evaluation.json", {"lake": True, "error_percent": overall, "checkpoint": str(path),
                                            "iteration": meta["iteration"]})
    print(f"Lake 20-way one-shot (within alphabet), {len(runs)} runs: error {overall:.2f}% "
          f"(people: {HUMAN_LAKE_ERROR}%)  [{method}]  ({describe_checkpoint(path, meta)}; "
          f"wrote {folder / 'lake.json'})", flush=True)
    return result


def main(argv=None):
    return run_commands(argv, {"train": lambda a: train(train_parser().parse_args(a)),
                               "evaluate": lambda a: evaluate(evaluate_parser().parse_args(a))},
                        setup=reuse_large_allocations)   # keep big freed buffers: no page faults each iteration


if __name__ == "__main__":
    main()
