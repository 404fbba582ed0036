"""The resumable training loop that every experiment runs.

One iteration is, for any learner (the contract of ``tinymeta.algorithms.base``)::

    for hook in hooks: hook.before_step(training, i)     # e.g. anneal Reptile's ε
    metrics = learner.step(tasks.sample_batch(meta_batch))
    for hook in hooks: hook.after_step(training, i, metrics)   # e.g. validate

Every ``checkpoint_every`` iterations, at the end, and when the run is stopped with Ctrl-C
or SIGTERM, ``checkpoint.npz`` is written atomically with everything the run holds: the
learner's state (parameters, optimizer state, model state such as running statistics), the
task sampler's random stream, the iteration, the elapsed time, the log, the configuration,
the process-wide numerical settings and a fingerprint of the data. ``Training.restore()``
reads it back, so a resumed run continues exactly where the checkpoint left it (bit for
bit under the same numerical settings: the same kernels, backend and thread counts).

With ``Validation(..., keep_best=True)``, each measurement that beats every earlier one of
the run also writes ``best.npz``: the same checkpoint format, of that iteration, its
metadata adding ``best`` (iteration, validation mean and ci95). ``evaluate`` reads it like
any checkpoint, and a copy of it renamed ``checkpoint.npz`` resumes from there.

A loss or gradient that is not finite stops the run with one sentence naming the iteration;
parameters that are not finite are never written over the last good checkpoint.
"""
import math
import signal
import time
from pathlib import Path

import numpy as np

import tinymeta
from autograd import backend

from .. import checkpoint
from ..algorithms.base import NonFiniteError
from ..files import write_csv
from .progress import Progress

FORMAT = "tinymeta-run"
FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.npz"
BEST = "best.npz"
EXTRA = "extra_"                # the log's arrays of other step metrics: log/extra_<name>


class TrainingError(Exception):
    """A run cannot start or continue; the message is one sentence for the user."""


class Diverged(TrainingError):
    """The loss, a gradient or a parameter became inf or NaN."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the run saved a checkpoint and stopped."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


def numerical_settings():
    """What changes float rounding, so a resume under other settings can warn."""
    try:
        from autograd import settings
        return settings.current()
    except ImportError:                                     # engines without the settings home
        from autograd import kernels
        return {"backend": backend.name, "kernels": kernels.kernels_name()}


class Log:
    """Per-iteration loss, training accuracy (NaN where there is none) and elapsed seconds,
    the validation results (iteration, mean, ci95), and any other number a learner's ``step``
    returns (``extra``: name → one value per iteration, NaN where a step did not give it;
    MAML-RL's TRPO step gives its mean KL, whether the line search accepted, its backtracks).
    """

    def __init__(self):
        self.loss, self.accuracy, self.elapsed = [], [], []
        self.val_iteration, self.val_mean, self.val_ci = [], [], []
        self.extra = {}

    def append(self, metrics, elapsed):
        seen = len(self.loss)
        self.loss.append(float(metrics["loss"]))
        self.accuracy.append(float(metrics.get("accuracy", float("nan"))))
        self.elapsed.append(float(elapsed))
        for name, value in metrics.items():
            if name not in ("loss", "accuracy") and np.ndim(value) == 0 and name not in self.extra:
                self.extra[name] = [float("nan")] * seen          # a column that starts late
        for name, column in self.extra.items():
            value = metrics.get(name)
            column.append(float(value) if value is not None and np.ndim(value) == 0 else float("nan"))

    def arrays(self):
        return {"loss": np.array(self.loss, dtype=np.float64),
                "accuracy": np.array(self.accuracy, dtype=np.float64),
                "elapsed": np.array(self.elapsed, dtype=np.float64),
                "val_iteration": np.array(self.val_iteration, dtype=np.int64),
                "val_mean": np.array(self.val_mean, dtype=np.float64),
                "val_ci95": np.array(self.val_ci, dtype=np.float64),
                **{EXTRA + name: np.array(column, dtype=np.float64) for name, column in self.extra.items()}}

    @classmethod
    def from_arrays(cls, arrays, iteration):
        log = cls()
        for name in ("loss", "accuracy", "elapsed"):
            setattr(log, name, np.asarray(arrays.get(name, []), dtype=np.float64)[:iteration].tolist())
        its = np.asarray(arrays.get("val_iteration", []), dtype=np.int64)
        keep = its <= iteration
        log.val_iteration = its[keep].tolist()
        log.val_mean = np.asarray(arrays.get("val_mean", []))[keep].tolist()
        log.val_ci = np.asarray(arrays.get("val_ci95", []))[keep].tolist()
        log.extra = {name[len(EXTRA):]: np.asarray(column, dtype=np.float64)[:iteration].tolist()
                     for name, column in arrays.items() if name.startswith(EXTRA)}
        return log

    def write_csv(self, path):
        val = dict(zip(self.val_iteration, self.val_mean))
        names = list(self.extra)
        rows = ([i, f"{loss:.6g}", "" if math.isnan(acc) else f"{acc:.4f}",
                 f"{val[i]:.4f}" if i in val else "", f"{t:.2f}",
                 *("" if math.isnan(self.extra[n][i - 1]) else f"{self.extra[n][i - 1]:.6g}" for n in names)]
                for i, (loss, acc, t) in enumerate(zip(self.loss, self.accuracy, self.elapsed), start=1))
        write_csv(path, ["iteration", "loss", "train_accuracy", "validation", "elapsed_s", *names], rows)


class Hook:
    """Something done around every iteration; override either method."""

    def before_step(self, training, iteration):
        pass

    def after_step(self, training, iteration, metrics):
        pass


class LinearDecay(Hook):
    """The outer learning rate annealed linearly to 0 over the run (Reptile's ε):
    lr at iteration i (from 1) = lr₀ · (1 − (i − 1)/N), lr₀ at the first, lr₀/N at the last."""

    def __init__(self, lr0, iterations):
        self.lr0, self.iterations = float(lr0), int(iterations)

    def before_step(self, training, iteration):
        training.learner.optimizer.lr = self.lr0 * (1.0 - (iteration - 1) / self.iterations)


class StepDecay(Hook):
    """The outer learning rate multiplied by ``factor`` every ``every`` iterations
    (Prototypical Networks halve it every 2000 episodes): lr₀ · factor^⌊(i − 1)/every⌋."""

    def __init__(self, lr0, every, factor):
        self.lr0, self.every, self.factor = float(lr0), int(every), float(factor)

    def before_step(self, training, iteration):
        training.learner.optimizer.lr = self.lr0 * self.factor ** ((iteration - 1) // self.every)


class CosineDecay(Hook):
    """The outer learning rate annealed along half a cosine (Loshchilov & Hutter 2017; MAML++):
    lr at iteration i (from 1) = lr_min + ½(lr₀ − lr_min)(1 + cos(π (i − 1)/N))."""

    def __init__(self, lr0, iterations, lr_min=0.0):
        self.lr0, self.iterations, self.lr_min = float(lr0), int(iterations), float(lr_min)

    def before_step(self, training, iteration):
        phase = math.pi * (iteration - 1) / self.iterations
        training.learner.optimizer.lr = self.lr_min + 0.5 * (self.lr0 - self.lr_min) * (1 + math.cos(phase))


class SetIteration(Hook):
    """Tells the learner the iteration (from 1) before each step, as ``learner.iteration``,
    for learners whose objective is annealed over the run (MAML++'s options)."""

    def before_step(self, training, iteration):
        training.learner.iteration = iteration


def show(mean, ci, percent=True):
    """A validation result as printed: a fraction as a percentage, or as it is (a return)."""
    return f"{100 * mean:.2f} ± {100 * ci:.2f}%" if percent else f"{mean:.2f} ± {ci:.2f}"


class Validation(Hook):
    """Every ``every`` iterations (0: only at the end) and at the last one, ``measure(learner)``
    returns (mean, ci95) of a validation metric; it is logged and printed (as a percentage
    of a fraction such as accuracy, or as it is with ``percent=False``, e.g. a return).

    ``keep_best``: when a measurement beats every earlier one of the run, strictly (higher,
    or lower with ``higher_is_better=False``; non-finite ones never count), the checkpoint of
    that iteration is written to ``best.npz`` in the run folder (``Training.save(BEST)``) and
    one line says so; ``checkpoint.npz`` follows at the end of that iteration, so the log a
    resume reads holds the measurement. The best so far is the best of the log's
    ``val_mean``, so a resumed run never replaces ``best.npz`` by a worse model, and a run
    that diverges later leaves it untouched. One ``Validation`` hook per run: the log's
    validation results are its own.
    """

    def __init__(self, measure, every, label="validation", percent=True, keep_best=False,
                 higher_is_better=True):
        self.measure, self.every, self.label, self.percent = measure, int(every), label, percent
        self.keep_best, self.higher_is_better = bool(keep_best), bool(higher_is_better)

    def show(self, mean, ci):
        return show(mean, ci, self.percent)

    def better(self, a, b):
        """``a`` strictly beats ``b`` (None: nothing measured yet); a non-finite ``a`` never does."""
        if not math.isfinite(a):
            return False
        return b is None or (a > b if self.higher_is_better else a < b)

    def best(self, log):
        """(iteration, mean, ci95) of the best validation result in ``log``, or None."""
        best = None
        for it, m, ci in zip(log.val_iteration, log.val_mean, log.val_ci):
            if self.better(m, None if best is None else best[1]):
                best = (int(it), float(m), float(ci))
        return best

    def after_step(self, training, iteration, metrics):
        if not (iteration == training.iterations or (self.every and iteration % self.every == 0)):
            return
        t0 = time.perf_counter()
        m, ci = self.measure(training.learner)
        m, ci = float(m), float(ci)
        log = training.log
        before = self.best(log)
        log.val_iteration.append(iteration)
        log.val_mean.append(m)
        log.val_ci.append(ci)
        training.say(f"  {self.label} at {iteration}: {self.show(m, ci)} ({time.perf_counter() - t0:.1f} s)")
        if self.keep_best and self.better(m, None if before is None else before[1]):
            path = training.save(BEST, best={"iteration": iteration, "mean": m, "ci95": ci,
                                             "label": self.label, "percent": self.percent,
                                             "higher_is_better": self.higher_is_better})
            training.checkpoint_due = True      # the log that names this best, for a resume
            training.say(f"  new best {self.label} at {iteration}: {self.show(m, ci)}, kept in {path}")


class Training:
    """One learner trained on one task stream into one ``RunFolder``.

    It writes ``checkpoint.npz`` and ``log.csv`` into the folder, and ``best.npz`` where a
    ``Validation(keep_best=True)`` hook keeps the best validated checkpoint.
    ``after_checkpoint(training, iteration)`` is called after each checkpoint (figures; tests
    use it to kill the process at a known point). ``resume_command`` is printed when the run
    is interrupted.
    """

    def __init__(self, learner, tasks, meta_batch, iterations, folder, config, label="train",
                 hooks=(), checkpoint_every=1000, fingerprint=None, say=print, progress_every=5.0,
                 resume_command=None, after_checkpoint=None):
        self.learner, self.tasks, self.meta_batch = learner, tasks, int(meta_batch)
        self.iterations, self.folder, self.config, self.label = int(iterations), folder, config, label
        self.hooks, self.checkpoint_every, self.fingerprint = list(hooks), int(checkpoint_every), fingerprint
        self.say = say if say is not None else (lambda *a: None)
        self.progress_every, self.resume_command = progress_every, resume_command
        self.after_checkpoint = after_checkpoint
        self.iteration, self.elapsed0, self.log = 0, 0.0, Log()
        self.saved_at = None
        self.checkpoint_due = False        # a hook asks for a checkpoint at the end of this iteration
        self._signal = None

    @property
    def path(self):
        return self.folder / CHECKPOINT

    # --- checkpoints --------------------------------------------------------------------
    def save(self, name=CHECKPOINT, **extra):
        """Write the checkpoint of the current iteration to ``name`` in the run folder (never
        with non-finite parameters); ``extra`` entries are added to its metadata. The run's
        own ``checkpoint.npz`` also writes ``log.csv`` and calls ``after_checkpoint``; another
        name (``best.npz``) is that one file. Returns its path."""
        state = self.learner.state_dict()
        bad = [k for k, a in state["params"].items() if not np.isfinite(a).all()]
        if bad:
            raise Diverged(f"{self.label}: parameters {bad} are not finite at iteration "
                           f"{self.iteration}; the checkpoint of iteration {self.saved_at} is kept")
        arrays, numbers = checkpoint.pack({**state})
        arrays.update(checkpoint.join("log", self.log.arrays()))
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "label": self.label,
                "config": self.config, "iteration": self.iteration, "iterations": self.iterations,
                "finished": self.iteration >= self.iterations, "learner": numbers,
                "tasks_state": self.tasks.get_state(), "elapsed_s": self.elapsed(),
                "data": self.fingerprint, "settings": numerical_settings(),
                "tinymeta_version": tinymeta.__version__, **extra}
        path = self.folder / name
        checkpoint.save(path, arrays, meta)
        if name != CHECKPOINT:
            return path
        self.log.write_csv(self.folder / "log.csv")
        self.saved_at = self.iteration
        self.checkpoint_due = False
        if self.after_checkpoint is not None:
            self.after_checkpoint(self, self.iteration)
        return path

    def restore(self):
        """Continue from the folder's checkpoint, if it has one; True when it did."""
        if not self.path.exists():
            return False
        arrays, meta = read(self.path)
        if meta.get("data") and self.fingerprint and meta["data"] != self.fingerprint:
            raise TrainingError(f"{self.path}: the data changed since this run was trained "
                                f"(fingerprint {meta['data'][:12]}…, now {self.fingerprint[:12]}…); "
                                f"resume it on the same data, or start a new --out")
        now, then = numerical_settings(), meta.get("settings") or {}
        changed = [f"{k} {then[k]!r} -> {now[k]!r}" for k in now if k in then and then[k] != now[k]]
        if changed:
            self.say("warning: the checkpoint was written with other numerical settings ("
                     + "; ".join(changed) + "); the run continues correctly but not bit-identically "
                     "to an uninterrupted one")
        state = checkpoint.unpack({k: v for k, v in arrays.items() if not k.startswith("log/")},
                                  meta["learner"])
        self.learner.load_state_dict(state)
        self.tasks.set_state(meta["tasks_state"])
        self.iteration = self.saved_at = int(meta["iteration"])
        self.elapsed0 = float(meta.get("elapsed_s", 0.0))
        self.log = Log.from_arrays(checkpoint.split(arrays, "log"), self.iteration)
        if self.iteration > self.iterations:
            raise TrainingError(f"{self.path} is at iteration {self.iteration}, past --iterations "
                                f"{self.iterations}")
        return True

    # --- the loop -----------------------------------------------------------------------
    def elapsed(self):
        return self.elapsed0 + (time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0)

    def run(self):
        """Train up to ``iterations``; returns a summary dict. Raises Diverged or Interrupted."""
        start = self.iteration
        self._t0 = time.perf_counter()
        progress = Progress(self.label, self.iterations, start, self.progress_every, say=self.say)
        handlers = self._catch_signals()
        try:
            for it in range(start + 1, self.iterations + 1):
                self.iteration = it - 1                     # until this step has succeeded
                for hook in self.hooks:
                    hook.before_step(self, it)
                batch = self.tasks.sample_batch(self.meta_batch)
                try:
                    metrics = self.learner.step(batch)
                except NonFiniteError as e:
                    raise Diverged(f"{self.label}: {e} at iteration {it}, so training stopped "
                                   f"(the checkpoint of iteration {self.saved_at} is kept); "
                                   f"try a smaller learning rate") from None
                self.iteration = it
                self.log.append(metrics, self.elapsed())
                for hook in self.hooks:
                    hook.after_step(self, it, metrics)
                last = it == self.iterations
                if last or self.checkpoint_due or (self.checkpoint_every and it % self.checkpoint_every == 0):
                    self.save()
                progress.update(it, self.log, force=last)
                if self._signal is not None:
                    self._stop()
        finally:
            self._restore_signals(handlers)
        session = time.perf_counter() - self._t0
        return {"iterations": self.iterations, "resumed_from": start, "seconds": session,
                "train_seconds_total": self.elapsed()}

    def run_to_end(self):
        """``run()`` with its report: says when the checkpoint is already finished (and trains
        nothing), else trains and says how long it took; either line says where the best
        validated checkpoint is, where one is kept. Returns {"config", ...summary, "best"}."""
        if self.iteration >= self.iterations:
            self.say(f"checkpoint already at iteration {self.iteration}; nothing to train" + self._best_note())
            return {"config": self.config, "iteration": self.iteration, "best": self.best()}
        summary = self.run()
        done = self.iterations - summary["resumed_from"]
        self.say(f"trained {done} iterations in {summary['seconds']:.1f} s "
                 f"({summary['seconds'] / done:.3f} s/iteration with validation and checkpoints); "
                 f"total training time {summary['train_seconds_total']:.1f} s; wrote {self.path}"
                 + self._best_note())
        return {"config": self.config, **summary, "best": self.best()}

    def _keeper(self):
        return next((h for h in self.hooks if isinstance(h, Validation) and h.keep_best), None)

    def best(self):
        """{"iteration", "mean", "ci95", "path"} of the checkpoint kept as the best validated
        one (``best.npz``), or None when no hook keeps one or nothing was measured yet."""
        keeper = self._keeper()
        best = keeper.best(self.log) if keeper else None
        if best is None:
            return None
        return {"iteration": best[0], "mean": best[1], "ci95": best[2], "path": str(self.folder / BEST)}

    def _best_note(self):
        best = self.best()
        if best is None:
            return ""
        shown = self._keeper().show(best["mean"], best["ci95"])
        return f"; best {self._keeper().label} {shown} at iteration {best['iteration']}, in {best['path']}"

    def _stop(self):
        if self.saved_at != self.iteration:
            self.save()
        name = signal.Signals(self._signal).name
        how = f"; resume with: {self.resume_command}" if self.resume_command else ""
        raise Interrupted(f"{self.label}: stopped by {name} at iteration {self.iteration}; "
                          f"checkpoint saved to {self.path}{how}", self._signal)

    def _catch_signals(self):
        """Ctrl-C and SIGTERM end the run after the current iteration, with a checkpoint; a
        second Ctrl-C stops at once."""
        def handler(signum, frame):
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._signal = signum
            self.say(f"{signal.Signals(signum).name}: finishing iteration {self.iteration + 1}, "
                     "then saving a checkpoint (Ctrl-C again to stop at once)")
        saved = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                saved[sig] = signal.signal(sig, handler)
            except ValueError:                              # not the main thread
                pass
        return saved

    @staticmethod
    def _restore_signals(saved):
        for sig, h in saved.items():
            signal.signal(sig, h)


def run_config(config, args, folder, say=None):
    """(cfg, resuming) of a training in ``folder``: with ``--resume`` and a checkpoint there,
    the checkpoint's configuration under the resume rules (``Config.resumed``); otherwise the
    configuration resolved from defaults, recipe and command line (``Config.resolve``), with
    one line when ``--resume`` found nothing to resume."""
    path = folder / CHECKPOINT
    if args.resume and path.exists():
        return config.resumed(read(path)[1]["config"], args), True
    if args.resume and say:
        say(f"--resume: no checkpoint at {path}; starting from scratch")
    return config.resolve(args), False


def read(path):
    """(arrays, meta) of a run checkpoint, its format checked: CheckpointError otherwise."""
    arrays, meta = checkpoint.load(path)
    fmt, version = checkpoint.require(meta, path, "format", "format_version")
    if fmt != FORMAT or version != FORMAT_VERSION:
        raise checkpoint.CheckpointError(f"checkpoint {path}: format {fmt!r} version {version}, "
                                         f"this tinymeta reads {FORMAT!r} version {FORMAT_VERSION}")
    checkpoint.require(meta, path, "config", "iteration", "learner", "tasks_state")
    if not isinstance(meta["config"], dict) or not isinstance(meta["learner"], dict):
        raise checkpoint.CheckpointError(f"checkpoint {path}: its 'config' or 'learner' record is "
                                         "not a JSON object; the file is damaged")
    return arrays, meta


def resolve(path):
    """The checkpoint file of ``path``: the file itself, or for a run folder its ``best.npz``
    (the best validated model, the papers' protocol) where it has one, else its
    ``checkpoint.npz`` (the last iteration)."""
    path = Path(path)
    if path.is_dir():
        return path / BEST if (path / BEST).is_file() else path / CHECKPOINT
    return path


def describe(path, meta):
    """One phrase naming a checkpoint, its iteration and, for a ``best.npz``, its validation."""
    text = f"checkpoint {path} at iteration {meta.get('iteration')}"
    best = meta.get("best")
    if isinstance(best, dict) and "mean" in best:
        shown = show(best["mean"], best.get("ci95", float("nan")), best.get("percent", True))
        text += f" (the best {best.get('label', 'validation')}: {shown})"
    return text


def restore_learner(path, config, build):
    """(cfg, meta, learner) of a run checkpoint, for evaluation: the configuration completed
    by ``config`` (a ``Config``), the learner made by ``build(cfg)`` and loaded with the saved
    state. Refuses, in one sentence, a checkpoint that does not fit its own configuration or
    holds non-finite parameters (an evaluation of NaN weights would print a meaningless number).
    ``path`` may be a run folder (``resolve``)."""
    path = resolve(path)
    arrays, meta = read(path)
    cfg = config.complete(meta["config"])
    learner = build(cfg)
    try:
        learner.load_state_dict(checkpoint.unpack({k: v for k, v in arrays.items()
                                                   if not k.startswith("log/")}, meta["learner"]))
    except (ValueError, KeyError) as e:
        raise TrainingError(f"checkpoint {path}: does not fit its own configuration ({e})") from None
    bad = [k for k, p in learner.meta_parameters().items()
           if not np.isfinite(backend.to_numpy(p.data)).all()]
    if bad:
        raise TrainingError(f"checkpoint {path}: parameters {bad} are not finite; it cannot be evaluated")
    return cfg, meta, learner
