"""Tests for experiments/sinusoid.py on the run layer: a tiny end-to-end run, what a second,
concurrent, unwritable, interrupted, killed or diverging run does, and bad options.

``sinusoid.main(argv, after_checkpoint=f)`` runs in-process (``f`` raising simulates a kill
right after a checkpoint); ``cli`` wraps it in ``run_main`` as ``python -m`` does, so a user
error is an exit status and one ``error:`` line.
"""
import json
import math
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from experiments import configs, sinusoid
from tinymeta.training import RunFolder, read_checkpoint, run_main

REPO = Path(__file__).resolve().parents[1]
ALL = list(sinusoid.METHODS)
TINY = ["--eval-tasks", "8", "--quiet"]


def cli(*argv, hook=None):
    return run_main(partial(sinusoid.main, after_checkpoint=hook), [str(a) for a in argv])


def exit_status(capsys, *argv):
    """(exit status, stderr) of a run that must fail."""
    with pytest.raises(SystemExit) as e:
        cli(*argv)
    return e.value.code, capsys.readouterr().err


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def checkpoint(out, method):
    return read_checkpoint(Path(out) / method / "checkpoint.npz")


def assert_same_training(a, b, methods):
    """Parameters, optimizer state, losses and task stream bit for bit (not the timings)."""
    for method in methods:
        (arrays_a, meta_a), (arrays_b, meta_b) = checkpoint(a, method), checkpoint(b, method)
        assert sorted(arrays_a) == sorted(arrays_b)
        for k in arrays_a:
            if k != "log/elapsed":
                assert arrays_a[k].dtype == arrays_b[k].dtype, (method, k)
                assert np.array_equal(arrays_a[k], arrays_b[k], equal_nan=True), (method, k)
        for k in ("iteration", "learner", "tasks_state", "finished"):
            assert meta_a[k] == meta_b[k], (method, k)


class Recorder:
    """after_checkpoint hook: records (method, iteration); raises at ``kill_at``."""

    def __init__(self, kill_at=None):
        self.calls, self.kill_at = [], kill_at

    def __call__(self, training, iteration):
        self.calls.append((training.label, iteration))
        if (training.label, iteration) == self.kill_at:
            raise SimulatedKill


class SimulatedKill(Exception):
    pass


# --- a whole run ----------------------------------------------------------------------------

def test_tiny_run_writes_config_checkpoints_results_and_figures(tmp_path):
    doc = cli("--iterations", 30, "--checkpoint-every", 10, "--eval-tasks", 20, "--quiet",
              "--out", tmp_path)
    for name in ("figure2.png", "figure3.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(doc))
    assert json.loads((tmp_path / "config.json").read_text()) == saved["config"]
    assert saved["config"]["iterations"] == 30 and saved["config"]["eval_tasks"] == 20
    assert "ddof=1" in saved["evaluation"]["ci"]
    assert set(saved["methods"]) == set(ALL)
    for method, res in saved["methods"].items():
        assert res["iterations"] == 30 and res["train_wall_time_s"] >= 0
        for k in ("K5", "K10"):
            s = res["mse"][k]
            assert len(s["mean"]) == len(s["ci95"]) == 11
            assert s["tasks"] == 20 and s["diverged"] == 0
            assert all(math.isfinite(v) and v >= 0 for v in s["mean"] + s["ci95"]), (method, k)
        if method == "oracle":          # never adapted: a flat line
            assert len(set(res["mse"]["K10"]["mean"])) == 1 and res["eval_lr"] == 0.0
        else:                           # step 0 is the same network for K = 5 and K = 10
            assert res["mse"]["K5"]["mean"][0] == res["mse"]["K10"]["mean"][0]
            assert res["mse"]["K10"]["mean"][1] != res["mse"]["K10"]["mean"][0]
        arrays, meta = checkpoint(tmp_path, method)
        assert meta["finished"] and meta["iteration"] == 30 and len(arrays["log/loss"]) == 30
        assert len((tmp_path / method / "log.csv").read_text().splitlines()) == 31


def test_methods_share_initial_weights_and_tasks():
    cfg = sinusoid.CONFIG.resolve(sinusoid.parse_args(["--seed", "3"]))
    (maml, maml_tasks), (joint, joint_tasks) = sinusoid.build("maml", cfg), sinusoid.build("pretrained", cfg)
    assert all(np.array_equal(maml.params[k].data, joint.params[k].data) for k in maml.params)
    assert np.array_equal(maml_tasks.sample_batch(2).support_x, joint_tasks.sample_batch(2).support_x)
    other, _ = sinusoid.build("maml", {**cfg, "seed": 4})
    assert not np.array_equal(maml.params["w0"].data, other.params["w0"].data)
    oracle, oracle_tasks = sinusoid.build("oracle", cfg)
    assert oracle.params["w0"].shape == (40, 3) and oracle_tasks.sample_batch(2).query_x.shape[-1] == 3


def test_the_paper_recipe_is_the_default_and_the_command_line_wins():
    default = sinusoid.CONFIG.resolve(sinusoid.parse_args([]))
    recipe = str(configs.path(sinusoid.RECIPE))
    assert sinusoid.CONFIG.resolve(sinusoid.parse_args(["--config", recipe])) == default
    assert default["methods"] == ALL and default["hidden"] == [40, 40] and default["iterations"] == 30000
    chosen = sinusoid.CONFIG.resolve(sinusoid.parse_args(["--config", recipe, "--seed", "7",
                                                          "--methods", "oracle,maml", "reptile"]))
    assert chosen["seed"] == 7 and chosen["methods"] == ["maml", "reptile", "oracle"]


# --- a second run, resuming, and runs that cannot start -------------------------------------

def test_a_second_run_into_the_same_out_is_refused_and_resume_continues(tmp_path, capsys):
    out, straight = tmp_path / "s0", tmp_path / "straight"
    cli("--iterations", 6, "--methods", "fomaml,pretrained", *TINY, "--out", out)
    first = (out / "results.json").read_bytes()
    status, err = exit_status(capsys, "--iterations", 6, *TINY, "--out", out)
    assert status == 2
    assert "already holds a run" in one_error_line(err) and "--resume" in err
    assert (out / "results.json").read_bytes() == first           # the first run's results kept

    doc = cli("--resume", "--iterations", 10, "--quiet", "--out", out)
    assert doc["config"]["methods"] == ["fomaml", "pretrained"]   # the run's own options
    assert doc["methods"]["fomaml"]["resumed_from_iteration"] == 6
    cli("--iterations", 10, "--methods", "fomaml,pretrained", *TINY, "--out", straight)
    assert_same_training(out, straight, ["fomaml", "pretrained"])


def test_resume_refuses_other_training_options_and_a_shorter_run(tmp_path, capsys):
    cli("--iterations", 6, "--methods", "fomaml", "--train-only", "--quiet", "--out", tmp_path)
    status, err = exit_status(capsys, "--resume", "--seed", 5, "--quiet", "--out", tmp_path)
    assert status == 2 and "--seed: checkpoint 0, now 5" in one_error_line(err)
    status, err = exit_status(capsys, "--resume", "--iterations", 3, "--quiet", "--out", tmp_path)
    assert status == 2 and "past --iterations 3" in one_error_line(err)


def test_an_unwritable_out_fails_before_any_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sinusoid, "build", lambda *a, **k: pytest.fail("training started"))
    afile = tmp_path / "somefile"
    afile.write_text("not a folder\n")
    status, err = exit_status(capsys, *TINY, "--out", afile / "sub")
    assert status == 2 and "cannot write to the output folder" in one_error_line(err)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders (see the test above for root)")
def test_a_read_only_out_fails_before_any_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sinusoid, "build", lambda *a, **k: pytest.fail("training started"))
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        status, err = exit_status(capsys, *TINY, "--out", locked / "run")
    finally:
        locked.chmod(0o700)
    assert status == 2 and "cannot write to the output folder" in one_error_line(err)


def test_a_concurrent_run_into_the_same_out_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sinusoid, "build", lambda *a, **k: pytest.fail("training started"))
    with RunFolder(tmp_path):                       # another run holds the folder's lock
        status, err = exit_status(capsys, *TINY, "--out", tmp_path)
    assert status == 2 and "is in use by process" in one_error_line(err)


# --- diverging fine-tuning ------------------------------------------------------------------

def test_diverging_fine_tuning_is_counted_and_results_come_before_figures(tmp_path):
    recipe = tmp_path / "huge_step.json"         # a step size of 3 overflows on some tasks
    recipe.write_text(json.dumps({"comment": "test only", "eval_lr": 3.0}))
    out = tmp_path / "run"
    doc = cli("--config", recipe, "--iterations", 5, "--methods", "pretrained", "--eval-tasks", 20,
              "--quiet", "--out", out)
    mse = doc["methods"]["pretrained"]["mse"]
    assert sum(s["diverged"] for s in mse.values()) > 0
    for s in mse.values():
        assert s["tasks"] + s["diverged"] == 20 and s["tasks"] > 0
        assert all(math.isfinite(v) for v in s["mean"])   # over the tasks that did not diverge
    assert json.loads((out / "results.json").read_text())["methods"]["pretrained"]["mse"]["K5"]["diverged"] \
        == mse["K5"]["diverged"]
    assert (out / "figure3.png").stat().st_size > 1000


def test_results_are_written_before_the_figures(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("figure failed")
    monkeypatch.setattr(sinusoid, "figure2", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        cli("--iterations", 3, "--methods", "maml", *TINY, "--out", tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["methods"]["maml"]["mse"]["K10"]["tasks"] == 8


def test_figure3_takes_its_axis_from_finite_values(tmp_path):
    cfg = {"eval_steps": 2, "eval_tasks": 4, "eval_lr": 0.01}
    nan, inf = float("nan"), float("inf")
    results = {"maml": {"mse": {"K10": {"mean": [2.0, 1.0, inf], "ci95": [0.1, nan, nan], "diverged": 1},
                                "K5": {"mean": [nan, nan, nan], "ci95": [nan, nan, nan], "diverged": 4}}}}
    sinusoid.figure3(tmp_path / "f3.png", results, cfg)
    assert (tmp_path / "f3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- interrupted and killed runs resume bit-identically -------------------------------------

def test_sigterm_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path):
    out, straight = tmp_path / "stopped", tmp_path / "straight"
    run = ["--methods", "pretrained", "--train-only", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-m", "experiments.sinusoid", *run, "--iterations",
                              "1000000", "--checkpoint-every", "20", "--out", str(out)],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "pretrained" / "checkpoint.npz").exists():
            if child.poll() is not None:
                pytest.fail(f"the run ended before its first checkpoint: {child.communicate()[1]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 120 s")
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and f"--out {out} --resume" in err
    stopped_at = checkpoint(out, "pretrained")[1]["iteration"]
    assert 20 <= stopped_at < 1000, stopped_at

    hook = Recorder()                    # --iterations and --checkpoint-every may change on resume
    cli("--resume", "--iterations", 1500, "--checkpoint-every", 1000, "--quiet", "--out", out, hook=hook)
    assert hook.calls == [("pretrained", 1000), ("pretrained", 1500)]
    assert checkpoint(out, "pretrained")[0]["log/loss"].size == 1500
    cli(*run, "--iterations", 1500, "--checkpoint-every", 0, "--out", straight)
    assert_same_training(out, straight, ["pretrained"])


def test_a_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_result(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    cli("--iterations", 12, "--checkpoint-every", 4, "--train-only", "--quiet", "--out", full)
    with pytest.raises(SimulatedKill):
        cli("--iterations", 12, "--checkpoint-every", 4, *TINY, "--out", killed,
            hook=Recorder(kill_at=("reptile", 8)))
    assert checkpoint(killed, "reptile")[1]["iteration"] == 8
    assert not (killed / "pretrained" / "checkpoint.npz").exists()
    assert not (killed / "results.json").exists()

    hook = Recorder()
    doc = cli("--resume", "--quiet", "--out", killed, hook=hook)
    assert [m for m, _ in hook.calls if m in ("maml", "fomaml")] == []      # finished: not retrained
    assert [i for m, i in hook.calls if m == "reptile"] == [12]
    assert [i for m, i in hook.calls if m == "pretrained"] == [4, 8, 12]
    assert_same_training(full, killed, ALL)
    assert doc["methods"]["maml"]["resumed_from_iteration"] == 12
    assert doc["methods"]["reptile"]["resumed_from_iteration"] == 8


# --- bad options ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--iterations", "0"], "--iterations: must be >= 1"),
    (["--iterations", "ten"], "--iterations: expected an integer"),
    (["--seed", "-5"], "--seed: must be >= 0, got -5"),
    (["--eval-tasks", "-3"], "--eval-tasks: must be >= 1"),
    (["--checkpoint-every", "-1"], "--checkpoint-every: must be >= 0"),
    (["--methods", "maml", "protonet"], "unknown method 'protonet'"),
    (["--methods", ","], "no method given"),
    (["--hidden", "40,x"], "--hidden: expected an integer"),
    (["--dtype", "float16"], "--dtype: choose from float32, float64, got 'float16'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--config", "no/such/recipe.json"], "--config no/such/recipe.json: cannot read it"),
])
def test_bad_options_fail_with_one_line(argv, message, capsys, tmp_path):
    status, err = exit_status(capsys, *argv, "--out", tmp_path / "never")
    assert status == 2 and message in one_error_line(err)
    assert not (tmp_path / "never").exists()


def test_a_recipe_with_an_unknown_option_fails_with_one_line(capsys, tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"seeds": 3}))
    status, err = exit_status(capsys, "--config", recipe, "--out", tmp_path / "never")
    assert status == 2 and "unknown option 'seeds'" in one_error_line(err)
