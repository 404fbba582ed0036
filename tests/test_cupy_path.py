"""What a GPU user meets on the CuPy backend and the NumPy backend never shows: index
arrays that CuPy would wrap around, statistics on the wrong device, deprecated CuPy calls,
host↔device traffic and synchronisations inside a training step.

Every test here needs CuPy (the ``cupy`` fixture skips it with the reason elsewhere). The
ones that count transfers and synchronisations read ``cupy.STATS``, which only the CPU
stand-in for CuPy keeps (``../shared/tools/cupy-standin``); on a real GPU they are skipped
with that reason. Counts are exact: the stand-in counts every ``.get()``, ``float()``,
``int()``, ``bool()`` of a device array as one synchronisation and every host array it
receives as one host→device copy.
"""
import json
import warnings

import numpy as np
import pytest

import autograd as ag
from autograd import Tensor
from autograd import backend as B
from autograd import functional as F
from helpers import host


@pytest.fixture
def on_cupy(cupy):
    """The CuPy backend for one test (whatever the session backend is)."""
    with ag.settings.using(backend="cupy"):
        yield cupy


@pytest.fixture
def counters(on_cupy):
    """``counted()``: a context that gives the stand-in's transfer and sync counts of its block."""
    if not hasattr(on_cupy, "STATS"):
        pytest.skip("counts host<->device traffic with the CuPy stand-in's cupy.STATS; real CuPy has none")

    class Counted:
        def __enter__(self):
            self.before = {k: on_cupy.STATS[k] for k in ("h2d", "d2h", "sync")}
            return self

        def __exit__(self, *exc):
            for k, v in self.before.items():
                setattr(self, k, on_cupy.STATS[k] - v)
    return Counted


# ----------------------------------------------------------------------------- indexing
def test_scatter_add_uses_no_deprecated_cupy_call(on_cupy):
    """``cupyx.scatter_add`` warns on every call from CuPy 14 on; ``xp.add.at`` does the same."""
    x = Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        y = ag.scatter_add(x, np.array([0, 0, 2]), (4, 2))
        (g,) = ag.grad((x[np.array([1, 1, 2])] * 2.0).sum(), [x])
    np.testing.assert_array_equal(host(y), [[2, 4], [0, 0], [4, 5], [0, 0]])
    np.testing.assert_array_equal(host(g), [[0, 0], [4, 4], [2, 2]])


def test_an_index_array_is_uploaded_once_per_node(counters):
    """A host index array goes to the device once, when getitem is called; its backward
    (a scatter-add) and the backward of that (a gather) reuse the node's device copy."""
    x = Tensor(np.arange(8.0).reshape(4, 2), requires_grad=True)
    index = np.array([3, 0, 3])
    with counters() as c:
        y = ag.getitem(x, index)
    assert c.h2d == 1 and c.sync == 0                     # checked on the host, then uploaded
    with counters() as c:
        (g,) = ag.grad((y * y).sum(), [x], create_graph=True)
        (gg,) = ag.grad((g * g).sum(), [x])
    assert c.h2d == 0 and c.sync == 0
    np.testing.assert_array_equal(host(g), [[0, 2], [0, 0], [0, 0], [24, 28]])   # 2·Σ y over repeats
    np.testing.assert_array_equal(host(gg), [[0, 8], [0, 0], [0, 0], [192, 224]])


def test_a_device_index_array_is_checked_with_one_sync(counters, on_cupy):
    x = Tensor(np.arange(8.0).reshape(4, 2))
    rows, cols = on_cupy.asarray([3, 0, 1]), on_cupy.asarray([1, 1, 0])
    with counters() as c:
        y = x[rows, cols]
    assert c.sync == 1 and c.h2d == 0 and c.d2h == 0
    np.testing.assert_array_equal(host(y), [7, 1, 2])


# ----------------------------------------------------------------------------- batch-norm state
@pytest.mark.parametrize("layer", ["batch_norm", "batch_norm_relu"])
def test_running_statistics_on_the_wrong_backend_are_one_sentence(on_cupy, layer):
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    gamma, beta = np.ones((2, 3)), np.zeros((2, 3))

    def run(rm, rv):
        if layer == "batch_norm":
            return F.batch_norm(x, gamma, beta, running_mean=rm, running_var=rv, tasks=True, channel_axis=1)
        return F.batch_norm_relu(x, gamma, beta, running_mean=rm, running_var=rv)
    msg = (f"{layer}: running_mean is a numpy.ndarray but the active backend is cupy, so it cannot be "
           "updated in place; make the running statistics on this backend (autograd.backend.from_numpy)")
    with pytest.raises(TypeError, match="^" + msg.replace("(", r"\(").replace(")", r"\)") + "$"):
        run(np.zeros(3), np.ones(3))
    rm, rv = on_cupy.zeros(3), on_cupy.ones(3)
    run(rm, rv)                                                   # device statistics: updated
    assert float(abs(rv - 1.0).max()) > 0
    with ag.settings.using(backend="numpy"), pytest.raises(TypeError, match=f"^{layer}: running_mean is a cupy"):
        run(rm, rv)


def test_conv4_moves_its_running_statistics_to_the_active_backend(on_cupy):
    """A Conv4 built on one backend and run on the other moves its own statistics."""
    from tinymeta.models import Conv4
    with ag.settings.using(backend="numpy"):
        model = Conv4(ways=2, filters=3, image_size=8, transductive=False)
        params = model.init(np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8))
    params = {k: Tensor(B.from_numpy(p.data)) for k, p in params.items()}
    model(params, Tensor(x), mode="train")
    assert all(isinstance(a, on_cupy.ndarray) for pair in model.running.values() for a in pair)
    assert not np.allclose(model.state_dict()["bn0.mean"], 0.0)


# ----------------------------------------------------------------------------- syncs in a step
def test_cross_entropy_checks_labels_without_waiting_for_the_device(counters, on_cupy):
    """Host labels are checked where they are; ``Labels`` carry their range; only labels
    that are already on the device cost one reduction and one transfer."""
    logits = Tensor(np.random.default_rng(0).standard_normal((2, 4, 3)))
    y = np.array([[0, 2, 1, 1], [2, 2, 0, 1]])
    expected = host(F.cross_entropy(logits, on_cupy.asarray(y)))
    for labels, syncs in ((y, 0), (F.Labels(y), 0), (Tensor(y), 1), (on_cupy.asarray(y), 1)):
        with counters() as c:
            loss = F.cross_entropy(logits, labels)
        assert c.sync == c.d2h == syncs, type(labels)
        np.testing.assert_array_equal(host(loss), expected)
    bad = F.Labels(np.array([[0, 3, 1, 1], [2, 2, 0, 1]]))
    with counters() as c, pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values in \[0, 3\]"):
        F.cross_entropy(logits, bad)
    assert c.sync == 0


def learners():
    from tinymeta.algorithms import ANIL, MAML, JointTraining, MetaSGD, ProtoNet, Reptile
    ce = F.cross_entropy
    return {
        "maml": lambda m, p: MAML(m, p, ce, inner_lr=0.4, inner_steps=2),
        "fomaml": lambda m, p: MAML(m, p, ce, inner_lr=0.4, inner_steps=1, first_order=True),
        "anil": lambda m, p: ANIL(m, p, ce, inner_lr=0.4, inner_steps=1),
        "metasgd": lambda m, p: MetaSGD(m, p, ce, inner_lr=0.4, inner_steps=1),
        "reptile": lambda m, p: Reptile(m, p, ce, inner_lr=0.01, inner_steps=2, inner_optimizer="adam"),
        "joint": lambda m, p: JointTraining(m, p, ce, inner_lr=0.01),
        "protonet": lambda m, p: ProtoNet(m, p),
    }


@pytest.mark.parametrize("name", list(learners()))
def test_a_training_step_waits_for_the_device_once(counters, name):
    """Omniglot's Conv4 (stride-2 convolutions, fused batch-norm): ``meta_gradients`` never
    reads the device; ``step`` reads the loss, the accuracy and whether every gradient is
    finite in one transfer, before the optimizer moves anything."""
    from tinymeta.models import Conv4
    from tinymeta.tasks import EpisodeSampler
    images = np.random.default_rng(0).standard_normal((10, 4, 28, 28))
    batch = EpisodeSampler(images, 5, 1, 1, rng=2).sample_batch(3)
    model = Conv4(ways=None if name == "protonet" else 5, filters=4)
    learner = learners()[name](model, model.init(np.random.default_rng(1)))
    learner.step(batch)                                     # a first step: nothing left to set up
    with counters() as c:
        learner.meta_gradients(batch)
    assert (c.sync, c.d2h) == (0, 0)
    # only the batch's arrays go up, never a Python number: support and query images and
    # labels; joint training pools them (2); ProtoNet sends all images, the query labels
    # and its class-averaging matrix (3)
    assert c.h2d == {"joint": 2, "protonet": 3}.get(name, 4)
    with counters() as c:
        metrics = learner.step(batch)
    assert (c.sync, c.d2h) == (1, 1)
    assert all(isinstance(v, float) for v in metrics.values())
    assert 0 <= metrics.get("accuracy", 0) <= 1 and (name == "joint") == ("accuracy" not in metrics)


# ----------------------------------------------------------------------------- episodes on the device
def device_and_host_samplers(seed=4, dtype=np.float32):
    from tinymeta.tasks import DeviceEpisodeSampler, EpisodeSampler
    images = np.random.default_rng(0).standard_normal((7, 5, 6, 6))
    return (DeviceEpisodeSampler(images, 3, 2, 1, rng=seed, dtype=dtype),
            EpisodeSampler(images, 3, 2, 1, rng=seed, dtype=dtype))


def assert_same_episodes(on_device, on_host):
    for field in ("support_x", "support_y", "query_x", "query_y", "classes"):
        a, b = getattr(on_device, field), getattr(on_host, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        np.testing.assert_array_equal(host(a), b, err_msg=field)


def test_the_device_sampler_draws_the_host_samplers_episodes(backend):
    """Same seed, same episodes, bit for bit (images cast once, on the device), batch after
    batch, and the same random stream: a state taken from one continues on the other."""
    device, hosted = device_and_host_samplers()
    for n in (1, 3, 2):
        batch = device.sample_batch(n)
        assert isinstance(batch.support_x, B.xp.ndarray) and isinstance(batch.support_y, np.ndarray)
        assert_same_episodes(batch, hosted.sample_batch(n))
    device.set_state(hosted.get_state())
    hosted.sample_batch(2)
    hosted.set_state(device.get_state())                   # hosted is back where device is
    assert_same_episodes(device.sample_batch(4), hosted.sample_batch(4))
    one = device.sample()                                  # a single episode: the host path
    assert isinstance(one.support_x, np.ndarray)
    with pytest.raises(TypeError, match="DeviceEpisodeSampler: class_images must be one class-major array"):
        type(device)([np.zeros((4, 3))] * 3, 2, 1, 1)


def test_a_device_batch_costs_one_copy_and_trains_like_a_host_batch(counters):
    """One host→device copy per batch (the row numbers); the learners take device batches
    (Reptile merges support and query sets on the device) and give the host batch's loss
    and gradients exactly."""
    from tinymeta.algorithms import MAML, Reptile
    from tinymeta.models import Conv4
    device, hosted = device_and_host_samplers(seed=5, dtype=np.float64)
    with counters() as c:
        batch = device.sample_batch(3)
    assert (c.h2d, c.sync, c.d2h) == (1, 0, 0)
    same = hosted.sample_batch(3)
    model = Conv4(ways=3, filters=4, image_size=6)
    params = model.init(np.random.default_rng(1), dtype=np.float64)
    for make in (lambda: MAML(model, params, F.cross_entropy, inner_lr=0.1),
                 lambda: Reptile(model, params, F.cross_entropy, inner_lr=0.1, inner_steps=2)):
        (l1, g1), (l2, g2) = make().meta_gradients(batch), make().meta_gradients(same)
        assert float(l1.data) == float(l2.data)
        for k in g1:
            np.testing.assert_array_equal(host(g1[k]), host(g2[k]), err_msg=k)


# ----------------------------------------------------------------------------- experiments
def test_the_sinusoid_experiment_runs_on_cupy_as_on_numpy(tmp_path, on_cupy):
    """A tiny float64 run of every sinusoid method on CuPy (training, evaluation, figures)
    gives NumPy's numbers: the same tasks and weights, arithmetic that differs at most by
    rounding (rtol 1e-8 on every mean MSE)."""
    from experiments import sinusoid
    argv = ["--iterations", "4", "--eval-tasks", "6", "--eval-steps", "2", "--dtype", "float64", "--quiet"]
    on_gpu = sinusoid.main(argv + ["--out", tmp_path / "cupy"])
    with ag.settings.using(backend="numpy"):
        on_cpu = sinusoid.main(argv + ["--out", tmp_path / "numpy"])
    for name in ("figure2.png", "figure3.png"):
        assert (tmp_path / "cupy" / name).read_bytes()[:4] == b"\x89PNG"
    assert set(on_gpu["methods"]) == set(sinusoid.METHODS)
    for method, res in on_gpu["methods"].items():
        for k in ("K5", "K10"):
            np.testing.assert_allclose(res["mse"][k]["mean"], on_cpu["methods"][method]["mse"][k]["mean"],
                                       rtol=1e-8, err_msg=f"{method} {k}")


def test_the_gpu_script_runs_every_step_in_its_quick_form(tmp_path, on_cupy, omniglot_data_dir):
    """tools/gpu_check.sh, prepared for a later session with a GPU, runs here first: every
    step in its quick form (a few tests, the bench's quick sizes, 20 training iterations),
    the peers skipped where torch and jax are missing, one summary line per step."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.sh"
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path), GPU_CHECK_QUICK="1",
               TINYMETA_DATA=str(omniglot_data_dir), TMPDIR=str(tmp_path))
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (tmp_path / "summary.txt").read_text()
    for step in ("suite", "bench", "peers", "train"):
        assert f"({step} took " in summary, summary
    assert "suite: exit 0 (" in summary and " passed" in summary, summary
    assert "bench: exit 0; " in summary and "omniglot_maml_f32 " in summary, summary
    assert "train: exit 0; 20 iterations in " in summary and " it/s after iteration 2" in summary, summary
    for peer in json.loads((tmp_path / "peers.json").read_text()):
        assert "result" in peer or "is not importable" in peer["skipped"], peer
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        ["summary.txt", "suite.txt", "bench.txt", "bench.json", "peers.txt", "peers.json", "train.txt"]
        + (["peers.err"] if (tmp_path / "peers.err").exists() else []))
