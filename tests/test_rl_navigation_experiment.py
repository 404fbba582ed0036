"""experiments/navigation.py with tiny settings (hidden 8, 3 trajectories of 10 steps, 2
goals): checkpoint, log and curves written; a process really killed (SIGKILL) right after a
checkpoint and resumed ends bit-identical to an uninterrupted run; evaluate and figure write
JSON with confidence intervals to their own folders; bad options are one ``error:`` line.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import navigation
from tinymeta import checkpoint

# The RL code runs on the NumPy backend only (MAMLRL refuses another in one sentence).
pytestmark = pytest.mark.skipif(os.environ.get("TINYMETA_BACKEND", "numpy") != "numpy",
                                reason="MAML-RL runs on the numpy backend only")


REPO = Path(__file__).resolve().parents[1]
TINY = ["--hidden", "8", "--trajectories", "3", "--meta-batch", "2", "--horizon", "10", "--val-tasks", "2",
        "--val-every", "2", "--checkpoint-every", "2", "--test-trajectories", "3", "--quiet"]


def start(*args, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != navigation.KILL_ENV}
    if kill_at is not None:
        env[navigation.KILL_ENV] = str(kill_at)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "experiments.navigation", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_main(argv, capsys):
    try:
        navigation.main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 4-iteration MAML run, one killed after its iteration-2 checkpoint and
    resumed, and tiny pretrained and oracle runs (the four processes run at once)."""
    root = tmp_path_factory.mktemp("navigation_runs")
    procs = {"whole": start("--iterations", 4, "--out", root / "whole", *TINY),
             "killed": start("--iterations", 4, "--out", root / "killed", *TINY, kill_at=2),
             "pretrained": start("--algo", "pretrained", "--iterations", 2, "--out", root / "pretrained", *TINY),
             "oracle": start("--algo", "oracle", "--iterations", 2, "--out", root / "oracle", *TINY)}
    codes = {name: (p.wait(timeout=600), p.communicate()[1]) for name, p in procs.items()}
    for name in ("whole", "pretrained", "oracle"):
        assert codes[name][0] == 0, codes[name][1]
    assert codes["killed"][0] == -9, f"expected SIGKILL, got {codes['killed']}"
    after_kill = checkpoint.load(root / "killed" / "checkpoint.npz")
    resumed = start("--out", root / "killed", "--resume", "--quiet")
    assert resumed.wait(timeout=600) == 0, resumed.communicate()[1]
    return root, after_kill


def test_training_writes_checkpoint_log_and_curves(runs):
    root, _ = runs
    for name in ("checkpoint.npz", "log.csv", "curves.png"):
        assert (root / "whole" / name).is_file()
    arrays, meta = checkpoint.load(root / "whole" / "checkpoint.npz")
    assert meta["iteration"] == 4 and meta["config"]["algo"] == "maml" and meta["config"]["hidden"] == 8
    assert list(arrays["log/val_iteration"]) == [2, 4]
    assert np.all(arrays["log/val_mean"] < 0) and np.all(arrays["log/loss"] > 0)   # loss = −return
    rows = (root / "whole" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,loss") and len(rows) == 5
    assert {"kl", "accepted", "backtracks", "return_after"} <= set(rows[0].split(","))   # TRPO's line search, logged
    kl, accepted = arrays["log/extra_kl"], arrays["log/extra_accepted"]
    assert len(kl) == 4 and set(np.unique(accepted)) <= {0.0, 1.0}
    assert np.all(kl[accepted == 1] <= meta["config"]["max_kl"])             # an accepted step keeps the bound
    best, best_meta = checkpoint.load(root / "whole" / "best.npz")          # --keep-best: the highest return
    assert best_meta["best"]["mean"] == arrays["log/val_mean"].max()
    assert best_meta["iteration"] == arrays["log/val_iteration"][arrays["log/val_mean"].argmax()]


def test_killed_and_resumed_run_is_bit_identical(runs):
    root, (arrays_at_kill, meta_at_kill) = runs
    assert meta_at_kill["iteration"] == 2
    whole, _ = checkpoint.load(root / "whole" / "checkpoint.npz")
    resumed, meta = checkpoint.load(root / "killed" / "checkpoint.npz")
    assert meta["iteration"] == 4
    for k in whole:
        if k != "log/elapsed":
            np.testing.assert_array_equal(whole[k], resumed[k], err_msg=k)


def test_evaluate_writes_returns_with_confidence_intervals(runs, tmp_path, capsys):
    root, _ = runs
    ckpt = root / "whole" / "checkpoint.npz"
    before = sorted(ckpt.parent.iterdir())
    code, out, err = run_main(["evaluate", ckpt, "--goals", 5, "--eval-steps", 2, "--out", tmp_path / "e"], capsys)
    assert code == 0, err
    assert sorted(ckpt.parent.iterdir()) == before
    result = json.loads((tmp_path / "e" / "evaluation.json").read_text())
    assert result["goals"] == 5 and result["seed"] == navigation.EVAL_SEED
    assert len(result["return"]["mean"]) == 3 and len(result["return"]["ci95"]) == 3
    assert np.array(result["per_goal_return"]).shape == (3, 5)
    assert "average return after 0..2 steps (5 goals, seed 1)" in out
    assert result["checkpoint"] == str(ckpt) and result["iteration"] == 4 and result["best"] is None
    code, out, err = run_main(["evaluate", ckpt.parent, "--goals", 2, "--eval-steps", 1, "--out", tmp_path / "b"],
                              capsys)                             # a run folder: its best.npz
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "evaluation.json").read_text())["checkpoint"] == str(ckpt.parent / "best.npz")
    other = run_main(["evaluate", ckpt, "--goals", 5, "--eval-steps", 2, "--seed", 2, "--out", tmp_path / "f"],
                     capsys)
    assert other[0] == 0
    assert json.loads((tmp_path / "f" / "evaluation.json").read_text())["return"] != result["return"]


def test_figure_evaluates_the_four_methods_on_the_same_goals(runs, tmp_path, capsys):
    root, _ = runs
    code, out, err = run_main(["figure", "--maml", root / "whole" / "checkpoint.npz",
                               "--pretrained", root / "pretrained" / "checkpoint.npz",
                               "--oracle", root / "oracle" / "checkpoint.npz", "--goals", 4, "--eval-steps", 2,
                               "--pretrained-lr", 0.02, "--out", tmp_path / "fig"], capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "fig" / "results.json").read_text())
    assert list(results["methods"]) == ["maml", "pretrained", "random", "oracle"]
    for name in ("maml", "pretrained", "random"):
        assert len(results["methods"][name]["return"]["mean"]) == 3
    assert len(results["methods"]["oracle"]["return"]["mean"]) == 1
    assert results["methods"]["random"]["iteration"] == 0
    pretrained, maml = results["methods"]["pretrained"], results["methods"]["maml"]
    assert (pretrained["inner_lr"], pretrained["later_inner_lr"]) == (0.02, 0.02)
    assert (maml["inner_lr"], maml["later_inner_lr"]) == (0.1, 0.05)
    assert (tmp_path / "fig" / "figure4.png").stat().st_size > 1000


@pytest.mark.parametrize("argv, message", [
    (["--algo", "pretrained", "--inner-steps", "1"], "error: --inner-steps 1: --algo pretrained is trained without an inner step"),
    (["--inner-steps", "0"], "error: --inner-steps 0 with --algo maml is the pretrained baseline"),
    (["--discount", "1.5"], "error: --discount must be at most 1, got 1.5"),
    (["evaluate", "no/such.npz"], "error: checkpoint no/such.npz: no such file"),
])
def test_bad_options_are_one_error_line(argv, message, tmp_path, capsys):
    code, out, err = run_main(argv + (["--out", tmp_path / "x"] if argv[0] != "evaluate" else []), capsys)
    assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_resume_refuses_options_that_change_the_training(runs, capsys):
    root, _ = runs
    code, _, err = run_main(["--out", root / "whole", "--resume", "--inner-lr", "0.5", "--quiet"], capsys)
    assert code == 2 and "--inner-lr: checkpoint 0.1, now 0.5" in err


def test_recipes_are_the_defaults():
    for name in ("maml", "pretrained", "oracle"):
        recipe = navigation.CONFIG.recipe(navigation.RECIPES / f"navigation_{name}.json")
        defaults = navigation.defaults({"algo": name})
        assert recipe and all(defaults[k] == v for k, v in recipe.items()), name
    assert navigation.defaults({})["meta_batch"] == 20 and navigation.defaults({})["inner_lr"] == 0.1
