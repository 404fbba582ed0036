"""Tests for experiments/omniglot.py with tiny settings (8 filters, meta-batch 2, 2 queries):
checkpoint, log and curves written; a process really killed (SIGKILL) right after a
checkpoint and resumed ends bit-identical to an uninterrupted run; the best validated
checkpoint (best.npz) is kept and evaluated; evaluate prints accuracy with a confidence
interval and writes JSON; Lake's runs; clear errors for bad options.

They need the Omniglot files, found as in tests/test_omniglot_data.py: ``TINYMETA_DATA``
(the folder holding ``omniglot/``), else ``../shared/data`` beside the repository;
without either the tests that need data are skipped.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import omniglot
from tinymeta import checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = ["--filters", "8", "--meta-batch", "2", "--query", "2", "--val-tasks", "2",
        "--val-every", "2", "--checkpoint-every", "2", "--eval-steps", "2", "--quiet"]


@pytest.fixture(scope="module")
def data_dir(omniglot_data_dir):
    return omniglot_data_dir


def cli(*args, data_dir=None, kill_at=None):
    """Run ``python -m experiments.omniglot`` in a subprocess; returns CompletedProcess."""
    env = dict(os.environ)
    env.pop(omniglot.KILL_ENV, None)
    if kill_at is not None:
        env[omniglot.KILL_ENV] = str(kill_at)
    extra = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run([sys.executable, "-m", "experiments.omniglot", *map(str, args), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def start(*args, data_dir, kill_at=None):
    env = dict(os.environ)
    env.pop(omniglot.KILL_ENV, None)
    if kill_at is not None:
        env[omniglot.KILL_ENV] = str(kill_at)
    return subprocess.Popen([sys.executable, "-m", "experiments.omniglot", *map(str, args),
                             "--data-dir", str(data_dir)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_main(argv, capsys):
    """main() in-process; returns (exit code, stdout, stderr)."""
    try:
        omniglot.main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """An uninterrupted 4-iteration run, and one killed after its iteration-2 checkpoint and
    then resumed to 4. The two training processes run at the same time."""
    root = tmp_path_factory.mktemp("omniglot_runs")
    whole, killed = root / "whole", root / "killed"
    p_whole = start("--iterations", 4, "--out", whole, *TINY, data_dir=data_dir)
    p_killed = start("--iterations", 4, "--out", killed, *TINY, data_dir=data_dir, kill_at=2)
    outs = {name: (p.wait(timeout=300), *p.communicate()) for name, p in
            (("whole", p_whole), ("killed", p_killed))}
    assert outs["whole"][0] == 0, outs["whole"][2]
    assert outs["killed"][0] == -9, f"expected SIGKILL, got {outs['killed']}"
    after_kill = checkpoint.load(killed / "checkpoint.npz")
    resumed = cli("--out", killed, "--resume", "--quiet", data_dir=data_dir)
    assert resumed.returncode == 0, resumed.stderr
    return {"whole": whole, "killed": killed, "after_kill": after_kill}


def test_checkpoint_log_and_curves_are_written(runs):
    out = runs["whole"]
    arrays, meta = checkpoint.load(out / "checkpoint.npz")
    assert meta["format"] == "tinymeta-run" and meta["iteration"] == 4 and meta["finished"]
    cfg = meta["config"]
    assert (cfg["algo"], cfg["ways"], cfg["shots"], cfg["query"], cfg["filters"]) == ("maml", 5, 1, 2, 8)
    assert (cfg["inner_lr"], cfg["inner_steps"], cfg["meta_lr"]) == (0.4, 1, 1e-3)    # 5-way defaults
    assert "conv0.w" in checkpoint.split(arrays, "params")
    assert checkpoint.split(arrays, "optimizer") and meta["learner"]["optimizer"]["t"] == 4
    assert len(arrays["log/loss"]) == 4 and list(arrays["log/val_iteration"]) == [2, 4]
    assert "state" in meta["tasks_state"] and len(meta["data"]) == 16
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0] == "iteration,loss,train_accuracy,validation,elapsed_s" and len(lines) == 5
    assert lines[2].split(",")[3] != "" and lines[1].split(",")[3] == ""
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_killed_and_resumed_run_is_bit_identical(runs):
    arrays_k, meta_k = runs["after_kill"]
    assert meta_k["iteration"] == 2 and not meta_k["finished"]       # the kill came after it
    a, meta_a = checkpoint.load(runs["whole"] / "checkpoint.npz")
    b, meta_b = checkpoint.load(runs["killed"] / "checkpoint.npz")
    assert sorted(a) == sorted(b)
    for k in a:
        if k == "log/elapsed":      # wall-clock times
            continue
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    for k in ("iteration", "tasks_state", "learner", "config", "finished", "data"):
        assert meta_a[k] == meta_b[k], k
    # and the run really moved on from the checkpoint it was killed at
    assert not np.array_equal(arrays_k["params/conv0.w"], b["params/conv0.w"])


def test_evaluate_prints_accuracy_with_ci_and_writes_json(runs, data_dir, tmp_path, capsys):
    ckpt = runs["whole"] / "checkpoint.npz"
    before = sorted(runs["whole"].iterdir())
    out_dir = tmp_path / "ev"
    code, out, err = run_main(["evaluate", ckpt, "--tasks", 5, "--data-dir", data_dir, "--quiet",
                               "--out", out_dir], capsys)
    assert code == 0, err
    assert sorted(runs["whole"].iterdir()) == before, "evaluate wrote beside the checkpoint"
    assert "5-way 1-shot test accuracy" in out and "±" in out and "%" in out
    result = json.loads((out_dir / "evaluation.json").read_text())
    assert result["tasks"] == 5 and len(result["per_task_accuracy"]) == 5
    acc = 100 * np.array(result["per_task_accuracy"])
    assert result["accuracy_percent"] == pytest.approx(acc.mean())
    assert result["ci95_percent"] == pytest.approx(1.96 * acc.std(ddof=1) / np.sqrt(5))
    assert f"{result['accuracy_percent']:.2f} ± {result['ci95_percent']:.2f}%" in out
    # a second evaluation never overwrites the first one's results
    code, out, err = run_main(["evaluate", ckpt, "--tasks", 2, "--data-dir", data_dir, "--quiet",
                               "--out", out_dir], capsys)
    assert code == 2 and "already holds a run" in err
    assert json.loads((out_dir / "evaluation.json").read_text())["tasks"] == 5


def test_best_validated_checkpoint_is_kept_and_evaluate_takes_it(runs, data_dir, tmp_path, capsys):
    """--keep-best is on by default: best.npz is the checkpoint of the first iteration with the
    highest validation accuracy, bit-identical after a kill and resume; evaluate takes it, or
    the run folder (meaning its best.npz), and records which checkpoint and iteration it used."""
    arrays, meta = checkpoint.load(runs["whole"] / "best.npz")
    last, _ = checkpoint.load(runs["whole"] / "checkpoint.npz")
    val_it, val_mean = list(last["log/val_iteration"]), list(last["log/val_mean"])
    best_at = val_it[int(np.argmax(val_mean))]
    assert meta["format"] == "tinymeta-run" and meta["iteration"] == best_at
    assert meta["best"]["iteration"] == best_at and meta["best"]["mean"] == max(val_mean)
    assert list(arrays["log/val_iteration"]) == [i for i in val_it if i <= best_at]
    if best_at == 4:                                       # the last iteration: the same parameters
        assert np.array_equal(arrays["params/conv0.w"], last["params/conv0.w"])
    resumed, meta_r = checkpoint.load(runs["killed"] / "best.npz")
    assert meta_r["best"] == meta["best"]
    for k in arrays:
        if k != "log/elapsed":
            assert np.array_equal(arrays[k], resumed[k]), k
    for i, target in enumerate((runs["whole"] / "best.npz", runs["whole"])):
        code, out, err = run_main(["evaluate", target, "--tasks", 2, "--data-dir", data_dir, "--quiet",
                                   "--out", tmp_path / f"ev{i}"], capsys)
        assert code == 0, err
        result = json.loads((tmp_path / f"ev{i}" / "evaluation.json").read_text())
        assert result["checkpoint"] == str(runs["whole"] / "best.npz") and result["iteration"] == best_at
        assert result["best"]["iteration"] == best_at
        assert f"best.npz at iteration {best_at} (the best validation: " in out


def test_keep_best_is_one_option_on_by_default(tmp_path):
    parse = omniglot.train_parser().parse_args
    assert omniglot.CONFIG.resolve(parse([]))["keep_best"] is True
    assert omniglot.CONFIG.resolve(parse(["--no-keep-best"]))["keep_best"] is False
    assert omniglot.CONFIG.resolve(parse(["--keep-best"]))["keep_best"] is True
    recipe = tmp_path / "r.json"
    recipe.write_text('{"keep_best": false}')
    assert omniglot.CONFIG.resolve(parse(["--config", str(recipe)]))["keep_best"] is False
    saved = omniglot.CONFIG.resolve(parse([]))                         # an option that may change on resume
    assert omniglot.CONFIG.resumed(saved, parse(["--no-keep-best"]))["keep_best"] is False
    old = {k: v for k, v in saved.items() if k != "keep_best"}         # a checkpoint that predates it
    assert omniglot.CONFIG.complete(old)["keep_best"] is True


def test_evaluate_default_output_is_a_new_folder_under_runs(runs, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["evaluate", runs["whole"] / "checkpoint.npz", "--tasks", 2,
                               "--data-dir", data_dir, "--quiet"], capsys)
    assert code == 0, err
    written = list((tmp_path / "runs" / "eval").glob("checkpoint-*/evaluation.json"))
    assert len(written) == 1


def test_lake_with_a_5_way_model_uses_nearest_neighbour(runs, data_dir, tmp_path, capsys):
    ckpt = runs["whole"] / "checkpoint.npz"
    code, out, err = run_main(["evaluate", ckpt, "--lake", "--data-dir", data_dir, "--quiet",
                               "--out", tmp_path / "lake"], capsys)
    assert code == 0, err
    assert "MAML split" in err                          # the leakage warning
    result = json.loads((tmp_path / "lake" / "lake.json").read_text())
    assert len(result["runs"]) == 20 and "nearest neighbour" in result["method"]
    assert result["human_error_percent"] == 4.5 and 0 <= result["error_percent"] <= 100
    assert "error" in out and "4.5%" in out


def test_resume_rejects_changed_options(runs, data_dir, capsys):
    code, out, err = run_main(["--out", runs["whole"], "--resume", "--ways", 20, "--inner-lr", 0.1,
                               "--iterations", 6, "--data-dir", data_dir], capsys)
    assert code == 2
    assert "--ways: checkpoint 5, now 20" in err and "--inner-lr" in err and "Traceback" not in err
    code, out, err = run_main(["--out", runs["whole"], "--iterations", 4, *TINY, "--data-dir", data_dir], capsys)
    assert code == 2 and "pass --resume" in err


def test_20_way_lake_adapts_and_reptile_trains(data_dir, tmp_path, capsys):
    out20 = tmp_path / "w20"
    code, _, err = run_main(["--ways", 20, "--iterations", 1, "--inner-steps", 1, "--split", "lake",
                             *TINY, "--out", out20, "--data-dir", data_dir], capsys)
    assert code == 0, err
    code, out, err = run_main(["evaluate", out20 / "checkpoint.npz", "--lake", "--eval-steps", 1,
                               "--data-dir", data_dir, "--out", tmp_path / "lake20"], capsys)
    assert code == 0, err
    assert "adapt the 20-way model" in out and "run20" in out and "MAML split" not in err
    rep = tmp_path / "reptile"
    code, _, err = run_main(["--algo", "reptile", "--iterations", 2, *TINY, "--out", rep,
                             "--data-dir", data_dir], capsys)
    assert code == 0, err
    arrays, meta = checkpoint.load(rep / "checkpoint.npz")
    assert meta["config"]["outer_lr"] == 1.0 and meta["config"]["inner_steps"] == 5
    # ε annealed linearly over the 2 iterations: 1.0 at the first, 0.5 at the last
    assert meta["learner"]["optimizer"]["lr"] == 0.5


@pytest.mark.parametrize("argv, message", [
    (["--shots", 10, "--query", 15], "--shots + --query = 10 + 15 = 25 is more than the 20"),
    (["--ways", 5000], "--ways 5000 is more than the 4400 training classes"),
    (["--algo", "protonet", "--test-ways", 500, "--val-tasks", 0], "--test-ways 500 is more than the 423 test classes"),
    (["--algo", "protonet", "--inner-lr", 0.1], "--inner-lr does not apply to --algo protonet"),
    (["--ways", 5, "--test-ways", 20], "--algo maml has a 5-way head"),
    (["--iterations", 0], "--iterations: must be >= 1"),
    (["--seed", -5], "--seed: must be >= 0"),
    (["--algo", "reptile", "--inner-steps", 0], "--inner-steps: must be >= 1"),
    (["--config", "/nonexistent.json"], "--config /nonexistent.json: cannot read it"),
    (["--algo", "bogus"], "--algo: choose from maml, fomaml, reptile"),
    (["--algo", "reptile", "--meta-lr", 0.1], "--meta-lr does not apply to --algo reptile"),
    (["evaluate", "/nonexistent/checkpoint.npz"], "no such file"),
])
def test_bad_options_exit_2_with_a_clear_message(argv, message, data_dir, tmp_path, capsys):
    extra = [] if argv[0] == "evaluate" else ["--out", tmp_path / "o", "--data-dir", data_dir]
    code, out, err = run_main([*argv, *extra], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_not_a_checkpoint_is_rejected(tmp_path, capsys):
    bogus = tmp_path / "x.npz"
    np.savez(bogus, a=np.zeros(3))
    code, out, err = run_main(["evaluate", bogus], capsys)
    assert code == 2 and "not a tinymeta checkpoint" in err
    checkpoint.save(bogus, {"a": np.zeros(3)}, {"something": "else"})
    code, out, err = run_main(["evaluate", bogus], capsys)
    assert code == 2 and "lacks 'format'" in err and "Traceback" not in err


def test_missing_data_is_reported_without_traceback(tmp_path):
    (tmp_path / "omniglot").mkdir()
    result = cli("--out", tmp_path / "o", "--iterations", 1, *TINY, data_dir=tmp_path)
    assert result.returncode == 2
    assert "Omniglot file not found" in result.stderr and "omniglot_background.npz" in result.stderr
    assert "Traceback" not in result.stderr




def _copy_checkpoint_with(src, dst, arrays_change=None, meta_change=None):
    arrays, meta = checkpoint.load(src)
    if arrays_change:
        arrays_change(arrays)
    if meta_change:
        meta_change(meta)
    checkpoint.save(dst, arrays, meta)
    return dst


def test_evaluate_refuses_non_finite_parameters(runs, tmp_path, capsys):
    def poison(arrays):
        arrays["params/w_head"] = np.full_like(arrays["params/w_head"], np.nan)
    bad = _copy_checkpoint_with(runs["whole"] / "checkpoint.npz", tmp_path / "nan.npz", poison)
    code, out, err = run_main(["evaluate", bad, "--out", tmp_path / "ev"], capsys)
    assert code == 2 and "['w_head'] are not finite" in err and "%" not in out


def test_evaluate_on_changed_data_warns_and_records_it(runs, data_dir, tmp_path, capsys):
    def other_data(meta):
        meta["data"] = "0" * 64
    ckpt = _copy_checkpoint_with(runs["whole"] / "checkpoint.npz", tmp_path / "c.npz", meta_change=other_data)
    code, out, err = run_main(["evaluate", ckpt, "--tasks", 2, "--data-dir", data_dir, "--quiet",
                               "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    assert "warning: the data differ from those the checkpoint was trained on" in err
    assert "data differ" in json.loads((tmp_path / "ev" / "evaluation.json").read_text())["data_warning"]


def test_bad_environment_settings_are_one_line(tmp_path):
    env = dict(os.environ, TINYMETA_KERNELS="bogus")
    result = subprocess.run([sys.executable, "-m", "experiments.omniglot", "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "TINYMETA_KERNELS='bogus'" in result.stderr


def test_protonet_trains_and_evaluates_at_other_ways(data_dir, tmp_path, capsys):
    out = tmp_path / "proto"
    code, _, err = run_main(["--algo", "protonet", "--ways", 10, "--iterations", 2, "--filters", 8,
                             "--val-tasks", 2, "--checkpoint-every", 2, "--quiet", "--out", out,
                             "--data-dir", data_dir], capsys)
    assert code == 0, err
    arrays, meta = checkpoint.load(out / "checkpoint.npz")
    assert "params/w_head" not in arrays and meta["config"]["test_ways"] == 5
    code, text, err = run_main(["evaluate", out / "checkpoint.npz", "--ways", 20, "--shots", 1,
                                "--tasks", 3, "--data-dir", data_dir, "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    assert "20-way 1-shot test accuracy (protonet" in text


@pytest.mark.parametrize("recipe", sorted((REPO / "experiments" / "configs").glob("[om]*i*_*.json")),
                         ids=lambda p: p.stem)
def test_every_shipped_recipe_resolves(recipe):
    args = omniglot.train_parser().parse_args(["--config", str(recipe)])
    cfg = omniglot.CONFIG.resolve(args)
    assert cfg["algo"] in omniglot.ALGOS and cfg["iterations"] >= 10000


def test_a_folder_of_images_trains_and_evaluates(tmp_path, capsys):
    """--dataset folder: a user's own ROOT/<class>/<image> tree, colour, unequal classes."""
    from PIL import Image
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in range(20):
        (root / f"class{c:02d}").mkdir(parents=True)
        for i in range(5 + c % 3):                                     # 5, 6 or 7 images
            pixels = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c:02d}" / f"{i}.png")
    out = tmp_path / "run"
    code, _, err = run_main(["--dataset", "folder", "--data-dir", root, "--image-size", 16, "--ways", 3,
                             "--shots", 1, "--query", 2, "--meta-batch", 2, "--filters", 4,
                             "--iterations", 2, "--val-tasks", 2, "--checkpoint-every", 2, "--quiet",
                             "--out", out], capsys)
    assert code == 0, err
    arrays, meta = checkpoint.load(out / "checkpoint.npz")
    assert meta["config"]["in_channels"] == 3 and meta["config"]["max_pool"] is True
    assert arrays["params/conv0.w"].shape == (4, 3, 3, 3)
    code, text, err = run_main(["evaluate", out / "checkpoint.npz", "--data-dir", root, "--tasks", 3,
                                "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    assert "3-way 1-shot test accuracy (maml" in text


# --- the metric learners: Matching (± FCE), Relation and Siamese networks -------------------------

METRIC_TINY = ["--filters", "8", "--query", "2", "--val-tasks", "2", "--val-every", "2",
               "--checkpoint-every", "2", "--quiet"]


@pytest.mark.parametrize("algo, extra", [("matchingnet", []), ("matchingnet", ["--cosine-scale", 10]),
                                         ("matchingnet_fce", []), ("relationnet", []), ("siamese", [])])
def test_metric_learner_trains_and_evaluates_at_other_ways_and_shots(algo, extra, data_dir, tmp_path, capsys):
    out = tmp_path / algo
    code, _, err = run_main(["--algo", algo, "--iterations", 2, *METRIC_TINY, *extra, "--out", out,
                             "--data-dir", data_dir], capsys)
    assert code == 0, err
    arrays, meta = checkpoint.load(out / "checkpoint.npz")
    assert meta["iteration"] == 2 and "params/w_head" not in arrays
    assert list(arrays["log/val_iteration"]) == [2] and np.isfinite(arrays["log/loss"]).all()
    assert ("params/fce.f.w_hh" in arrays) == (algo == "matchingnet_fce")
    assert ("params/attention.scale" in arrays) == bool(extra)            # α learned: moved from 10
    assert not extra or arrays["params/attention.scale"][0] != 10.0
    for ways, shots in ((20, 1), (3, 5)):
        code, text, err = run_main(["evaluate", out / "checkpoint.npz", "--ways", ways, "--shots", shots,
                                    "--tasks", 2, "--data-dir", data_dir, "--out", tmp_path / f"ev{ways}"], capsys)
        assert code == 0, err
        assert f"{ways}-way {shots}-shot test accuracy ({algo}, 0 steps, 2 tasks)" in text


def test_paper_defaults_of_the_metric_learners():
    def resolved(*argv):
        return omniglot.CONFIG.resolve(omniglot.train_parser().parse_args([str(a) for a in argv]))
    for ways, shots, query in ((5, 1, 19), (5, 5, 15), (20, 1, 10), (20, 5, 5)):   # Sung et al., Section 4.1
        cfg = resolved("--algo", "relationnet", "--ways", ways, "--shots", shots)
        assert (cfg["query"], cfg["test_ways"], cfg["meta_lr"], cfg["lr_halve_every"]) == (query, ways, 1e-3, 100000)
        assert cfg["transductive"] and cfg["iterations"] == 1000000
    cfg = resolved("--algo", "matchingnet", "--ways", 20)
    assert (cfg["ways"], cfg["test_ways"], cfg["meta_batch"], cfg["fce_steps"]) == (20, 20, 1, None)
    assert resolved("--algo", "matchingnet_fce")["fce_steps"] == omniglot.FCE_STEPS
    assert resolved("--algo", "matchingnet_fce", "--fce-steps", 2)["fce_steps"] == 2
    cfg = resolved("--algo", "siamese")
    assert (cfg["meta_batch"], cfg["test_ways"], cfg["shots"], cfg["eval_steps"]) == (128, 20, 1, 0)
    assert resolved("--algo", "maml")["fce_steps"] is None


def test_siamese_resumes_its_pair_stream_bit_identically(data_dir, tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    common = ["--algo", "siamese", "--meta-batch", 6, "--filters", 8, "--val-tasks", 0, "--quiet",
              "--data-dir", data_dir]
    assert run_main([*common, "--iterations", 4, "--out", whole], capsys)[0] == 0
    assert run_main([*common, "--iterations", 2, "--out", parts], capsys)[0] == 0
    code, _, err = run_main(["--out", parts, "--resume", "--iterations", 4, "--quiet", "--data-dir", data_dir], capsys)
    assert code == 0, err
    a, b = checkpoint.load(whole / "checkpoint.npz")[0], checkpoint.load(parts / "checkpoint.npz")[0]
    for k in a:
        if k != "log/elapsed":
            assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("algo", ["protonet", "siamese"])
def test_lake_runs_with_a_background_only_metric_model(algo, data_dir, tmp_path, capsys):
    """Trained on the background alphabets only (--split lake): no leakage warning, and each
    run's 20 training images are the support set."""
    out = tmp_path / algo
    code, _, err = run_main(["--algo", algo, "--split", "lake", "--iterations", 1, *METRIC_TINY,
                             "--out", out, "--data-dir", data_dir], capsys)
    assert code == 0, err
    code, text, err = run_main(["evaluate", out / "checkpoint.npz", "--lake", "--data-dir", data_dir,
                                "--out", tmp_path / "lake"], capsys)
    assert code == 0, err
    assert "MAML split" not in err and "run20" in text
    result = json.loads((tmp_path / "lake" / "lake.json").read_text())
    assert result["config"]["split"] == "lake" and len(result["runs"]) == 20
    assert result["method"] == f"the {algo} model with each run's 20 training images as its support set"
    assert 0 <= result["error_percent"] <= 100 and result["human_error_percent"] == 4.5


@pytest.mark.parametrize("argv, message", [
    (["--algo", "relationnet", "--ways", 5000], "--ways 5000 is more than the 4400 training classes"),
    (["--algo", "siamese", "--ways", 500], "--test-ways 500 is more than the 100 validation classes"),
    (["--algo", "siamese", "--ways", 500, "--val-tasks", 0], "--test-ways 500 is more than the 423 test classes"),
    (["--algo", "matchingnet", "--split", "lake", "--ways", 5000, "--test-ways", 5],
     "--ways 5000 is more than the 3456 training classes"),
    (["--algo", "matchingnet_fce", "--shots", 10, "--query", 15], "--shots + --query = 10 + 15 = 25 is more than the 20"),
    (["--algo", "siamese", "--shots", 21], "is more than the 20 drawings"),
    (["--algo", "relationnet", "--shots", 6, "--query", 5], "--shots + --test-query = 6 + 15 = 21 is more than the 20"),
    (["--algo", "relationnet", "--non-transductive"], "--non-transductive does not apply to --algo relationnet"),
    (["--algo", "matchingnet", "--fce-steps", 3], "--fce-steps does not apply to --algo matchingnet"),
    (["--algo", "protonet", "--cosine-scale", 10], "--cosine-scale does not apply to --algo protonet"),
    (["--algo", "maml", "--fce-steps", 3], "--fce-steps does not apply to --algo maml"),
    (["--algo", "siamese", "--inner-lr", 0.1], "--inner-lr does not apply to --algo siamese"),
    (["--algo", "matchingnet_fce", "--fce-steps", 0], "--fce-steps: must be >= 1"),
])
def test_bad_options_of_the_metric_learners(argv, message, data_dir, tmp_path, capsys):
    code, out, err = run_main([*argv, "--iterations", 1, "--out", tmp_path / "o", "--data-dir", data_dir], capsys)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_evaluate_refuses_more_ways_or_shots_than_the_data_hold(data_dir, tmp_path, capsys):
    out = tmp_path / "m"
    assert run_main(["--algo", "matchingnet", "--iterations", 1, *METRIC_TINY, "--out", out,
                     "--data-dir", data_dir], capsys)[0] == 0
    for argv, message in ((["--ways", 500], "--test-ways 500 is more than the 423 test classes"),
                          (["--shots", 10], "--shots + --test-query = 10 + 15 = 25 is more than the 20 drawings"),
                          (["--shots", 25], "is more than the 20 drawings")):
        code, text, err = run_main(["evaluate", out / "checkpoint.npz", *argv, "--data-dir", data_dir,
                                    "--out", tmp_path / "ev"], capsys)
        assert code == 2 and message in err and "Traceback" not in err, err


def test_a_test_configuration_too_big_for_the_data_is_refused_before_training(tmp_path, capsys):
    from PIL import Image
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    for c in range(30):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(root / f"c{c}" / f"{i}.png")
    code, _, err = run_main(["--algo", "protonet", "--dataset", "folder", "--data-dir", root, "--image-size", 16,
                             "--in-channels", 1, "--ways", 3, "--query", 2, "--filters", 4, "--iterations", 2,
                             "--out", tmp_path / "run"], capsys)
    assert code == 2 and "1 + 15 = 16 is more than the 6 examples" in err and "--test-query" in err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
