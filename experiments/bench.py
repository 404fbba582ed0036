"""Speed benchmark: seconds per meta-iteration, peak memory and achieved GFLOP/s.

    python -m experiments.bench                                   # everything (several minutes)
    python -m experiments.bench --cases sinusoid hvp --repeats 5  # a subset
    python -m experiments.bench --quick --out /tmp/b.json         # tiny sizes (tests)
    python -m experiments.bench --backend cupy                    # on the GPU

The configurations are the experiments' own, never retyped here: the sinusoid cases take
``experiments/sinusoid.py``'s recipe and build their learners with its method table
(``sinusoid.build``); the Conv4 cases take the recipes in ``experiments/configs/``.
``--quick`` shrinks them for tests (``QUICK``). Every case runs ``learner.step(batch)``.

Cases (``--cases`` takes names, group names or shell patterns such as ``'omniglot_*'``):

* ``sinusoid``: the MAML paper's sinusoid setting (MLP 1-40-40-1, meta-batch 25, K = 10
  support + 10 query, 1 inner step α = 0.01, float32): ``sinusoid_maml`` (second order),
  ``sinusoid_fomaml``, ``sinusoid_reptile`` (5 SGD steps of 0.02 on support+query).
* ``omniglot``: ``configs/omniglot_5w1s_maml.json`` (Conv4, 64 filters, 28×28, 5-way 1-shot,
  15 queries per class, meta-batch 32, α = 0.4, 1 step) on synthetic random images from an
  ``episode_sampler`` over a random [100, 20, 28, 28] array (with ``--backend cupy`` the
  images are on the GPU, as in training, so the step excludes their upload): MAML, FOMAML,
  and Reptile with the inner loop of ``configs/omniglot_5w1s_reptile.json`` (5 Adam steps on
  support+query) at the same meta-batch; float32 and float64:
  ``omniglot_{maml,fomaml,reptile}_{f32,f64}``.
* ``miniimagenet``: ``configs/miniimagenet_5w1s_maml.json`` (Conv4 3×84×84, 32 filters,
  max-pool, 5-way 1-shot, 15 queries, 5 inner steps α = 0.01, meta-batch 4, second-order
  MAML, float32): ``miniimagenet_maml_f32``.
* ``hvp``: one ``autograd.hvp`` against one ``autograd.grad`` (each with its forward pass)
  of the Omniglot Conv4 cross-entropy on 80 images, float32: ``hvp_omniglot``. The two run
  alternately (grad, hvp, grad, hvp, ...; 3·repeats rounds) and the ratio is the
  median of the per-round ratios, so a slow spell of a shared machine hits both sides.
* ``ratios``: ``kernels_numpy_vs_numba`` (Omniglot MAML f32 step),
  ``loop_vs_batched_sinusoid`` (sinusoid MAML), ``loop_vs_batched_omniglot`` (Omniglot MAML
  f32, meta-batch 8 for both sides: the loop is slow), ``numba_threads_1_vs_2``
  (Omniglot MAML f32). A ratio reuses a measurement of the same configuration made earlier
  in the run.

Method. Each measurement builds the learner once and draws its batches beforehand (task
sampling is not timed); ``--warmup`` iterations (Numba compilation happens there) are
followed by ``--repeats`` timed ones; the median is reported, with min and max. One more
iteration, untimed, counts the floating-point operations of every matrix product executed
(``autograd.ops.linalg.matmul_arrays`` instrumented: 2·prod(out.shape)·k) --
**matrix-product flops only**, so convolutions (im2col + matmul) and linear layers count,
element-wise work, batch-norm and pooling do not -- and another measures the peak memory
with ``tracemalloc`` (NumPy reports its allocations to it; with ``--backend cupy`` the
peak of CuPy's default memory pool is used instead, sampled at the end of the iteration).
Achieved GFLOP/s = those flops / the median time; it is compared with this machine's
float32 and float64 ``matmul`` of two 2048×2048 squares (median of 5), measured in the
same run. ``--max-seconds`` (default 120) caps a measurement: when one warm-up iteration
shows the repeats would take longer, fewer are run (never fewer than 1); the row says how
many.

The BLAS runs one thread unless the user set a count (``experiments.one_blas_thread``, run
when the package is imported), as in the experiments: on the 2-core machine a threaded BLAS
fights Numba's threads (see ``autograd.settings``). The matmul peak is
then a one-thread peak too; the JSON records the settings.
"""
import argparse
import fnmatch
import io
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from autograd.allocator import reuse_large_allocations
import numpy as np

import autograd
from autograd import backend, kernels, settings
from autograd import functional as F
from autograd.ops import linalg

from tinymeta.files import write_text
from tinymeta.models import Conv4

from tinymeta.tasks import episode_sampler

from . import configs, omniglot, sinusoid

DEFAULT_OUT = Path("runs/bench/bench.json")
FLOP_NOTE = ("GFLOP counts the matrix products only (autograd.ops.linalg.matmul_arrays: "
             "2*prod(out.shape)*a.shape[-1]); element-wise ops, batch-norm, pooling, "
             "im2col/col2im are not counted")
GROUPS = {
    "sinusoid": ["sinusoid_maml", "sinusoid_fomaml", "sinusoid_reptile"],
    "omniglot": [f"omniglot_{a}_{d}" for d in ("f32", "f64") for a in ("maml", "fomaml", "reptile")],
    "miniimagenet": ["miniimagenet_maml_f32"],
    "hvp": ["hvp_omniglot"],
    "ratios": ["kernels_numpy_vs_numba", "loop_vs_batched_sinusoid", "loop_vs_batched_omniglot",
               "numba_threads_1_vs_2"],
}
ALL_CASES = [name for group in GROUPS.values() for name in group]
DTYPES = {"f32": np.float32, "f64": np.float64}


# ------------------------------------------------------------------------- sizes

RECIPES = {"sinusoid": sinusoid.RECIPE, "omniglot": "omniglot_5w1s_maml",
           "omniglot_reptile": "omniglot_5w1s_reptile", "mini": "miniimagenet_5w1s_maml"}
REPTILE_INNER = ("algo", "inner_lr", "inner_steps", "outer_lr")
# The bench's own sizes: synthetic classes × images per class, the loop's meta-batch, the
# HVP batch and the matmul squares.
OWN = {"omniglot_data": (100, 20), "mini_data": (20, 20), "omniglot_loop_tasks": 8, "hvp_batch": 80,
       "matmul_n": 2048}
QUICK = {"sinusoid": {"hidden": [8, 8], "meta_batch": 2, "shots": 3, "queries": 3},
         "omniglot": {"filters": 4, "image_size": 12, "meta_batch": 2, "query": 2},
         "mini": {"filters": 4, "image_size": 16, "meta_batch": 2, "query": 2, "inner_steps": 2},
         "omniglot_data": (10, 4), "mini_data": (10, 4), "omniglot_loop_tasks": 2, "hvp_batch": 8,
         "matmul_n": 128}


def sizes(quick):
    """Each case family's configuration (the recipe, shrunk by ``--quick``) and the bench's
    own sizes."""
    S = {**{family: configs.load(name) for family, name in RECIPES.items()}, **OWN}
    for key, value in (QUICK.items() if quick else ()):
        S[key] = {**S[key], **value} if isinstance(value, dict) else value
    S["omniglot_reptile"] = {**S["omniglot"], **{k: S["omniglot_reptile"][k] for k in REPTILE_INNER}}
    return S


# ------------------------------------------------------------------------- timing helpers


def sync():
    """Wait for the device (CuPy) so that timers measure finished work."""
    if backend.name == "cupy":
        backend.xp.cuda.Device().synchronize()


@contextmanager
def count_matmul_flops():
    """Count 2·prod(out.shape)·k for every matrix product executed inside the block
    (``autograd.ops.linalg.matmul_arrays``: MatMul, Linear and LinearGrad all go through it)."""
    counter = {"flops": 0, "calls": 0}
    original = linalg.matmul_arrays

    def counted(a, b):
        out = original(a, b)
        counter["flops"] += 2 * int(np.prod(out.shape, dtype=np.int64)) * int(a.shape[-1])
        counter["calls"] += 1
        return out

    linalg.matmul_arrays = counted
    try:
        yield counter
    finally:
        linalg.matmul_arrays = original


def peak_memory(fn):
    """(peak bytes, method) of one call of fn."""
    if backend.name == "cupy":
        pool = backend.xp.get_default_memory_pool()
        pool.free_all_blocks()
        fn()
        sync()
        return int(pool.total_bytes()), "cupy default memory pool total_bytes after one iteration"
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return int(peak - base), "tracemalloc peak of one iteration (NumPy allocations included)"


def measure(step, warmup, repeats, max_seconds, flops=True, memory=True):
    """Time ``step()`` (called with an iteration index): median of ``repeats`` after ``warmup``."""
    it = 0
    warm_times = []
    for _ in range(warmup):
        warm_times.append(timed(step, it))
        it += 1
    planned = repeats
    if warm_times and max_seconds and repeats > 1:
        fits = int(max_seconds // max(warm_times[-1], 1e-9))
        repeats = max(1, min(repeats, fits))
    times = []
    for _ in range(repeats):
        times.append(timed(step, it))
        it += 1
    out = summary(times, planned, warmup)
    add_flops_and_memory(out, step, it, flops, memory)
    return out


def timed(step, it):
    sync()
    t0 = time.perf_counter()
    step(it)
    sync()
    return time.perf_counter() - t0


def summary(times, planned, warmup):
    return {"seconds": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": len(times), "planned_repeats": planned, "warmup": warmup, "times": times}


def add_flops_and_memory(out, step, it, flops, memory):
    """One untimed iteration counting matrix-product flops, one measuring peak memory."""
    if flops:
        with count_matmul_flops() as counter:
            step(it)
            sync()
        it += 1
        out["gflop"] = counter["flops"] / 1e9
        out["matmul_calls"] = counter["calls"]
        out["gflops"] = out["gflop"] / out["seconds"] if out["seconds"] > 0 else float("nan")
    if memory:
        out["peak_bytes"], out["peak_method"] = peak_memory(lambda: step(it))


def measure_interleaved(steps, warmup, rounds):
    """Time several steps in alternation (a, b, a, b, ...): a slow spell of the machine then
    hits both sides of a ratio alike. Returns {name: summary} and the per-round ratios
    time(second) / time(first)."""
    names = list(steps)
    times = {k: [] for k in names}
    for r in range(warmup + rounds):
        for k in names:
            t = timed(steps[k], r)
            if r >= warmup:
                times[k].append(t)
    out = {k: summary(times[k], rounds, warmup) for k in names}
    for k in names:
        add_flops_and_memory(out[k], steps[k], warmup + rounds, True, True)
    paired = [b / a for a, b in zip(times[names[0]], times[names[1]])]
    return out, paired


def using_kernels(name):
    return settings.using(kernels=name)


def numba_threads():
    return settings.current()["numba_threads"]


@contextmanager
def using_numba_threads(n):
    n = max(1, min(n, kernels.numba_pool_size()))
    with settings.using(numba_threads=n):
        yield n


# ------------------------------------------------------------------------- workloads


def sinusoid_learner(cfg, algo, batched=True):
    """A learner of experiments/sinusoid.py's method table and four of its training batches."""
    learner, tasks = sinusoid.build(algo, cfg, batched)
    return learner, [tasks.sample_batch(cfg["meta_batch"]) for _ in range(4)]


CONV_MODEL = ("in_channels", "filters", "image_size", "max_pool")      # Conv4's options in a recipe


def conv_learner(cfg, data, dtype, batched=True, tasks=None, seed=0):
    """The Conv4 learner of a recipe and three batches of episodes over synthetic random
    images, ``data`` = (classes, images per class)."""
    model = Conv4(cfg["ways"], **{k: cfg[k] for k in CONV_MODEL if k in cfg})
    channels = () if model.in_channels == 1 else (model.in_channels,)
    images = np.random.default_rng(seed).random((*data, *channels, model.image_size, model.image_size),
                                                dtype=np.float32)
    params = model.init(np.random.default_rng(seed + 1), dtype=dtype)
    learner = omniglot.LEARNERS[cfg["algo"]](model, params, cfg, batched=batched)
    sampler = episode_sampler(images, ways=cfg["ways"], shots=cfg["shots"], queries=cfg["query"],
                              rng=seed + 2, dtype=dtype)                 # on CuPy: images on the GPU
    return learner, [sampler.sample_batch(cfg["meta_batch"] if tasks is None else tasks) for _ in range(3)]


def describe_sinusoid(cfg, algo):
    inner = (f"{cfg['reptile_inner_steps']} SGD steps on support+query" if algo == "reptile"
             else f"{cfg['inner_steps']} inner step{'s' * (cfg['inner_steps'] != 1)}")
    return f"MLP {'-'.join(map(str, [1, *cfg['hidden'], 1]))}, K={cfg['shots']}, {inner}"


def describe_conv(cfg):
    s, pool = cfg["image_size"], " max-pool" if cfg.get("max_pool") else ""
    inner = (f"{cfg['inner_steps']} Adam steps on support+query"
             if cfg["algo"] == "reptile" else f"{cfg['inner_steps']} inner step{'s' * (cfg['inner_steps'] != 1)}")
    return (f"Conv4 {cfg.get('in_channels', 1)}x{s}x{s} {cfg['filters']} filters{pool}, "
            f"{cfg['ways']}-way {cfg['shots']}-shot {cfg['query']}q, {inner}")


def learner_step(learner, batches):
    return lambda i: learner.step(batches[i % len(batches)])


# ------------------------------------------------------------------------- the run


class Bench:
    def __init__(self, args):
        self.args = args
        self.S = sizes(args.quick)
        self.cache = {}       # configuration key -> measurement (reused by the ratios)
        self.cases = {}
        self.ratios = {}

    def log(self, msg):
        print(msg, flush=True)

    def run_measure(self, key, label, make_step, flops=True, memory=True):
        if key in self.cache:
            self.log(f"  {label}: reusing the measurement made earlier in this run")
            return self.cache[key]
        self.log(f"  {label}: warm-up {self.args.warmup}, repeats {self.args.repeats} ...")
        step = make_step()
        m = measure(step, self.args.warmup, self.args.repeats, self.args.max_seconds, flops, memory)
        m["kernels"] = kernels.kernels_name()
        m["numba_threads"] = numba_threads()
        self.cache[key] = m
        self.log(f"  {label}: {fmt_time(m['seconds'])}/iter (median of {m['repeats']})")
        return m

    # --- meta-learning steps ----------------------------------------------------------
    def sinusoid(self, algo, batched=True):
        cfg = self.S["sinusoid"]
        key = ("sinusoid", algo, batched, kernels.kernels_name(), numba_threads())

        def make():
            learner, batches = sinusoid_learner(cfg, algo, batched)
            return learner_step(learner, batches)

        m = dict(self.run_measure(key, f"sinusoid {algo} ({'task axis' if batched else 'loop'})", make))
        m.update(dtype=cfg["dtype"], meta_batch=cfg["meta_batch"], batched=batched,
                 config=describe_sinusoid(cfg, algo))
        return m

    def conv(self, kind, algo, dtype, batched=True, tasks=None):
        key = (kind, algo, np.dtype(dtype).name, batched, tasks, kernels.kernels_name(), numba_threads())
        cfg = self.S[f"{kind}_reptile"] if algo == "reptile" else {**self.S[kind], "algo": algo}
        data = self.S[f"{kind}_data"]

        def make():
            learner, batches = conv_learner(cfg, data, dtype, batched, tasks)
            return learner_step(learner, batches)

        label = f"{kind} {algo} {np.dtype(dtype).name} ({'task axis' if batched else 'loop'}" \
                f"{'' if tasks is None else f', meta-batch {tasks}'}, {kernels.kernels_name()} kernels)"
        m = dict(self.run_measure(key, label, make))
        m.update(dtype=np.dtype(dtype).name, meta_batch=cfg["meta_batch"] if tasks is None else tasks,
                 batched=batched, config=describe_conv(cfg))
        return m

    def hvp(self):
        """Seconds of one hvp and one grad of the Omniglot Conv4 cross-entropy."""
        c, n = self.S["omniglot"], self.S["hvp_batch"]
        model = Conv4(c["ways"], in_channels=1, filters=c["filters"], image_size=c["image_size"])
        params = model.init(np.random.default_rng(0), dtype=np.float32)
        names = list(params)
        rng = np.random.default_rng(1)
        size = c["image_size"]
        x = autograd.Tensor(backend.xp.asarray(rng.random((n, 1, size, size), dtype=np.float32)))
        y = autograd.Tensor(backend.xp.asarray(rng.integers(0, c["ways"], size=n)))
        vs = [backend.xp.asarray(rng.standard_normal(params[k].shape).astype(np.float32)) for k in names]

        def loss(*ps):
            return F.cross_entropy(model(dict(zip(names, ps)), x), y)

        def grad_step(i):
            leaves = [autograd.Tensor(params[k].data, requires_grad=True) for k in names]
            return autograd.grad(loss(*leaves), leaves)

        def hvp_step(i):
            return autograd.hvp(loss, [params[k].data for k in names], vs)

        rounds = 3 * self.args.repeats                # each is ~0.1 s: more rounds cost little
        self.log(f"  grad and hvp ({n} images), interleaved: warm-up {max(self.args.warmup, 1)}, "
                 f"{rounds} rounds ...")
        m, paired = measure_interleaved({"grad": grad_step, "hvp": hvp_step},
                                        max(self.args.warmup, 1), rounds)
        for k in m:
            m[k]["kernels"], m[k]["numba_threads"] = kernels.kernels_name(), numba_threads()
        self.log(f"  grad {fmt_time(m['grad']['seconds'])}, hvp {fmt_time(m['hvp']['seconds'])} "
                 f"(medians of {rounds}); hvp/grad per round: median {statistics.median(paired):.2f}, "
                 f"range {min(paired):.2f}-{max(paired):.2f}")
        return m["grad"], m["hvp"], paired

    # --- the cases ------------------------------------------------------------------------
    def run_case(self, name):
        self.log(f"[{name}]")
        if name.startswith("sinusoid_"):
            self.cases[name] = self.sinusoid(name.split("_")[1])
        elif name.startswith("omniglot_"):
            _, algo, d = name.split("_")
            self.cases[name] = self.conv("omniglot", algo, DTYPES[d])
        elif name == "miniimagenet_maml_f32":
            self.cases[name] = self.conv("mini", "maml", np.float32)
        elif name == "hvp_omniglot":
            g, h, paired = self.hvp()
            ratio = statistics.median(paired)
            self.ratios[name] = {"numerator": "hvp", "denominator": "grad", "ratio": ratio,
                                 "numerator_s": h["seconds"], "denominator_s": g["seconds"],
                                 "numerator_repeats": h["repeats"], "denominator_repeats": g["repeats"],
                                 "paired_ratios": paired, "ratio_min": min(paired), "ratio_max": max(paired),
                                 "note": f"Omniglot Conv4 cross-entropy, {self.S['hvp_batch']} images, "
                                         "float32, each with its forward pass; grad and hvp alternate, "
                                         "ratio = median over rounds of hvp/grad"}
            self.cases["hvp_omniglot.grad"] = dict(g, dtype="float32", meta_batch=None, batched=None,
                                                   config=f"grad of Conv4 CE, {self.S['hvp_batch']} images")
            self.cases["hvp_omniglot.hvp"] = dict(h, dtype="float32", meta_batch=None, batched=None,
                                                  config=f"hvp of Conv4 CE, {self.S['hvp_batch']} images")
        elif name == "kernels_numpy_vs_numba":
            with using_kernels("numba"):
                got = kernels.kernels_name()
                fast = self.conv("omniglot", "maml", np.float32)
            with using_kernels("numpy"):
                slow = self.conv("omniglot", "maml", np.float32)
            note = "Omniglot MAML step float32, meta-batch %d" % fast["meta_batch"]
            if got != "numba":
                note += " (Numba unavailable: both sides ran the NumPy kernels)"
            self.add_ratio(name, "numpy kernels", slow, "numba kernels", fast, note)
        elif name == "loop_vs_batched_sinusoid":
            batched = self.sinusoid("maml", batched=True)
            loop = self.sinusoid("maml", batched=False)
            self.add_ratio(name, "loop", loop, "task axis", batched,
                           f"sinusoid MAML step, meta-batch {batched['meta_batch']}")
        elif name == "loop_vs_batched_omniglot":
            T = self.S["omniglot_loop_tasks"]
            batched = self.conv("omniglot", "maml", np.float32, batched=True, tasks=T)
            loop = self.conv("omniglot", "maml", np.float32, batched=False, tasks=T)
            self.add_ratio(name, "loop", loop, "task axis", batched,
                           f"Omniglot MAML step float32, meta-batch {T} (smaller than 32: the "
                           "loop is slow)")
        elif name == "numba_threads_1_vs_2":
            try:
                import numba  # noqa: F401
            except ImportError:
                self.log("  Numba is not installed: skipped")
                return
            with using_kernels("numba"):
                with using_numba_threads(1):
                    one = self.conv("omniglot", "maml", np.float32)
                with using_numba_threads(2) as n2:
                    two = self.conv("omniglot", "maml", np.float32)
            note = "Omniglot MAML step float32; ratio = time(1 thread) / time(2 threads), > 1 means 2 help"
            if n2 < 2:
                note += f" (NUMBA_NUM_THREADS caps at {n2}: both sides ran 1 thread)"
            self.add_ratio(name, "1 Numba thread", one, "2 Numba threads", two, note)
        else:
            raise ValueError(name)

    def add_ratio(self, name, num_label, num, den_label, den, note):
        self.ratios[name] = {"numerator": num_label, "denominator": den_label,
                             "ratio": num["seconds"] / den["seconds"],
                             "numerator_s": num["seconds"], "denominator_s": den["seconds"],
                             "numerator_repeats": num["repeats"], "denominator_repeats": den["repeats"],
                             "note": note}


# ------------------------------------------------------------------------- machine, matmul peak


def matmul_peak(n, repeats=5):
    """GFLOP/s of xp.matmul on n×n squares, float32 and float64 (median of ``repeats``)."""
    xp, out = backend.xp, {}
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a = xp.asarray(rng.random((n, n)).astype(dtype))
        b = xp.asarray(rng.random((n, n)).astype(dtype))
        xp.matmul(a, b)
        sync()
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            xp.matmul(a, b)
            sync()
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        out[np.dtype(dtype).name] = {"n": n, "seconds": t, "repeats": repeats, "gflops": 2 * n ** 3 / t / 1e9}
    return out


def machine_info(args):
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(),
            "numpy": np.__version__, "numba": None, "numba_threads": numba_threads(),
            "kernels": kernels.kernels_name(), "backend": backend.name,
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                   "MKL_NUM_THREADS", "TINYMETA_NUMBA_THREADS",
                                                   "TINYMETA_KERNELS", "TINYMETA_BACKEND")}}
    try:
        import numba
        info["numba"] = numba.__version__
        info["numba_max_threads"] = numba.config.NUMBA_NUM_THREADS
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info["blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")}
    except Exception:  # older NumPy: the text form
        try:
            buf = io.StringIO()
            with redirect_stdout(buf):
                np.show_config()
            info["blas"] = buf.getvalue()[:2000]
        except Exception:
            info["blas"] = None
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "num_threads", "version")}
                               for p in threadpool_info()]
    except Exception:
        pass
    if backend.name == "cupy":
        try:
            cp = backend.xp
            props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
            info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            info["cupy"] = cp.__version__
        except Exception:
            pass
    return info


# ------------------------------------------------------------------------- report


def fmt_bytes(b):
    if b is None:
        return "-"
    if b < 2 ** 20:
        return f"{b / 2 ** 10:.0f} KB"
    if b < 2 ** 30:
        return f"{b / 2 ** 20:.1f} MB"
    return f"{b / 2 ** 30:.2f} GB"


def fmt_time(s):
    if s is None or not math.isfinite(s):
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def targets(cases, ratios, peak):
    out = []

    def add(name, desc, value, threshold, ok, unit=""):
        out.append({"name": name, "target": desc, "value": value, "threshold": threshold,
                    "status": "PASS" if ok else "BELOW", "unit": unit})

    c = cases.get("omniglot_maml_f32")
    if c and c.get("gflops") is not None:
        frac = c["gflops"] / peak["float32"]["gflops"]
        add("omniglot_maml_f32_gflops", "Omniglot conv4 MAML (2nd order) f32 step, meta-batch "
            f"{c['meta_batch']}: >= 40% of f32 matmul GFLOP/s", frac, 0.40, frac >= 0.40, "fraction")
    c = cases.get("sinusoid_maml")
    if c:
        add("sinusoid_maml_time", f"sinusoid MAML step (meta-batch {c['meta_batch']}) <= 2 ms",
            c["seconds"], 2e-3, c["seconds"] <= 2e-3, "s")
    r = ratios.get("hvp_omniglot")
    if r:
        add("hvp_vs_grad", "HVP <= 3x one gradient", r["ratio"], 3.0, r["ratio"] <= 3.0, "ratio")
    for key in ("loop_vs_batched_sinusoid", "loop_vs_batched_omniglot"):
        r = ratios.get(key)
        if r:
            add(key, f"task axis faster than the loop ({key.split('_')[-1]})", r["ratio"], 1.0,
                r["ratio"] > 1.0, "loop/task-axis")
    return out


def table(result):
    peak = result["matmul"]
    lines = [f"machine: {result['machine']['cpu']} ({result['machine']['cores']} cores), "
             f"numpy {result['machine']['numpy']}, numba {result['machine']['numba']}, "
             f"backend {result['machine']['backend']}, "
             f"OPENBLAS_NUM_THREADS={result['machine']['env']['OPENBLAS_NUM_THREADS']}, "
             f"numba threads {result['machine']['numba_threads']}",
             "matmul peak: " + ", ".join(f"{d} {v['gflops']:.1f} GFLOP/s ({v['n']}x{v['n']}, median of "
                                         f"{v['repeats']})" for d, v in peak.items()),
             ""]
    head = (f"{'case':<24} {'dtype':<8} {'T':>3} {'s/iter':>10} {'min':>10} {'max':>10} {'n':>2} "
            f"{'peak mem':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'%peak':>6}  config")
    lines += [head, "-" * len(head)] if result["cases"] else []
    for name, c in result["cases"].items():
        pk = peak.get(c.get("dtype"), {}).get("gflops")
        pct = f"{100 * c['gflops'] / pk:.1f}" if pk and c.get("gflops") is not None else "-"
        T = "" if c.get("meta_batch") is None else str(c["meta_batch"])
        loop = "" if c.get("batched") in (None, True) else " [loop]"
        lines.append(f"{name:<24} {c.get('dtype', ''):<8} {T:>3} {fmt_time(c['seconds']):>10} "
                     f"{fmt_time(c['min_s']):>10} {fmt_time(c['max_s']):>10} {c['repeats']:>2} "
                     f"{fmt_bytes(c['peak_bytes']):>8} {c['gflop']:>8.3f} {c['gflops']:>8.2f} "
                     f"{pct:>6}  {c['config']}{loop}")
    lines.append(f"({result['notes']['gflop']}; peak memory: {result['notes']['peak_memory']}; "
                 f"%peak is against the matmul peak of the same dtype)")
    if result["ratios"]:
        lines += ["", f"{'ratio':<26} {'value':>7}  {'numerator':>26} / {'denominator':<26} note"]
        for name, r in result["ratios"].items():
            lines.append(f"{name:<26} {r['ratio']:>7.2f}  {r['numerator'] + ' ' + fmt_time(r['numerator_s']):>26} / "
                         f"{r['denominator'] + ' ' + fmt_time(r['denominator_s']):<26} {r['note']}")
    if result["targets"]:
        lines += ["", "targets" + (": QUICK SIZES, not the targets' configurations, statuses "
                                   "meaningless" if result["settings"]["quick"] else ":")]
        for t in result["targets"]:
            v = fmt_time(t["value"]) if t["unit"] == "s" else (
                f"{100 * t['value']:.1f}%" if t["unit"] == "fraction" else f"{t['value']:.2f}")
            lines.append(f"  {t['status']:<5}  {t['target']}: got {v}")
    return "\n".join(lines)


# ------------------------------------------------------------------------- main


def select_cases(patterns):
    if not patterns:
        return list(ALL_CASES)
    chosen = []
    for p in patterns:
        names = GROUPS.get(p) or [n for n in ALL_CASES if fnmatch.fnmatchcase(n, p)]
        if not names:
            raise SystemExit(f"bench: unknown case {p!r}; choose from {', '.join(list(GROUPS) + ALL_CASES)}")
        chosen += [n for n in names if n not in chosen]
    return [n for n in ALL_CASES if n in chosen]     # a fixed order: reuse works the same way


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=None, metavar="NAME",
                   help=f"cases, groups or patterns (groups: {', '.join(GROUPS)}; default: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed iterations per measurement (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="cap on one measurement's timed repeats, estimated from the warm-up (0: none)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    reuse_large_allocations()          # keep big freed buffers: no page faults each iteration
    names = select_cases(args.cases)
    previous_backend = backend.name
    try:
        autograd.set_backend(args.backend)
    except backend.BackendUnavailable as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    try:
        S = sizes(args.quick)
        info = machine_info(args)
        print(f"bench: {len(names)} case(s), backend {backend.name}, kernels {kernels.kernels_name()}, "
              f"repeats {args.repeats}, warm-up {args.warmup}{', quick sizes' if args.quick else ''}",
              flush=True)
        print(f"[matmul peak] {S['matmul_n']}x{S['matmul_n']} float32 and float64 ...", flush=True)
        peak = matmul_peak(S["matmul_n"])
        for d, v in peak.items():
            print(f"  {d}: {v['gflops']:.1f} GFLOP/s", flush=True)
        bench = Bench(args)
        t_start = time.perf_counter()
        for name in names:
            bench.run_case(name)
        mem_note = ("cupy default memory pool total_bytes after one iteration (device)"
                    if backend.name == "cupy" else
                    "tracemalloc peak during one untimed iteration, above what was allocated before "
                    "it (NumPy reports its allocations to tracemalloc)")
        try:
            import numba
            info["numba_threading_layer"] = numba.threading_layer()   # known once a kernel ran
        except Exception:
            pass
        result = {
            "machine": info,
            "settings": {"repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
                         "backend": backend.name, "max_seconds": args.max_seconds, "cases": names,
                         "sizes": S},
            "notes": {"gflop": FLOP_NOTE, "peak_memory": mem_note,
                      "time": "seconds per meta-iteration: median of the timed repeats after the "
                              "warm-up (batches drawn beforehand, sampling not timed)"},
            "matmul": peak,
            "cases": bench.cases,
            "ratios": bench.ratios,
            "targets": targets(bench.cases, bench.ratios, peak),
            "process_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "total_seconds": time.perf_counter() - t_start,
        }
        print()
        print(table(result))
        write_text(args.out, json.dumps(result, indent=2, default=float))
        print(f"\nwrote {args.out}")
        return 0
    finally:
        if backend.name != previous_backend:
            autograd.set_backend(previous_backend)


if __name__ == "__main__":
    sys.exit(main())
