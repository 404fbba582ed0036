"""Tests for experiments/sinusoid.py: a tiny end-to-end run, bit-exact resume from
checkpoints (after a finished shorter run and after a simulated crash), and argument errors.

``main(argv, after_iteration=f)`` is called in-process; ``f`` raising simulates a kill.
"""
import json
import math

import numpy as np
import pytest

from experiments import sinusoid
from tinymeta import checkpoint

ALL = list(sinusoid.METHODS)


def run(out, iterations, *extra, after_iteration=None, eval_tasks=8):
    argv = ["--iterations", str(iterations), "--eval-tasks", str(eval_tasks), "--out", str(out),
            "--quiet", *map(str, extra)]
    return sinusoid.main(argv, after_iteration=after_iteration)


def final_state(out, method):
    arrays, meta = checkpoint.load(out / "checkpoints" / f"{method}.npz")
    return arrays, meta


def assert_same_checkpoints(a, b, methods=ALL):
    for method in methods:
        arrays_a, meta_a = final_state(a, method)
        arrays_b, meta_b = final_state(b, method)
        assert sorted(arrays_a) == sorted(arrays_b)
        for k in arrays_a:      # params, Adam moments and the loss history, bit for bit
            assert arrays_a[k].dtype == arrays_b[k].dtype, (method, k)
            assert np.array_equal(arrays_a[k], arrays_b[k]), (method, k)
        for k in ("iteration", "rng_state", "optimizer", "finished"):
            assert meta_a[k] == meta_b[k], (method, k)


class Recorder:
    """after_iteration hook: records (method, iteration) and raises at ``crash_at``."""

    def __init__(self, crash_at=None):
        self.calls, self.crash_at = [], crash_at

    def __call__(self, method, iteration):
        self.calls.append((method, iteration))
        if (method, iteration) == self.crash_at:
            raise KeyboardInterrupt("simulated kill")


def test_tiny_run_writes_figures_and_results(tmp_path):
    doc = run(tmp_path, 30, "--checkpoint-every", 10, eval_tasks=20)
    for name in ("figure2.png", "figure3.png", "results.json"):
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 1000, name
    assert (tmp_path / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(doc))
    assert saved["tinymeta_version"]
    settings = saved["settings"]
    for key in ("iterations", "seed", "dtype", "shots", "queries", "meta_batch", "inner_lr",
                "inner_steps", "outer_lr", "reptile", "evaluation", "hidden"):
        assert key in settings, key
    assert settings["iterations"] == 30 and settings["evaluation"]["tasks"] == 20
    assert set(saved["methods"]) == set(ALL)
    for method, res in saved["methods"].items():
        assert math.isfinite(res["train_wall_time_s"]) and res["train_wall_time_s"] >= 0
        assert res["iterations"] == 30
        for k in ("K5", "K10"):
            mean, ci = res["mse"][k]["mean"], res["mse"][k]["ci95"]
            assert len(mean) == len(ci) == 11
            assert all(math.isfinite(v) and v >= 0 for v in mean + ci), (method, k)
        if method == "oracle":          # not adapted: a flat line
            assert len(set(res["mse"]["K10"]["mean"])) == 1
        else:                           # step 0 is the same network for K = 5 and K = 10
            assert res["mse"]["K5"]["mean"][0] == pytest.approx(res["mse"]["K10"]["mean"][0])
    assert math.isfinite(saved["total_wall_time_s"])
    # every method checkpointed at its end
    for method in ALL:
        arrays, meta = final_state(tmp_path, method)
        assert meta["finished"] and meta["iteration"] == 30
        assert len(arrays["loss_history"]) == 30


def test_methods_share_seed_and_initial_weights():
    a = sinusoid.initial_arrays("maml", 3)
    b = sinusoid.initial_arrays("pretrained", 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["w0"], sinusoid.initial_arrays("maml", 4)["w0"])


def test_half_run_then_resume_equals_full_run(tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    run(full, 16, "--checkpoint-every", 5, "--train-only")
    run(split, 8, "--checkpoint-every", 5, "--train-only")     # a "killed" run: it stopped at 8
    hook = Recorder()
    run(split, 16, "--checkpoint-every", 5, "--resume", "--train-only", after_iteration=hook)
    assert hook.calls[0] == ("maml", 9)             # continued, not restarted
    assert_same_checkpoints(full, split)


def test_crash_after_checkpoint_then_resume_equals_full_run(tmp_path):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    run(full, 12, "--checkpoint-every", 4, "--train-only")
    hook = Recorder(crash_at=("reptile", 7))        # last checkpoint of reptile: iteration 4
    with pytest.raises(KeyboardInterrupt):
        run(crashed, 12, "--checkpoint-every", 4, after_iteration=hook)
    assert final_state(crashed, "reptile")[1]["iteration"] == 4
    assert not (crashed / "checkpoints" / "pretrained.npz").exists()
    assert not (crashed / "results.json").exists()
    hook = Recorder()
    run(crashed, 12, "--checkpoint-every", 4, "--resume", after_iteration=hook)
    trained = {m for m, _ in hook.calls}
    assert "maml" not in trained and "fomaml" not in trained     # finished: not retrained
    assert [i for m, i in hook.calls if m == "reptile"] == list(range(5, 13))
    assert [i for m, i in hook.calls if m == "pretrained"] == list(range(1, 13))
    assert_same_checkpoints(full, crashed)
    doc = json.loads((crashed / "results.json").read_text())
    assert doc["methods"]["maml"]["resumed_from_iteration"] == 12
    assert doc["methods"]["reptile"]["resumed_from_iteration"] == 4


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, capsys):
    run(tmp_path, 6, "--methods", "fomaml", "--train-only")
    with pytest.raises(SystemExit, match="seed"):
        run(tmp_path, 6, "--methods", "fomaml", "--resume", "--seed", "5")
    with pytest.raises(SystemExit, match="past --iterations"):
        run(tmp_path, 3, "--methods", "fomaml", "--resume")


@pytest.mark.parametrize("argv, message", [
    (["--iterations", "0"], "--iterations: must be >= 1"),
    (["--iterations", "ten"], "--iterations: expected a positive integer"),
    (["--eval-tasks", "-3"], "--eval-tasks: must be >= 1"),
    (["--checkpoint-every", "-1"], "--checkpoint-every: must be >= 0"),
    (["--methods", "maml", "protonet"], "unknown method 'protonet'"),
    (["--methods", ","], "no method given"),
    (["--dtype", "float16"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_arguments_exit_with_a_message(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        sinusoid.main(argv + ["--out", str(tmp_path / "never")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_methods_accepts_commas_and_keeps_a_fixed_order():
    args = sinusoid.parse_args(["--methods", "oracle,maml", "reptile"])
    assert args.methods == ["maml", "reptile", "oracle"]
