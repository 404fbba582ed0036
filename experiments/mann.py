"""Memory-augmented neural network (Santoro et al. 2016) and its LSTM baseline on Omniglot
label-offset episodes: configurations and the accuracy-by-instance figure.

    python -m experiments.mann --out runs/mann                        # MANN, the paper's sizes
    python -m experiments.mann --algo lstm --out runs/mann_lstm       # the LSTM baseline
    python -m experiments.mann evaluate runs/mann/best.npz            # accuracy by instance ± CI
    python -m experiments.mann figure runs/eval/A/evaluation.json runs/eval/B/evaluation.json --out fig.png
    python -m experiments.mann reads runs/mann/best.npz               # where the reads go

The paper's setting (Section 4.1 and Figure 2): episodes of 5 classes × 10 drawings = 50
steps, labels shuffled per episode and given one step late, 20×20 images flattened, an LSTM
controller of 200 units, memory 128 × 40, 4 read heads, usage decay γ = 0.95, Adam 1e-3, 16
episodes per batch. The paper also rotates and translates the characters; ``--rotations``
adds the 90-degree rotations as new classes (off by default), translations are not done.

Every ``--val-every`` batches the accuracy at the second instance on ``--val-tasks``
validation episodes is logged; with ``--keep-best`` (the default; ``--no-keep-best`` turns
it off) each one higher than every earlier one writes the checkpoint of that batch to
``<out>/best.npz``. ``evaluate`` takes it, ``checkpoint.npz`` or a run folder (its
``best.npz``, else its ``checkpoint.npz``). ``log.csv`` and ``curves.png`` (training loss,
validation accuracy) are rewritten at every checkpoint.
"""
import time
from pathlib import Path

import numpy as np

from autograd import Tensor, backend, no_grad
from tinymeta.algorithms import MANN, MemoryNetwork
from tinymeta.algorithms.mann import by_instance, correct
from tinymeta.data import load_splits
from tinymeta.optim import Adam
from tinymeta.tasks.sequences import SequenceSampler
from tinymeta.training import (pyplot, draw_training_curves, ArgumentParser, RunFolder, Training, Validation,
                               describe_checkpoint, meta_test, mean_ci, resolve_checkpoint, run_config,
                               restore_learner, run_commands, save_figure, summarize, UsageError, write_json)
from tinymeta.training.config import (Config, ConfigError, Option, boolean, choice, non_negative_int, positive_float,
                                      positive_int)

VAL_SEED = 20160519       # the validation episodes: the same ones at every validation
EVAL_SEED = 1
INSTANCES_SHOWN = (1, 2, 3, 4, 5, 10)
PAPER = {                 # Santoro et al. 2016, Table 1, 5 classes, accuracy (%) by instance
    "mann": [36.4, 82.8, 91.0, 92.6, 94.9, 98.1],
    "lstm": [24.4, 49.5, 55.3, 61.0, 63.6, 62.5],
}

OPTIONS = {
    "algo": Option(choice("mann", "lstm"), "MANN, or the LSTM baseline without memory (default mann)"),
    "ways": Option(positive_int, "classes per episode (default 5)"),
    "instances": Option(positive_int, "drawings of each class per episode (default 10)"),
    "meta_batch": Option(positive_int, "episodes per batch (default 16)"),
    "meta_lr": Option(positive_float, "Adam learning rate (default 1e-3)"),
    "hidden": Option(positive_int, "LSTM controller units (default 200)"),
    "slots": Option(positive_int, "memory slots N (default 128)"),
    "width": Option(positive_int, "memory slot width W (default 40)"),
    "heads": Option(positive_int, "read heads (default 4)"),
    "gamma": Option(positive_float, "usage decay γ (default 0.95)"),
    "key_strength": Option(boolean, "reads by softmax β·cos with a learned key strength β per head (the "
                                    "NTM's; not in the paper, default false)"),
    "image_size": Option(positive_int, "image side in pixels (default 20)"),
    "rotations": Option(boolean, "add 90-degree rotations of the training characters as classes (default false)"),
    "seed": Option(non_negative_int, "seed of the initial weights and training episodes (default 0)"),
    "dtype": Option(choice("float32", "float64"), "float type (default float32)"),
    "iterations": Option(positive_int, "batches (default 10000 = 160 000 episodes)", matters=False),
    "val_every": Option(non_negative_int, "validate every N batches, 0 = only at the end (default 500)",
                        matters=False),
    "val_tasks": Option(non_negative_int, "validation episodes, 0 = none (default 160)", matters=False),
    "checkpoint_every": Option(non_negative_int, "checkpoint every N batches (default 500)", matters=False),
    "keep_best": Option(boolean, "write the checkpoint of the best validation accuracy so far to "
                                 "<out>/best.npz (default: on; needs --val-tasks)", matters=False,
                        negatable=True),
}
DEFAULTS = {"algo": "mann", "ways": 5, "instances": 10, "meta_batch": 16, "meta_lr": 1e-3, "hidden": 200,
            "slots": 128, "width": 40, "heads": 4, "gamma": 0.95, "key_strength": False, "image_size": 20, "rotations": False,
            "seed": 0, "dtype": "float32", "iterations": 10000, "val_every": 500, "val_tasks": 160,
            "checkpoint_every": 500, "keep_best": True}


def check(cfg):
    if cfg["heads"] > cfg["slots"]:
        raise ConfigError(f"--heads {cfg['heads']} needs as many memory slots, --slots is {cfg['slots']}")


CONFIG = Config(OPTIONS, lambda chosen: dict(DEFAULTS), checks=[check])


def load(cfg, data_dir):
    """(training, validation, test classes, fingerprint): Omniglot's MAML split at the run's size."""
    splits = load_splits("omniglot", data_dir, image_size=cfg["image_size"], rotations=cfg["rotations"])
    return splits.train, splits.val, splits.test, splits.fingerprint


def sampler(cfg, classes, seed):
    return SequenceSampler(classes, cfg["ways"], cfg["instances"], rng=seed, dtype=np.dtype(cfg["dtype"]))


def build(cfg):
    model = MemoryNetwork(cfg["image_size"] ** 2, cfg["ways"], cfg["hidden"], cfg["slots"], cfg["width"],
                          cfg["heads"], cfg["gamma"], memory=cfg["algo"] == "mann",
                          key_strength=cfg.get("key_strength", False))
    params = model.init(np.random.default_rng(cfg["seed"]), dtype=np.dtype(cfg["dtype"]))
    return MANN(model, params, optimizer=lambda p: Adam(p, lr=cfg["meta_lr"]))


def hooks(cfg, val_classes):
    if not cfg["val_tasks"]:
        return []

    def measure(learner):                  # accuracy at the 2nd instance: the paper's headline
        result = meta_test(learner, sampler(cfg, val_classes, VAL_SEED), cfg["val_tasks"], 0, cfg["meta_batch"])
        return mean_ci(result["by_instance"][1])
    return [Validation(measure, cfg["val_every"], keep_best=cfg["keep_best"])]


# --- figure ---------------------------------------------------------------------------------

def draw_curves(path, log, cfg):
    draw_training_curves(path, log, f"Omniglot label-offset episodes, {cfg['algo']}",
                         "cross-entropy per step (all 50 steps)",
                         f"accuracy at the 2nd instance, {cfg['val_tasks']} episodes (%)")


def draw_by_instance(path, evaluations):
    """Accuracy (± 95% CI) by instance of each evaluation, beside the paper's numbers."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = {"mann": "tab:red", "lstm": "tab:blue"}
    for ev in evaluations:
        algo, acc = ev["config"]["algo"], ev["by_instance"]
        k = np.arange(1, len(acc["mean"]) + 1)
        ax.errorbar(k, acc["mean"], yerr=acc["ci95"], marker="o", ms=3, capsize=2, color=colors.get(algo),
                    label=f"{algo.upper()} (ours, {ev['tasks']} episodes)")
        ax.plot(INSTANCES_SHOWN, PAPER[algo], ls="--", marker="x", color=colors.get(algo),
                label=f"{algo.upper()} (Santoro et al. 2016)")
    ax.set_xlabel("instance (how many times the class has been shown, this one included)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Omniglot, 5 classes per episode: accuracy by instance")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


# --- commands -------------------------------------------------------------------------------

def train_parser():
    p = ArgumentParser(prog="python -m experiments.mann [train]",
                       description="Train MANN or its LSTM baseline on Omniglot label-offset episodes.")
    CONFIG.add_arguments(p)
    p.add_argument("--out", default="runs/mann", help="output folder (default runs/mann)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.npz")
    p.add_argument("--data-dir", help="folder containing omniglot/ (default $TINYMETA_DATA)")
    p.add_argument("--progress-every", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def train(args):
    say = None if args.quiet else (lambda msg: print(msg, flush=True))
    with RunFolder(args.out, resume=args.resume, say=say or (lambda m: None)) as folder:
        cfg, resuming = run_config(CONFIG, args, folder, say)
        train_classes, val_classes, _test, fingerprint = load(cfg, args.data_dir)
        training = Training(build(cfg), sampler(cfg, train_classes, [cfg["seed"], 1]), cfg["meta_batch"],
                            cfg["iterations"], folder, cfg, label=f"omniglot sequences {cfg['algo']}",
                            hooks=hooks(cfg, val_classes), checkpoint_every=cfg["checkpoint_every"],
                            fingerprint=fingerprint, say=say, progress_every=args.progress_every,
                            resume_command=f"python -m experiments.mann --out {args.out} --resume",
                            after_checkpoint=lambda training, _it: draw_curves(folder / "curves.png", training.log, cfg))
        if resuming:
            training.restore()
        if say:
            say("config: " + " ".join(f"{k}={v}" for k, v in cfg.items()))
        return training.run_to_end()


def evaluate_parser():
    p = ArgumentParser(prog="python -m experiments.mann evaluate",
                       description="Accuracy by instance (± 95% CI) of a checkpoint on test-class episodes.")
    return checkpoint_arguments(p, tasks=1000, kind="")


def checkpoint_arguments(p, tasks, kind):
    """The arguments of the commands that read a checkpoint and test it on episodes."""
    p.add_argument("checkpoint", help="a checkpoint written by training (best.npz, checkpoint.npz), "
                                      "or a run folder: its best.npz, else its checkpoint.npz")
    p.add_argument("--tasks", type=positive_int, default=tasks, help=f"test episodes (default {tasks})")
    p.add_argument("--seed", type=non_negative_int, default=EVAL_SEED, help=f"seed of the test episodes (default {EVAL_SEED})")
    p.add_argument("--data-dir", help="folder containing omniglot/ (default $TINYMETA_DATA)")
    p.add_argument("--out", help=f"output folder (default runs/eval/<checkpoint folder>{kind}-<time>)")
    return p


def open_checkpoint(args, kind):
    """(path, cfg, meta, learner, output folder) of a checkpoint command."""
    path = resolve_checkpoint(args.checkpoint)
    cfg, meta, learner = restore_learner(path, CONFIG, build)
    out = Path(args.out) if args.out else Path("runs") / "eval" / f"{path.parent.name}{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    return path, cfg, meta, learner, out


def evaluate(args):
    path, cfg, meta, learner, out = open_checkpoint(args, "")
    with RunFolder(out, marker="evaluation.json", say=lambda m: None) as folder:
        _train, _val, test, fingerprint = load(cfg, args.data_dir)
        t0 = time.perf_counter()
        result = meta_test(learner, sampler(cfg, test, args.seed), args.tasks, 0, cfg["meta_batch"])
        acc = summarize(100.0 * result["by_instance"])
        evaluation = {"checkpoint": str(path), "iteration": meta["iteration"], "best": meta.get("best"),
                      "config": cfg,
                      "tasks": args.tasks, "seed": args.seed, "by_instance": acc,
                      "accuracy": summarize(100.0 * result["accuracy"]), "paper": PAPER[cfg["algo"]],
                      "paper_instances": list(INSTANCES_SHOWN), "data_fingerprint": fingerprint,
                      "seconds": time.perf_counter() - t0}
        write_json(folder / "evaluation.json", evaluation)
        draw_by_instance(folder / "by_instance.png", [evaluation])
        shown = "  ".join(f"{k}: {acc['mean'][k - 1]:.1f}±{acc['ci95'][k - 1]:.1f}"
                          for k in INSTANCES_SHOWN if k <= len(acc["mean"]))
        print(f"{cfg['algo']} accuracy by instance (%), {args.tasks} episodes: {shown}  "
              f"({describe_checkpoint(path, meta)}; wrote {folder / 'evaluation.json'})", flush=True)
        return evaluation


def reads_parser():
    p = ArgumentParser(prog="python -m experiments.mann reads",
                       description="Where a MANN's reads go: how peaked its read weights are, how much "
                                   "of them lands on the slots written in the same step, the write gates, "
                                   "and the accuracy with the reads cut from the output layer.")
    return checkpoint_arguments(p, tasks=200, kind="-reads")


def reads(args):
    path, cfg, meta, learner, out = open_checkpoint(args, "-reads")
    if cfg["algo"] != "mann":
        raise UsageError(f"{path}: reads needs a MANN checkpoint, this one is --algo {cfg['algo']} (no memory)")
    with RunFolder(out, marker="reads.json", say=lambda m: None) as folder:
        _train, _val, test, _fingerprint = load(cfg, args.data_dir)
        batch = sampler(cfg, test, args.seed).sample_batch(args.tasks)
        model, params, N = learner.model, learner.params, cfg["slots"]
        trace = []
        with no_grad():
            logits = learner.logits(params, batch, "test", trace=trace)
            w = backend.to_numpy(params["output/w"].data).copy()
            w[:, model.hidden:] = 0                                        # the reads' columns of W_o
            cut = learner.logits(dict(params, **{"output/w": Tensor.constant(backend.from_numpy(w))}), batch, "test")
        reads_w = np.stack([t["reads"] for t in trace], axis=1)          # (B, L, R, N)
        written = np.stack([t["writes"] for t in trace], axis=1).sum(axis=2) > 0.1   # (B, L, N)
        result = {
            "checkpoint": str(path), "iteration": meta["iteration"], "tasks": args.tasks, "seed": args.seed,
            "key_strength": bool(cfg.get("key_strength")),
            "accuracy_by_instance": (100 * by_instance(correct(logits, batch.y), batch.instance).mean(axis=1)).tolist(),
            "accuracy_by_instance_reads_cut_from_output":
                (100 * by_instance(correct(cut, batch.y), batch.instance).mean(axis=1)).tolist(),
            "largest_read_weight_mean": float(reads_w.max(axis=-1).mean()),
            "uniform_read_weight": 1.0 / N,
            "largest_read_weight_possible_without_key_strength": float(np.e / (np.e + (N - 1) / np.e)),
            "read_mass_on_slots_written_this_step": float((reads_w * written[:, :, None, :]).sum(axis=-1).mean()),
            "write_gate_mean_per_head": np.stack([t["gates"] for t in trace]).mean(axis=(0, 1)).tolist(),
        }
        write_json(folder / "reads.json", result)
        print(f"{describe_checkpoint(path, meta)}, {args.tasks} test episodes:")
        print(f"  largest read weight, mean {result['largest_read_weight_mean']:.4f} (uniform 1/N = {1 / N:.4f}; "
              f"softmax of cosines caps it at {result['largest_read_weight_possible_without_key_strength']:.4f})")
        print(f"  read mass on the slots written in the same step: {result['read_mass_on_slots_written_this_step']:.3f}")
        print("  write gate σ(α) per head: " + " ".join(f"{g:.3f}" for g in result["write_gate_mean_per_head"]))
        for name, key in (("accuracy by instance (%)", "accuracy_by_instance"),
                          ("reads cut from the output", "accuracy_by_instance_reads_cut_from_output")):
            print(f"  {name:26s} " + " ".join(f"{a:5.1f}" for a in result[key]))
        print(f"(wrote {folder / 'reads.json'})", flush=True)
        return result


def figure(argv):
    p = ArgumentParser(prog="python -m experiments.mann figure",
                       description="Accuracy by instance of several evaluations in one figure.")
    p.add_argument("evaluations", nargs="+", help="evaluation.json files written by evaluate")
    p.add_argument("--out", required=True, help="the figure's file (.png)")
    args = p.parse_args(argv)
    import json
    draw_by_instance(Path(args.out), [json.loads(Path(e).read_text()) for e in args.evaluations])


def main(argv=None):
    return run_commands(argv, {"train": lambda a: train(train_parser().parse_args(a)),
                               "evaluate": lambda a: evaluate(evaluate_parser().parse_args(a)),
                               "figure": figure,
                               "reads": lambda a: reads(reads_parser().parse_args(a))})


if __name__ == "__main__":
    main()
