"""Tests for experiments/bench.py: a ``--quick`` run of every case writes valid JSON with the
expected keys and positive finite times; the cases use the experiments' own configurations
and learners; ``--backend cupy`` without CuPy fails with the backend's clear message. Speed
is never asserted here."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autograd import backend, kernels
from experiments import bench, configs, sinusoid

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    before = (backend.name, kernels.kernels_name(), bench.numba_threads())
    rc = bench.main(["--quick", "--repeats", "2", "--warmup", "1", "--out", str(out)])
    assert rc == 0
    # the run leaves the global settings as it found them
    assert (backend.name, kernels.kernels_name(), bench.numba_threads()) == before
    return json.loads(out.read_text())


def test_quick_run_writes_every_case(quick_result):
    r = quick_result
    for key in ("machine", "settings", "notes", "matmul", "cases", "ratios", "targets"):
        assert key in r
    for key in ("cpu", "cores", "numpy", "numba", "env", "kernels", "backend"):
        assert key in r["machine"]
    assert "OPENBLAS_NUM_THREADS" in r["machine"]["env"]
    assert "TINYMETA_NUMBA_THREADS" in r["machine"]["env"]
    assert "matrix products only" in r["notes"]["gflop"]
    assert "tracemalloc" in r["notes"]["peak_memory"]
    for dtype in ("float32", "float64"):
        assert r["matmul"][dtype]["gflops"] > 0 and math.isfinite(r["matmul"][dtype]["gflops"])

    meta_cases = [n for n in bench.ALL_CASES if n.split("_")[0] in ("sinusoid", "omniglot", "miniimagenet")]
    expected = meta_cases + ["hvp_omniglot.grad", "hvp_omniglot.hvp"]
    assert set(expected) <= set(r["cases"])
    for name in expected:
        c = r["cases"][name]
        for key in ("seconds", "min_s", "max_s", "repeats", "times", "gflop", "gflops",
                    "peak_bytes", "dtype", "config"):
            assert key in c, (name, key)
        rounds = 3 * 2 if name.startswith("hvp_") else 2          # grad/hvp alternate for 3x repeats
        assert c["repeats"] == rounds and len(c["times"]) == rounds, name
        assert all(t > 0 and math.isfinite(t) for t in c["times"]), name
        assert c["min_s"] <= c["seconds"] <= c["max_s"]
        assert c["peak_bytes"] > 0
        assert c["gflop"] > 0 and math.isfinite(c["gflops"]), name   # every case multiplies matrices
    assert r["cases"]["omniglot_maml_f64"]["dtype"] == "float64"
    assert r["cases"]["omniglot_maml_f32"]["gflop"] > 0

    for name in ("hvp_omniglot", "kernels_numpy_vs_numba", "loop_vs_batched_sinusoid",
                 "loop_vs_batched_omniglot", "numba_threads_1_vs_2"):
        if name == "numba_threads_1_vs_2" and importlib.util.find_spec("numba") is None:
            continue
        ratio = r["ratios"][name]
        assert ratio["ratio"] > 0 and math.isfinite(ratio["ratio"]), name
        assert ratio["numerator_s"] > 0 and ratio["denominator_s"] > 0
        assert ratio["note"]
    assert "meta-batch" in r["ratios"]["loop_vs_batched_omniglot"]["note"]

    names = {t["name"] for t in r["targets"]}
    assert {"omniglot_maml_f32_gflops", "sinusoid_maml_time", "hvp_vs_grad",
            "loop_vs_batched_sinusoid", "loop_vs_batched_omniglot"} <= names
    assert all(t["status"] in ("PASS", "BELOW") for t in r["targets"])


def test_case_selection():
    assert bench.select_cases(["sinusoid"]) == ["sinusoid_maml", "sinusoid_fomaml", "sinusoid_reptile"]
    assert bench.select_cases(["omniglot_*_f64"]) == ["omniglot_maml_f64", "omniglot_fomaml_f64",
                                                      "omniglot_reptile_f64"]
    assert bench.select_cases(["hvp", "sinusoid_maml"]) == ["sinusoid_maml", "hvp_omniglot"]
    with pytest.raises(SystemExit, match="unknown case"):
        bench.select_cases(["nope"])


def test_cases_use_the_experiments_configurations():
    S = bench.sizes(quick=False)
    assert S["sinusoid"] == configs.load(sinusoid.RECIPE)
    assert S["omniglot"] == configs.load("omniglot_5w1s_maml")
    reptile = configs.load("omniglot_5w1s_reptile")
    # Reptile's inner loop on the MAML case's problem (same meta-batch, so the rows compare)
    assert S["omniglot_reptile"]["meta_batch"] == S["omniglot"]["meta_batch"]
    assert all(S["omniglot_reptile"][k] == reptile[k] for k in ("algo", "inner_lr",
                                                                 "inner_steps", "outer_lr"))
    assert bench.sizes(quick=True)["sinusoid"]["hidden"] != S["sinusoid"]["hidden"]


@pytest.mark.parametrize("algo", ["maml", "reptile"])
def test_learners_get_the_experiments_batches(algo):
    """Reptile pools support and query itself: the bench hands every learner plain batches."""
    cfg = bench.sizes(quick=True)["sinusoid"]
    learner, batches = bench.sinusoid_learner(cfg, algo)
    expected, _ = sinusoid.build(algo, cfg)
    assert type(learner) is type(expected)
    assert batches[0].support_x.shape == (cfg["meta_batch"], cfg["shots"], 1)
    assert np.isfinite(learner.step(batches[0])["loss"])
    omni = bench.sizes(quick=True)["omniglot_reptile"]
    learner, batches = bench.conv_learner(omni, (10, 4), np.float32)
    assert batches[0].support_x.shape[:2] == (omni["meta_batch"], omni["ways"] * omni["shots"])
    assert learner.inner_steps == omni["inner_steps"] and learner.inner_optimizer == "adam"


def test_matmul_flop_counter():
    from autograd import Tensor, matmul
    a = Tensor(np.ones((3, 4, 5), np.float32))
    b = Tensor(np.ones((5, 6), np.float32))
    with bench.count_matmul_flops() as c:
        matmul(a, b)
    assert c == {"flops": 2 * 3 * 4 * 6 * 5, "calls": 1}


def test_cupy_backend_without_cupy_fails_clearly(tmp_path):
    out = tmp_path / "b.json"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.pop("TINYMETA_BACKEND", None)
    without_cupy = ("import runpy, sys; sys.modules['cupy'] = None; "       # as if CuPy were not installed
                    "sys.argv = ['bench', '--backend', 'cupy', '--quick', '--out', sys.argv[1]]; "
                    "runpy.run_module('experiments.bench', run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", without_cupy, str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    message = p.stderr.strip()
    assert message.startswith("bench: ") and "CuPy" in message and "not installed" in message
    assert "\n" not in message and "Traceback" not in message          # one clear sentence
    assert not out.exists()
