"""The run layer (tinymeta.training, tinymeta.files): folders that are never overwritten,
atomic files, the resumable loop (exact resume, Ctrl-C/SIGTERM, divergence), the best
validated checkpoint (best.npz), malformed checkpoints, the one CI convention,
configurations and the learner contract.

Everything runs on a tiny MLP on sinusoids, in-process, in a second or two.
"""
import json
import math
import os
import signal

import numpy as np
import pytest

from autograd import Tensor, no_grad
from autograd import functional as F
from tinymeta import checkpoint
from tinymeta.algorithms import ANIL, MAML, JointTraining, MetaSGD, NonFiniteError, Reptile
from tinymeta.files import RunFolder, RunFolderError, atomic_write, stale_temporaries, write_json
from tinymeta.models import MLP
from tinymeta.optim import Adam
from tinymeta.tasks import SinusoidSampler, SinusoidTasks
from tinymeta.training import (BEST, CHECKPOINT, Diverged, Hook, Interrupted, Log, Training, TrainingError,
                               Validation, mean_ci, meta_test, read_checkpoint, resolve_checkpoint, summarize)
from tinymeta.training.cli import ArgumentParser, run_commands
from tinymeta.training.config import Config, ConfigError, Option, non_negative_int, positive_float
from helpers import host


def learner_and_tasks(lr=1e-3, seed=0, learner=MAML):
    model = MLP([1, 8, 1])
    params = model.init(np.random.default_rng(seed), np.float64)
    kw = {} if learner is Reptile else {"optimizer": lambda p: Adam(p, lr=lr)}
    return (learner(model, params, F.mse_loss, inner_lr=0.01, **kw),
            SinusoidSampler(SinusoidTasks(), 5, 5, rng=seed + 1, dtype=np.float64))


def training(folder, iterations=6, lr=1e-3, **kw):
    learner, tasks = learner_and_tasks(lr)
    kw.setdefault("checkpoint_every", 2)
    return Training(learner, tasks, 4, iterations, folder, {"lr": lr}, label="t", say=None, **kw)


def params_of(t):
    return {k: v.data.copy() for k, v in t.learner.params.items()}


# ----------------------------------------------------------------------------- folders and files
def test_a_folder_holding_a_run_is_not_reopened_without_resume(tmp_path):
    with RunFolder(tmp_path / "r") as folder:
        training(folder, iterations=2).run()
    with pytest.raises(RunFolderError, match="already holds a run.*pass --resume"):
        RunFolder(tmp_path / "r").open()
    with RunFolder(tmp_path / "r", resume=True) as folder:
        assert (folder / CHECKPOINT).exists()


def test_an_unwritable_folder_fails_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="cannot write to the output folder"):
        RunFolder(tmp_path / "file" / "run").open()


def test_two_runs_cannot_share_a_folder(tmp_path):
    with RunFolder(tmp_path / "r"):
        with pytest.raises(RunFolderError, match="is in use by process"):
            RunFolder(tmp_path / "r").open()
    RunFolder(tmp_path / "r").open().close()                # released when the first one closed


def test_killed_writes_leave_the_old_file_and_temporaries_are_cleaned(tmp_path):
    target = tmp_path / "r" / "results.json"
    write_json(target, {"a": 1})

    def dies_halfway(f):
        f.write(b'{"a": 2')
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_write(target, dies_halfway)
    assert json.loads(target.read_text()) == {"a": 1}        # the old file, whole
    assert not stale_temporaries(tmp_path / "r")             # the failed write cleaned up after itself
    stale = tmp_path / "r" / ".checkpoint.npz.abc123.tmp"    # as a SIGKILL during a write leaves it
    stale.write_bytes(b"\0" * 1000)
    messages = []
    with RunFolder(tmp_path / "r", say=messages.append):
        assert not stale.exists()
    assert "removed 1 temporary file" in messages[0]


# ----------------------------------------------------------------------------- the loop
def test_resume_after_a_kill_is_bit_identical(tmp_path):
    with RunFolder(tmp_path / "whole") as folder:
        whole = training(folder)
        whole.run()

    class Killed(Exception):
        pass

    def kill_at_4(t, iteration):
        if iteration == 4:
            raise Killed
    with RunFolder(tmp_path / "killed") as folder:
        with pytest.raises(Killed):
            training(folder, after_checkpoint=kill_at_4).run()
    with RunFolder(tmp_path / "killed", resume=True) as folder:
        again = training(folder)
        assert again.restore() and again.iteration == 4
        again.run()
    for k, v in params_of(whole).items():
        assert np.array_equal(v, params_of(again)[k]), k
    assert whole.log.loss == again.log.loss
    a, _ = read_checkpoint(tmp_path / "whole" / CHECKPOINT)
    b, _ = read_checkpoint(tmp_path / "killed" / CHECKPOINT)
    for k in a:
        if k != "log/elapsed":
            assert np.array_equal(a[k], b[k], equal_nan=True), k


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    class Terminate(Hook):
        def after_step(self, t, iteration, metrics):
            if iteration == 3:
                os.kill(os.getpid(), signal.SIGTERM)
    previous = signal.getsignal(signal.SIGTERM)
    with RunFolder(tmp_path / "r") as folder:
        t = training(folder, checkpoint_every=100, hooks=[Terminate()], resume_command="again --resume")
        with pytest.raises(Interrupted, match="stopped by SIGTERM at iteration 3.*resume with: again --resume") as e:
            t.run()
    assert e.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous         # handlers restored
    _, meta = read_checkpoint(tmp_path / "r" / CHECKPOINT)
    assert meta["iteration"] == 3 and not meta["finished"]


def test_divergence_stops_with_one_sentence_and_keeps_the_last_good_checkpoint(tmp_path):
    class Explode(Hook):                                     # a learning rate far too large
        def before_step(self, t, iteration):
            if iteration == 5:
                t.learner.optimizer.lr = 1e300
    with RunFolder(tmp_path / "r") as folder:
        t = training(folder, iterations=10, hooks=[Explode()])
        with pytest.raises(Diverged, match=r"at iteration (5|6|7), .*checkpoint of iteration (4|6) is kept.*smaller learning rate"):
            t.run()
    arrays, meta = read_checkpoint(tmp_path / "r" / CHECKPOINT)
    params = checkpoint.split(arrays, "params")
    assert all(np.isfinite(v).all() for v in params.values())


def test_a_non_finite_step_leaves_the_parameters_unchanged():
    learner, tasks = learner_and_tasks()
    before = {k: v.data.copy() for k, v in learner.params.items()}
    batch = tasks.sample_batch(3)
    batch.query_y[0, 0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="not finite"):
        learner.step(batch)
    assert all(np.array_equal(before[k], v.data) for k, v in learner.params.items())


def test_resume_on_changed_data_is_refused(tmp_path):
    with RunFolder(tmp_path / "r") as folder:
        training(folder, iterations=2, fingerprint="a" * 64).run()
    with RunFolder(tmp_path / "r", resume=True) as folder:
        with pytest.raises(TrainingError, match="the data changed"):
            training(folder, iterations=4, fingerprint="b" * 64).restore()


@pytest.mark.parametrize("damage, message", [
    (lambda a, m: (a, {"format": "tinymeta-run"}), "lacks 'format_version'"),
    (lambda a, m: (a, {**m, "format": "other"}), "format 'other'"),
    (lambda a, m: (a, {k: v for k, v in m.items() if k != "tasks_state"}), "lacks 'tasks_state'"),
    (lambda a, m: (a, {**m, "config": [1, 2]}), "not a JSON object"),
])
def test_malformed_checkpoints_are_named_in_one_sentence(tmp_path, damage, message):
    with RunFolder(tmp_path / "r") as folder:
        training(folder, iterations=2).run()
    arrays, meta = checkpoint.load(tmp_path / "r" / CHECKPOINT)
    bad = tmp_path / "bad.npz"
    checkpoint.save(bad, *damage(arrays, meta))
    with pytest.raises(checkpoint.CheckpointError, match=message):
        read_checkpoint(bad)


def test_checkpoint_metadata_that_is_not_json_is_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, __meta__=np.array("{not json"))
    with pytest.raises(checkpoint.CheckpointError, match="not valid JSON"):
        checkpoint.load(bad)


# ----------------------------------------------------------------------------- the best checkpoint
def scripted(values):
    """A validation ``measure`` that returns ``values`` one after another (ci95 0.01)."""
    values = iter(values)
    return lambda learner: (next(values), 0.01)


class Watch(Hook):
    """After each iteration: the parameters, and the best.npz the folder holds then
    (meta["best"]["iteration"], its parameters, its bytes), or None."""

    def __init__(self):
        self.params, self.best = {}, {}

    def after_step(self, t, iteration, metrics):
        self.params[iteration] = {k: np.array(host(v)) for k, v in t.learner.params.items()}
        path = t.folder / BEST
        if not path.exists():
            self.best[iteration] = None
            return
        arrays, meta = read_checkpoint(path)
        self.best[iteration] = (meta["best"]["iteration"], checkpoint.split(arrays, "params"), path.read_bytes())


def validated(folder, values, iterations=8, keep_best=True, higher_is_better=True, hooks=(), **kw):
    """A training validated every 2 iterations by ``scripted(values)``, watched by ``Watch``."""
    watch = Watch()
    v = Validation(scripted(values), 2, keep_best=keep_best, higher_is_better=higher_is_better)
    messages = []
    kw.setdefault("checkpoint_every", 100)
    t = training(folder, iterations=iterations, hooks=[*hooks, v, watch], **kw)
    t.say = messages.append
    return t, watch, messages


@pytest.mark.parametrize("values, higher, kept", [
    ([0.5, 0.7, 0.6, 0.8], True, [2, 4, 4, 8]),          # kept when better, not when worse
    ([0.5, 0.5, 0.4, 0.5], True, [2, 2, 2, 2]),          # ties and worse ones never replace it
    ([0.5, 0.3, 0.4, 0.2], False, [2, 4, 4, 8]),         # lower is better (a loss)
    ([float("nan"), 0.3, float("inf"), 0.2], False, [None, 4, 4, 8]),   # non-finite never counts
], ids=["higher", "ties", "lower", "non-finite"])
def test_best_checkpoint_is_written_exactly_when_validation_improves(tmp_path, values, higher, kept):
    with RunFolder(tmp_path / "r") as folder:
        t, watch, messages = validated(folder, values, higher_is_better=higher)
        summary = t.run_to_end()
    assert [watch.best[i] and watch.best[i][0] for i in (2, 4, 6, 8)] == kept
    assert [watch.best[i] and watch.best[i][0] for i in (3, 5, 7)] == kept[:3]      # nothing in between
    for i, (at, params, _) in ((i, watch.best[i]) for i in (2, 4, 6, 8) if watch.best[i]):
        for k, v in params.items():                     # the parameters of the iteration it names
            assert np.array_equal(v, watch.params[at][k]), (i, k)
    assert sum("new best validation" in m for m in messages) == len(set(kept) - {None})
    best_at = kept[-1]
    arrays, meta = read_checkpoint(tmp_path / "r" / BEST)
    assert meta["iteration"] == best_at and meta["best"]["iteration"] == best_at
    assert meta["best"]["mean"] == values[best_at // 2 - 1] and meta["best"]["ci95"] == 0.01
    assert meta["best"]["higher_is_better"] is higher
    assert summary["best"]["iteration"] == best_at and summary["best"]["mean"] == values[best_at // 2 - 1]
    assert f"at iteration {best_at}, in {tmp_path / 'r' / BEST}" in messages[-1]     # the final report line
    _, last = read_checkpoint(tmp_path / "r" / CHECKPOINT)
    assert "best" not in last and last["iteration"] == 8


def test_best_checkpoint_resumes_from_a_copy_and_a_run_folder_evaluates_it(tmp_path):
    with RunFolder(tmp_path / "r") as folder:
        t, watch, _ = validated(folder, [0.5, 0.7, 0.6, 0.6])
        t.run()
    assert resolve_checkpoint(tmp_path / "r") == tmp_path / "r" / BEST
    assert resolve_checkpoint(tmp_path / "r" / CHECKPOINT) == tmp_path / "r" / CHECKPOINT
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / CHECKPOINT).write_bytes((tmp_path / "r" / BEST).read_bytes())
    with RunFolder(tmp_path / "copy", resume=True) as folder:
        again = training(folder, iterations=8)
        assert again.restore() and again.iteration == 4 and again.log.val_mean == [0.5, 0.7]
        for k, v in params_of(again).items():
            assert np.array_equal(host(v), watch.params[4][k]), k
        again.run()


@pytest.mark.parametrize("stop", ["killed", "sigterm"])
def test_a_resumed_run_never_replaces_the_best_by_a_worse_one(tmp_path, stop):
    """Stopped at iteration 5, after the 0.7 measurement of iteration 4 (killed: no checkpoint
    since the one of iteration 3; SIGTERM: a checkpoint at 5), resumed, then measuring 0.6
    and 0.65: the best stays the 0.7 one of iteration 4."""
    class Killed(Exception):
        pass

    class Stop(Hook):
        def before_step(self, t, iteration):
            if iteration == 5:
                if stop == "killed":
                    raise Killed
                os.kill(os.getpid(), signal.SIGTERM)
    with RunFolder(tmp_path / "r") as folder:
        t, watch, _ = validated(folder, [0.5, 0.7], hooks=[Stop()], checkpoint_every=3)
        with pytest.raises(Killed if stop == "killed" else Interrupted):
            t.run()
    kept = (tmp_path / "r" / BEST).read_bytes()
    assert watch.best[4][0] == 4
    with RunFolder(tmp_path / "r", resume=True) as folder:
        again, watch2, messages = validated(folder, [0.6, 0.65], checkpoint_every=3)
        assert again.restore() and again.iteration == (4 if stop == "killed" else 5)
        summary = again.run_to_end()
    assert (tmp_path / "r" / BEST).read_bytes() == kept
    assert not any("new best" in m for m in messages)
    assert summary["best"]["iteration"] == 4 and summary["best"]["mean"] == 0.7
    arrays, meta = read_checkpoint(tmp_path / "r" / BEST)
    for k, v in checkpoint.split(arrays, "params").items():
        assert np.array_equal(v, watch.params[4][k]), k


def test_no_best_checkpoint_without_keep_best(tmp_path):
    with RunFolder(tmp_path / "r") as folder:
        t, watch, messages = validated(folder, [0.5, 0.7, 0.6, 0.8], keep_best=False)
        summary = t.run_to_end()
    assert not (tmp_path / "r" / BEST).exists() and summary["best"] is None
    assert not any("new best" in m or BEST in m for m in messages)
    _, meta = read_checkpoint(tmp_path / "r" / CHECKPOINT)
    assert list(meta["config"]) == ["lr"] and meta["iteration"] == 8


def test_divergence_after_the_best_leaves_it_intact(tmp_path):
    class Explode(Hook):                                 # a learning rate far too large
        def before_step(self, t, iteration):
            if iteration == 5:
                t.learner.optimizer.lr = 1e300
    with RunFolder(tmp_path / "r") as folder:
        t, watch, _ = validated(folder, [0.5, 0.7, 0.9, 0.95], iterations=10, hooks=[Explode()])
        with pytest.raises(Diverged):
            t.run()
    assert watch.best[4][0] == 4
    assert (tmp_path / "r" / BEST).read_bytes() == watch.best[4][2]
    arrays, _ = read_checkpoint(tmp_path / "r" / BEST)
    assert all(np.isfinite(v).all() for v in checkpoint.split(arrays, "params").values())



# ----------------------------------------------------------------------------- statistics
def test_mean_ci_is_the_documented_convention():
    v = np.array([0.2, 0.4, 0.9, 1.0])
    m, ci = mean_ci(v)
    assert m == pytest.approx(0.625)
    assert ci == pytest.approx(1.96 * np.std(v, ddof=1) / 2.0)


def test_summarize_counts_and_excludes_diverged_tasks():
    per_step = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, np.inf, 1.5, np.nan]])
    s = summarize(per_step)
    assert s["diverged"] == 2 and s["tasks"] == 2
    assert s["mean"] == pytest.approx([2.0, 1.0])
    assert all(math.isfinite(c) for c in s["ci95"])


def test_meta_test_scores_every_step_of_every_task():
    learner, _ = learner_and_tasks()
    tasks = SinusoidSampler(SinusoidTasks(), 5, 10, rng=7, dtype=np.float64)
    r = meta_test(learner, tasks, 7, 3, chunk=3)
    assert r["loss"].shape == (4, 7) and "accuracy" not in r
    assert not np.allclose(r["loss"][3], r["loss"][0])       # the steps moved the fast weights
    first = SinusoidSampler(SinusoidTasks(), 5, 10, rng=7, dtype=np.float64).sample_batch(3)
    with no_grad():                                          # step 0 is the loss at θ itself
        at_theta = [float(F.mse_loss(learner.model(learner.params, Tensor(first.query_x[t])),
                                     Tensor(first.query_y[t])).data) for t in range(3)]
    np.testing.assert_allclose(r["loss"][0, :3], at_theta, rtol=1e-12)


# ----------------------------------------------------------------------------- configurations
CONF = Config({"seed": Option(non_negative_int, "seed"), "lr": Option(positive_float, "lr"),
               "iterations": Option(non_negative_int, "length", matters=False)},
              defaults=lambda chosen: {"seed": 0, "lr": 0.1 if chosen.get("seed", 0) else 0.2,
                                       "iterations": 10})


class Args:
    def __init__(self, **kw):
        self.config = kw.pop("config", None)
        for k in CONF.options:
            setattr(self, k, kw.get(k))


def test_defaults_recipe_and_command_line_in_that_order(tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"comment": "a recipe", "seed": 3, "lr": 0.5}))
    assert CONF.resolve(Args()) == {"seed": 0, "lr": 0.2, "iterations": 10}
    assert CONF.resolve(Args(seed=1)) == {"seed": 1, "lr": 0.1, "iterations": 10}   # defaults follow choices
    assert CONF.resolve(Args(config=recipe)) == {"seed": 3, "lr": 0.5, "iterations": 10}
    assert CONF.resolve(Args(config=recipe, lr=0.7))["lr"] == 0.7


@pytest.mark.parametrize("content, message", [
    ('{"speed": 1}', "unknown option 'speed'"),
    ('{"seed": -5}', "'seed': must be >= 0"),
    ('{"lr": "fast"}', "'lr': expected a number"),
    ("[1]", "expected a JSON object"),
    ("{", "not valid JSON"),
])
def test_bad_recipes_are_named(tmp_path, content, message):
    recipe = tmp_path / "r.json"
    recipe.write_text(content)
    with pytest.raises(ConfigError, match=message):
        CONF.resolve(Args(config=recipe))


def test_commands_dispatch_on_the_first_word_and_default_to_the_first_command(capsys):
    calls = []
    commands = {"train": lambda a: calls.append(("train", a)) or 0,
                "evaluate": lambda a: calls.append(("evaluate", a)) or 0}
    run_commands(["--out", "x"], commands, setup=lambda: calls.append(("setup", None)))
    run_commands(["train", "--out", "y"], commands)
    run_commands(["evaluate", "ckpt.npz"], commands)
    assert calls == [("setup", None), ("train", ["--out", "x"]), ("train", ["--out", "y"]),
                     ("evaluate", ["ckpt.npz"])]
    with pytest.raises(SystemExit) as stop:          # a user error inside a command: one line, exit 2
        run_commands(["evaluate"], {"train": None, "evaluate": lambda a: ArgumentParser().error("no checkpoint")})
    assert stop.value.code == 2 and capsys.readouterr().err == "error: no checkpoint (see --help)\n"


def test_resume_refuses_options_that_change_the_training():
    saved = {"seed": 0, "lr": 0.2, "iterations": 10}
    assert CONF.resumed(saved, Args(iterations=20))["iterations"] == 20
    with pytest.raises(ConfigError, match="--lr: checkpoint 0.2, now 0.3"):
        CONF.resumed(saved, Args(lr=0.3))


# ----------------------------------------------------------------------------- the learner contract
LEARNERS = [MAML, ANIL, MetaSGD, Reptile, JointTraining]


@pytest.mark.parametrize("cls", LEARNERS, ids=lambda c: c.__name__)
def test_every_learner_honours_the_contract(cls):
    learner, tasks = learner_and_tasks(learner=cls)
    batch = tasks.sample_batch(3)
    loss, grads = learner.meta_gradients(batch)
    assert set(grads) == set(learner.meta_parameters())
    before = {k: v.data.copy() for k, v in learner.meta_parameters().items()}
    metrics = learner.step(batch)
    assert set(metrics) == {"loss"} and math.isfinite(metrics["loss"])
    assert any(not np.array_equal(before[k], v.data) for k, v in learner.meta_parameters().items())
    ev = learner.evaluate(batch, 2)
    assert ev["loss"].shape == (3, 3)
    fast = learner.adapt(batch, 2)
    assert set(fast) >= set(learner.params)
    state = learner.state_dict()
    twin, _ = learner_and_tasks(learner=cls, seed=5)
    twin.load_state_dict(state)
    for k, v in learner.meta_parameters().items():
        assert np.array_equal(v.data, twin.meta_parameters()[k].data), k
    m1, m2 = learner.step(batch), twin.step(batch)
    assert m1 == m2


def test_reptile_with_no_inner_steps_is_refused():
    with pytest.raises(ValueError, match="inner_steps must be >= 1"):
        learner_and_tasks(learner=lambda *a, **k: Reptile(*a, inner_steps=0, **k))


def test_log_keeps_other_step_metrics_as_columns(tmp_path):
    """Numbers a step returns beyond loss/accuracy become columns, NaN where a step did not
    give one (a column that starts late is padded); arrays, not scalars, are not logged; the
    columns survive a checkpoint round trip cut at the checkpoint's iteration."""
    log = Log()
    log.append({"loss": 1.0}, 0.1)
    log.append({"loss": 0.5, "kl": 0.008, "accepted": 1.0, "by_step": np.ones(3)}, 0.2)
    log.append({"loss": 0.25, "kl": 0.02, "accepted": 0.0}, 0.3)
    log.append({"loss": 0.2}, 0.4)
    assert set(log.extra) == {"kl", "accepted"}
    np.testing.assert_array_equal(log.extra["kl"], [np.nan, 0.008, 0.02, np.nan])
    np.testing.assert_array_equal(log.extra["accepted"], [np.nan, 1.0, 0.0, np.nan])
    back = Log.from_arrays(log.arrays(), iteration=3)
    assert back.loss == [1.0, 0.5, 0.25]
    np.testing.assert_array_equal(back.extra["kl"], [np.nan, 0.008, 0.02])
    log.write_csv(tmp_path / "log.csv")
    rows = [r.split(",") for r in (tmp_path / "log.csv").read_text().splitlines()]
    assert rows[0] == ["iteration", "loss", "train_accuracy", "validation", "elapsed_s", "kl", "accepted"]
    assert rows[1][5:] == ["", ""] and rows[3][5:] == ["0.02", "0"]


def test_log_of_a_checkpoint_without_other_metrics_reads_back():
    """Checkpoints written before the log kept other metrics have no extra_ arrays."""
    old = {"loss": np.array([1.0, 0.5]), "accuracy": np.array([0.2, 0.4]), "elapsed": np.array([1.0, 2.0]),
           "val_iteration": np.array([2]), "val_mean": np.array([0.5]), "val_ci95": np.array([0.1])}
    log = Log.from_arrays(old, iteration=2)
    assert log.extra == {} and log.loss == [1.0, 0.5]
    log.append({"loss": 0.3, "kl": 0.01}, 3.0)
    np.testing.assert_array_equal(log.extra["kl"], [np.nan, np.nan, 0.01])
