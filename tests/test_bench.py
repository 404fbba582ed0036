"""Tests for experiments/bench.py: a ``--quick`` run of every case writes valid JSON with the
expected keys and positive finite times; the cases use the experiments' own configurations
and learners; ``--backend cupy`` without CuPy fails with the backend's clear message;
``--peers`` against fake peer scripts records rounds, ratios and each process's own peak RSS,
and a missing, failing or hanging peer is one line and exit 0. Speed is never asserted here."""
import contextlib
import io
import json
import math
import os
import statistics
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
        if c.get("compiled"):                                     # one kernel: no product counted
            assert c["gflop"] is None and c["gflops"] is None, name
        else:
            assert c["gflop"] > 0 and math.isfinite(c["gflops"]), name   # every other case multiplies matrices
    compiled = {name for name in expected if r["cases"][name].get("compiled")}
    on_cpu_with_numba = r["machine"]["kernels"] == "numba" and r["machine"]["backend"] == "numpy"
    assert compiled == ({"sinusoid_maml", "sinusoid_fomaml"} if on_cpu_with_numba else set())
    assert r["cases"]["omniglot_maml_f64"]["dtype"] == "float64"
    assert r["cases"]["omniglot_maml_f32"]["gflop"] > 0

    for name in ("hvp_omniglot", "kernels_numpy_vs_numba", "loop_vs_batched_sinusoid",
                 "loop_vs_batched_omniglot", "workers_1_vs_all"):
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


# ------------------------------------------------------------------------- --peers, with fake peers
# Tiny stand-ins for ../shared/peers' scripts: they print the real scripts' last line (one JSON
# object with sec_per_iter) and hold a known amount of memory, so every number is checkable.
FAKE_TORCH = '''import json, sys
block = bytearray(400 * 2**20)
for i in range(0, len(block), 4096):       # touch every page: resident
    block[i] = 1
print("torch 2.13 (fake)")
print(json.dumps({"workload": sys.argv[sys.argv.index("--workload") + 1], "argv": sys.argv[1:],
                  "sec_per_iter": 0.004, "timing": {"median": 0.004}}))
'''
FAKE_JAX = '''import json, sys
print(json.dumps({"argv": sys.argv[1:], "sec_per_iter": 0.001, "timing": {"median": 0.001}}))
'''
FAILING = 'import sys; print("loading"); sys.exit("torch exploded: no such op")\n'
HANGING = 'import time; time.sleep(60)\n'
MiB = 2 ** 20


def fake_peers(folder, torch=FAKE_TORCH, jax=FAKE_JAX):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "torch_maml.py").write_text(torch)
    (folder / "jax_maml.py").write_text(jax)
    return folder


def run_peers_bench(tmp_path, capsys, cases, peers_dir, peer_python=sys.executable, *extra):
    out = tmp_path / "peers.json"
    rc = bench.main(["--quick", "--repeats", "1", "--warmup", "1", "--cases", *cases, "--peers",
                     "--peers-dir", str(peers_dir), "--peer-python", str(peer_python),
                     "--out", str(out), *extra])
    printed = capsys.readouterr().out
    return rc, json.loads(out.read_text()), printed


@pytest.fixture(scope="module")
def peers_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("peers")
    folder = fake_peers(tmp / "peers")
    out = tmp / "peers.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = bench.main(["--quick", "--repeats", "1", "--warmup", "1", "--cases", "sinusoid_maml",
                         "omniglot_maml_f32", "--peers", "--peers-dir", str(folder), "--peer-python",
                         sys.executable, "--rounds", "2", "--out", str(out)])
    return rc, json.loads(out.read_text()), buf.getvalue()


def test_peers_rounds_ratios_and_peak_rss(peers_run):
    rc, r, printed = peers_run
    assert rc == 0
    section = r["peers"]
    assert section["settings"]["rounds"] == 2 and section["unavailable"] is None
    assert list(section["cases"]) == ["sinusoid_maml", "omniglot_maml_f32"]
    for case, c in section["cases"].items():
        ours = c["ours"]
        assert len(ours["seconds"]) == 2 and all(t > 0 for t in ours["seconds"])
        assert "--timing-only" in ours["command"] and "--quick" in ours["command"]
        assert set(c["peers"]) == {"pytorch", "jax"}
        for name, peer_s in (("pytorch", 0.004), ("jax", 0.001)):
            p = c["peers"][name]
            assert p["available"] and p["reason"] is None
            assert p["seconds"] == [peer_s, peer_s]                  # the fake's sec_per_iter, each round
            assert p["ratios"] == pytest.approx([t / peer_s for t in ours["seconds"]])
            assert p["median_ratio"] == pytest.approx(statistics.median(p["ratios"]))
            assert p["ratio_min"] <= p["median_ratio"] <= p["ratio_max"]
            assert len(p["peak_rss_bytes"]) == 2
        # Each process's own peak: the fake PyTorch holds 400 MiB, the fake JAX nothing, our
        # side NumPy and Numba (~160 MiB). A max over all children (RUSAGE_CHILDREN), or a
        # child forked straight from this big test process, would give JAX >= 400 MiB.
        assert all(b >= 400 * MiB for b in c["peers"]["pytorch"]["peak_rss_bytes"])
        assert all(0 < b < 60 * MiB for b in c["peers"]["jax"]["peak_rss_bytes"])
        assert all(60 * MiB < b < 400 * MiB for b in ours["peak_rss_bytes"]), ours["peak_rss_bytes"]
        torch = c["peers"]["pytorch"]
        assert torch["memory_ratio"] == pytest.approx(ours["peak_rss_max_bytes"] / torch["peak_rss_max_bytes"])
    # the workloads as side_by_side.py runs them
    omni = section["cases"]["omniglot_maml_f32"]["peers"]
    sin = section["cases"]["sinusoid_maml"]["peers"]

    def flag(cmd, name):
        return cmd[cmd.index(name) + 1]
    assert flag(omni["pytorch"]["command"], "--impl") == "loop"
    assert flag(omni["jax"]["command"], "--impl") == "unroll"
    assert flag(sin["pytorch"]["command"], "--impl") == "vmap" == flag(sin["jax"]["command"], "--impl")
    assert flag(omni["pytorch"]["command"], "--workload") == "omniglot"
    assert flag(omni["pytorch"]["command"], "--dtype") == "float32"
    assert flag(omni["pytorch"]["command"], "--iters") == "1"

    rows = [ln for ln in printed.splitlines() if ln.startswith("omniglot_maml_f32") and " pytorch " in ln]
    assert len(rows) == 1 and f"{omni['pytorch']['median_ratio']:.2f}" in rows[0]
    assert bench.fmt_bytes(omni["pytorch"]["peak_rss_max_bytes"]) in rows[0]
    names = {t["name"]: t for t in r["targets"]}
    assert names["omniglot_maml_f32_vs_pytorch"]["threshold"] == 0.5
    assert names["omniglot_maml_f32_vs_pytorch"]["value"] == omni["pytorch"]["median_ratio"]
    assert names["sinusoid_maml_vs_jax"]["threshold"] == 1.0
    assert names["omniglot_maml_f32_rss_vs_pytorch"]["value"] == omni["pytorch"]["memory_ratio"]
    assert all(t["status"] in ("PASS", "BELOW") for t in r["targets"])


def test_peer_workloads_and_commands():
    assert bench.peer_commands("omniglot_reptile_f32", "/p", "py", 5, 1) == {}
    mini = bench.peer_commands("miniimagenet_maml_f32", "/p", "py", 5, 1)
    assert list(mini) == ["pytorch"]                     # jax_maml.py has no mini-ImageNet
    assert mini["pytorch"][:2] == ["py", str(Path("/p") / "torch_maml.py")]
    f64 = bench.peer_commands("omniglot_fomaml_f64", "/p", "py", 5, 1)["jax"]
    assert f64[f64.index("--mode") + 1] == "fomaml" and f64[f64.index("--dtype") + 1] == "float64"
    assert set(bench.PEER_WORKLOADS) <= set(bench.ALL_CASES)


def test_peer_output_parsing():
    assert bench.peer_seconds('warming up\n{"sec_per_iter": 0.25, "timing": {}}\n') == 0.25
    with pytest.raises(ValueError, match="no JSON line with sec_per_iter"):
        bench.peer_seconds('{"train_sec_per_iter": 1.0}\n')
    with pytest.raises(ValueError, match="positive"):
        bench.peer_seconds('{"sec_per_iter": NaN}\n')


@pytest.mark.parametrize("missing", ["python", "folder"])
def test_peers_missing_is_one_line_and_exit_0(tmp_path, capsys, missing):
    folder = fake_peers(tmp_path / "peers")
    py = sys.executable
    if missing == "python":
        py = tmp_path / "no-venv" / "bin" / "python"
    else:
        folder = tmp_path / "nowhere"
    rc, r, printed = run_peers_bench(tmp_path, capsys, ["sinusoid_maml"], folder, py)
    assert rc == 0
    said = [ln for ln in printed.splitlines() if ln.startswith("peers unavailable: ")]
    assert len(said) == 1 and str(py if missing == "python" else folder) in said[0]
    assert "Traceback" not in printed
    c = r["peers"]["cases"]["sinusoid_maml"]
    assert c["ours"] is None                                       # no round was run
    assert all(not p["available"] and p["reason"] == r["peers"]["unavailable"] for p in c["peers"].values())
    rows = [ln for ln in printed.splitlines() if ln.startswith("sinusoid_maml ") and "peer unavailable: " in ln]
    assert len(rows) == 2
    assert "sinusoid_maml" in r["cases"]                            # the bench itself went on
    assert not any(t["name"].endswith("_vs_jax") for t in r["targets"])


def test_failing_and_hanging_peers_are_reported_and_the_bench_goes_on(tmp_path, capsys):
    folder = fake_peers(tmp_path / "peers", torch=FAILING, jax=HANGING)
    rc, r, printed = run_peers_bench(tmp_path, capsys, ["sinusoid_maml"], folder, sys.executable,
                                     "--rounds", "2", "--peer-timeout", "3")
    assert rc == 0
    lines = printed.splitlines()
    assert sum("pytorch unavailable: exit status 1: torch exploded: no such op" in ln for ln in lines) == 1
    assert sum("jax unavailable: timed out after 3 s" in ln for ln in lines) == 1
    c = r["peers"]["cases"]["sinusoid_maml"]
    assert len(c["ours"]["seconds"]) == 1          # a failed peer is not retried: no second round
    assert not c["peers"]["pytorch"]["available"] and "torch exploded" in c["peers"]["pytorch"]["reason"]
    assert not c["peers"]["jax"]["available"] and "timed out" in c["peers"]["jax"]["reason"]
    row = [ln for ln in lines if ln.startswith("sinusoid_maml ") and " jax " in ln]
    assert row and "peer unavailable: timed out after 3 s" in row[0]
