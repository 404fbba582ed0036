"""Speed benchmark: seconds per meta-iteration, peak memory and achieved GFLOP/s.

    python -m experiments.bench                                   # everything (several minutes)
    python -m experiments.bench --cases sinusoid hvp --repeats 5  # a subset
    python -m experiments.bench --quick --out /tmp/b.json         # tiny sizes (tests)
    python -m experiments.bench --backend cupy                    # on the GPU
    python -m experiments.bench --peers --rounds 3                # also side by side with PyTorch and JAX

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
  f32, meta-batch 8 for both sides: the loop is slow), ``workers_1_vs_all`` (Omniglot MAML
  f32: the whole meta-batch on one worker, BLAS one thread and Numba on every core, against
  the default, its parts on one worker thread per core). A ratio reuses a measurement of the same configuration made earlier
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

Peers (``--peers``). For each selected case that has a peer workload (``PEER_WORKLOADS``:
``sinusoid_{maml,fomaml}``, ``omniglot_{maml,fomaml}_{f32,f64}``, ``miniimagenet_maml_f32``),
after the in-process measurements above, ``--rounds`` rounds (default 3) run one process at a
time: our case in a fresh ``python -m experiments.bench --timing-only --cases CASE`` (same
``--repeats``, ``--warmup``, ``--quick``, ``--backend``; ``--timing-only`` skips the matmul peak
and the flop-counting and tracemalloc iterations, so the process holds what training would),
then each peer script of ``--peers-dir`` (default ``../shared/peers`` beside the checkout) run by
``--peer-python`` (default ``$PEER_PY`` or ``~/.cache/peer-venv/bin/python``): ``torch_maml.py``
(``--impl loop`` for the convs, ``vmap`` for the sinusoid) and ``jax_maml.py`` where it has the
workload (sinusoid ``vmap``, Omniglot ``unroll``), each with ``--iters`` = ``--repeats`` and the
same ``--warmup`` (JAX compiles before its warm-up). Torch and JAX are never imported here. Per
round the ratio ours/peer of seconds per meta-iteration (each the median of its run) is taken;
the table and the JSON's ``peers`` section give, per case and peer, the seconds and ratio of
every round, the median ratio with min and max, and the peak resident memory (RSS) of every
process: ``ru_maxrss`` of that one process from ``os.wait4(pid, 0)``, taken in a small
interpreter that forks it (``REAPER``: Linux counts into a process's ``ru_maxrss`` the peak of
the memory map its exec replaced, so a process forked by the bench itself would report at
least the bench's own peak). RSS is the whole process (interpreter, libraries, data, step),
compared ours/peer. Every subprocess gets ``--peer-timeout`` seconds (default 600). A missing
peer python or peers folder, or a peer that fails or times out, is one line in the log and
``peer unavailable: <why>`` in its row; the bench goes on and exits 0. Ratios are the targets'
measure against the peers (``targets``); with ``--quick`` only our side shrinks, so they mean
nothing.

The BLAS runs one thread unless the user set a count (``experiments.one_blas_thread``, run
when the package is imported), as in the experiments: on the 2-core machine a threaded BLAS
fights Numba's threads (see ``autograd.settings``). The cores are used by the worker threads
instead (``autograd.parallel``: MAML, FOMAML and Reptile steps run their meta-batch in parts,
one part per worker at a time), so the matmul peak is measured the same way: one 2048²
product per worker at once, all their flops counted. The JSON records the settings.
"""
import argparse
import fnmatch
import io
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from autograd.allocator import reuse_large_allocations
import numpy as np

import autograd
from autograd import backend, kernels, parallel, settings
from autograd import functional as F
from autograd.ops import linalg

from tinymeta.files import write_text
from tinymeta.models import Conv4

from tinymeta.tasks import episode_sampler

from . import configs, omniglot, sinusoid

DEFAULT_OUT = Path("runs/bench/bench.json")
FLOP_NOTE = ("GFLOP counts the matrix products only (autograd.ops.linalg.matmul_arrays: "
             "2*prod(out.shape)*a.shape[-1]); element-wise ops, batch-norm, pooling, "
             "im2col/col2im are not counted; '-' where the step is one compiled kernel "
             "(the sinusoid's MAML and FOMAML on the task axis: tinymeta/algorithms/_maml_mlp_numba.py), "
             "whose products the counter does not see")
GROUPS = {
    "sinusoid": ["sinusoid_maml", "sinusoid_fomaml", "sinusoid_reptile"],
    "omniglot": [f"omniglot_{a}_{d}" for d in ("f32", "f64") for a in ("maml", "fomaml", "reptile")],
    "miniimagenet": ["miniimagenet_maml_f32"],
    "hvp": ["hvp_omniglot"],
    "ratios": ["kernels_numpy_vs_numba", "loop_vs_batched_sinusoid", "loop_vs_batched_omniglot",
               "workers_1_vs_all"],
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
    lock = threading.Lock()                    # the worker threads count into one counter

    def counted(a, b):
        out = original(a, b)
        with lock:
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
        if self.args.timing_only:              # a --peers subprocess: its peak RSS is the step's own
            flops = memory = False
        m = measure(step, self.args.warmup, self.args.repeats, self.args.max_seconds, flops, memory)
        m["compiled"] = getattr(step, "compiled", False)
        m["kernels"] = kernels.kernels_name()
        m["numba_threads"] = numba_threads()
        m["workers"] = parallel.workers()
        self.cache[key] = m
        self.log(f"  {label}: {fmt_time(m['seconds'])}/iter (median of {m['repeats']})")
        return m

    # --- meta-learning steps ----------------------------------------------------------
    def sinusoid(self, algo, batched=True):
        cfg = self.S["sinusoid"]
        key = ("sinusoid", algo, batched, kernels.kernels_name(), numba_threads())

        def make():
            learner, batches = sinusoid_learner(cfg, algo, batched)
            compiled = getattr(learner, "compiled_step_applies", lambda batch: False)(batches[0])
            step = learner_step(learner, batches)
            step.compiled = compiled
            return step

        m = dict(self.run_measure(key, f"sinusoid {algo} ({'task axis' if batched else 'loop'})", make))
        config = describe_sinusoid(cfg, algo) + (", compiled step" if m["compiled"] else "")
        m.update(dtype=cfg["dtype"], meta_batch=cfg["meta_batch"], batched=batched, config=config)
        if m["compiled"]:
            m.update(gflop=None, gflops=None)            # the counter sees no product of the kernel
        return m

    def conv(self, kind, algo, dtype, batched=True, tasks=None):
        key = (kind, algo, np.dtype(dtype).name, batched, tasks, kernels.kernels_name(), numba_threads(),
               parallel.workers())
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
        elif name == "workers_1_vs_all":
            with settings.using(workers=1):
                one = self.conv("omniglot", "maml", np.float32)
            with settings.using(workers=None):
                every = self.conv("omniglot", "maml", np.float32)
                n = parallel.workers()
            note = (f"Omniglot MAML step float32; ratio = time(whole meta-batch, 1 worker) / "
                    f"time(parts on {n} workers), > 1 means the workers help")
            if n < 2:
                note += " (one core, or a threaded BLAS: both sides ran one worker)"
            self.add_ratio(name, "1 worker", one, f"{n} workers", every, note)
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
    """GFLOP/s of xp.matmul on n×n squares, float32 and float64 (median of ``repeats``), run
    the way the steps run: one product per worker thread at once (``autograd.parallel``,
    ``workers`` of them on the NumPy backend), the flops of all of them counted."""
    xp, out = backend.xp, {}
    rng = np.random.default_rng(0)
    copies = parallel.workers() if backend.name == "numpy" else 1
    for dtype in (np.float32, np.float64):
        a = xp.asarray(rng.random((n, n)).astype(dtype))
        b = xp.asarray(rng.random((n, n)).astype(dtype))
        products = lambda: parallel.map_workers(lambda _: xp.matmul(a, b), range(copies))
        products()
        sync()
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            products()
            sync()
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        out[np.dtype(dtype).name] = {"n": n, "seconds": t, "repeats": repeats, "threads": copies,
                                     "gflops": 2 * n ** 3 * copies / t / 1e9}
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
            "numpy": np.__version__, "numba": None, "numba_threads": numba_threads(), "workers": parallel.workers(),
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


# ------------------------------------------------------------------------- peers (--peers)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PEERS_DIR = REPO.parent / "shared" / "peers"     # the folder beside the checkout
DEFAULT_PEER_PYTHON = "~/.cache/peer-venv/bin/python"
PEER_TIMEOUT = 600.0
# Our cases that have a peer workload -> the peer scripts' (--workload, --mode, --dtype).
PEER_WORKLOADS = {
    "sinusoid_maml": ("sinusoid", "maml", "float32"),
    "sinusoid_fomaml": ("sinusoid", "fomaml", "float32"),
    "omniglot_maml_f32": ("omniglot", "maml", "float32"),
    "omniglot_fomaml_f32": ("omniglot", "fomaml", "float32"),
    "omniglot_maml_f64": ("omniglot", "maml", "float64"),
    "omniglot_fomaml_f64": ("omniglot", "fomaml", "float64"),
    "miniimagenet_maml_f32": ("miniimagenet", "maml", "float32"),
}
# Peer -> (its script in the peers folder, {workload: --impl}); a workload it lacks is absent.
# As side_by_side.py: PyTorch's per-task loop for the convs (its vmap cannot use the fused
# batch-norm), its vmap for the sinusoid; JAX unrolled for Omniglot (its fast conv form on CPU).
PEERS = {
    "pytorch": ("torch_maml.py", {"sinusoid": "vmap", "omniglot": "loop", "miniimagenet": "loop"}),
    "jax": ("jax_maml.py", {"sinusoid": "vmap", "omniglot": "unroll"}),
}
PEER_LABELS = {"pytorch": "PyTorch", "jax": "JAX"}
# (case, peer, bound on the median ratio ours/peer, what)
PEER_TARGETS = [("omniglot_maml_f32", "pytorch", 0.5, "Omniglot 2nd-order MAML f32 step"),
                ("omniglot_fomaml_f32", "pytorch", 0.7, "Omniglot FOMAML f32 step"),
                ("omniglot_maml_f64", "pytorch", 0.7, "Omniglot MAML f64 step"),
                ("miniimagenet_maml_f32", "pytorch", 0.7, "mini-ImageNet MAML f32 step"),
                ("sinusoid_maml", "jax", 1.0, "sinusoid MAML step")]
PEER_NOTE = ("each round runs, one process at a time, our case in a fresh `python -m experiments.bench "
             "--timing-only` process, then each peer's script; ratio = ours/peer seconds per "
             "meta-iteration in that round (each side: median of --repeats after --warmup), reported as "
             "the median over rounds with min and max; peak RSS = ru_maxrss of that one process from "
             "os.wait4 (the whole process: interpreter, libraries, data and the step)")


def default_peer_python():
    return os.environ.get("PEER_PY") or os.path.expanduser(DEFAULT_PEER_PYTHON)


def peer_commands(case, peers_dir, peer_python, iters, warmup):
    """{peer: argv} for the peers that have ``case``'s workload."""
    if case not in PEER_WORKLOADS:
        return {}
    workload, mode, dtype = PEER_WORKLOADS[case]
    return {name: [str(peer_python), str(Path(peers_dir) / script), "--workload", workload, "--mode", mode,
                   "--dtype", dtype, "--impl", impls[workload], "--iters", str(iters),
                   "--warmup", str(warmup)]
            for name, (script, impls) in PEERS.items() if workload in impls}


def ours_command(args, case, out):
    cmd = [sys.executable, "-m", "experiments.bench", "--timing-only", "--cases", case,
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--max-seconds",
           str(args.max_seconds), "--backend", args.backend, "--out", str(out)]
    return cmd + (["--quick"] if args.quick else [])


def maxrss_bytes(kib):
    return int(kib) * (1 if sys.platform == "darwin" else 1024)     # Linux: KiB, macOS: bytes


# Runs argv[2:] as a child of a small fresh interpreter and writes "ru_maxrss exit-code" of it,
# read with os.wait4(pid, 0), to argv[1]. Linux records at exec the peak RSS of the memory map
# the exec replaces: a process started straight from the bench (fork or vfork) would report at
# least the bench's own peak. Forked from this small process, it starts from ~10 MB.
REAPER = """import os, sys
report, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, ("could not start %s: %s\\n" % (argv[0], e.strerror)).encode())
    os._exit(127)
_, status, ru = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(report, "w") as f:
    f.write("%d %d" % (ru.ru_maxrss, code))
sys.exit(code if code >= 0 else 128 - code)
"""


def run_process(cmd, timeout, cwd=None):
    """Run ``cmd`` alone and measure its own peak RSS: ``os.wait4(pid, 0)`` on it in ``REAPER``
    (RUSAGE_CHILDREN would be a max over every child so far). Returns returncode (None: timed
    out), stdout, stderr, peak_rss_bytes, wall_s and error (why it did not finish, or None).
    The child gets its own session, so a timeout kills it and anything it started."""
    res = {"returncode": None, "stdout": "", "stderr": "", "peak_rss_bytes": None, "wall_s": None,
           "error": None}
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:
        report = Path(d) / "rusage"
        t0 = time.perf_counter()
        try:
            p = subprocess.Popen([sys.executable, "-I", "-S", "-c", REAPER, str(report), *map(str, cmd)],
                                 cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 start_new_session=True)
        except OSError as e:
            res["error"] = f"could not start {cmd[0]}: {e.strerror or e}"
            return res
        lock, state = threading.Lock(), {"reaped": False, "killed": False}

        def kill():
            with lock:
                if not state["reaped"]:
                    state["killed"] = True
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except OSError:
                        pass

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            _, status, _ = os.wait4(p.pid, 0)
        except BaseException:                          # Ctrl-C: take the child down with us
            timer.cancel()
            kill()
            os.wait4(p.pid, 0)
            p.returncode = -signal.SIGKILL
            raise
        with lock:
            state["reaped"] = True
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)      # reaped here: Popen must not wait
        res["wall_s"] = time.perf_counter() - t0
        for key, f in (("stdout", out), ("stderr", err)):
            f.seek(0)
            res[key] = f.read().decode("utf-8", "replace")
        try:
            kib, code = map(int, report.read_text().split())
            res["peak_rss_bytes"] = maxrss_bytes(kib)
        except (OSError, ValueError):
            code = p.returncode
    if state["killed"]:
        res["error"] = f"timed out after {timeout:g} s"
    else:
        res["returncode"] = p.returncode = code
        if p.returncode != 0:
            res["error"] = f"exit status {p.returncode}: {last_line(res['stderr'] or res['stdout'])}"
    return res


def last_line(text, width=160):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else "(no output)"
    return line if len(line) <= width else line[:width - 3] + "..."


def peer_seconds(stdout):
    """``sec_per_iter`` of the last JSON line a peer script printed."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "sec_per_iter" in obj:
            t = float(obj["sec_per_iter"])
            if t > 0 and math.isfinite(t):
                return t
            raise ValueError(f"sec_per_iter {obj['sec_per_iter']!r} is not a positive time")
    raise ValueError(f"no JSON line with sec_per_iter in its output (last line: {last_line(stdout)})")


def peers_missing(args):
    """Why no peer can run at all (the peer python or the peers folder is missing), or None."""
    py = args.peer_python
    if not (shutil.which(py) if os.sep not in py else os.access(py, os.X_OK)):
        return f"peer python {py} not found (set --peer-python or PEER_PY; ../shared/peers/setup.sh makes it)"
    if not Path(args.peers_dir).is_dir():
        return f"peers folder {args.peers_dir} not found (set --peers-dir)"
    return None


def spread(values):
    return ({"median": statistics.median(values), "min": min(values), "max": max(values)}
            if values else {"median": None, "min": None, "max": None})


def compare_case(args, case, log):
    """Our case and its peers, alternating for ``args.rounds`` rounds, one process at a time."""
    workload, mode, dtype = PEER_WORKLOADS[case]
    entry = {"workload": {"workload": workload, "mode": mode, "dtype": dtype}, "ours_failure": None,
             "ours": {"command": ours_command(args, case, "TMP.json"), "seconds": [], "peak_rss_bytes": []},
             "peers": {}}
    for name, cmd in peer_commands(case, args.peers_dir, args.peer_python, args.repeats, args.warmup).items():
        p = entry["peers"][name] = {"command": cmd, "seconds": [], "ratios": [], "peak_rss_bytes": [],
                                    "reason": None}
        if not Path(cmd[1]).is_file():
            p["reason"] = f"{Path(cmd[1]).name} not found in {args.peers_dir}"
            log(f"  {name} unavailable: {p['reason']}")
    ours = entry["ours"]
    for r in range(args.rounds):
        live = {k: p for k, p in entry["peers"].items() if p["reason"] is None}
        if not live:
            break
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "ours.json"
            res = run_process(ours_command(args, case, out), args.peer_timeout, cwd=REPO)
            why = res["error"]
            if why is None:
                try:
                    t = float(json.loads(out.read_text())["cases"][case]["seconds"])
                except (OSError, ValueError, KeyError, TypeError) as e:
                    why = f"no time for {case} in its JSON ({type(e).__name__}: {e})"
        if why is not None:
            entry["ours_failure"] = why
            log(f"  round {r + 1}/{args.rounds}: our subprocess failed: {why}; no more rounds of {case}")
            break
        ours["seconds"].append(t)
        ours["peak_rss_bytes"].append(res["peak_rss_bytes"])
        parts = [f"ours {fmt_time(t)} (RSS {fmt_bytes(res['peak_rss_bytes'])})"]
        for name, p in live.items():
            res = run_process(p["command"], args.peer_timeout, cwd=args.peers_dir)
            why = res["error"]
            if why is None:
                try:
                    s = peer_seconds(res["stdout"])
                except ValueError as e:
                    why = str(e)
            if why is not None:
                p["reason"] = why + (f" (in round {r + 1}; earlier rounds kept)" if p["ratios"] else "")
                log(f"  {name} unavailable: {why}")
                continue
            p["seconds"].append(s)
            p["ratios"].append(t / s)
            p["peak_rss_bytes"].append(res["peak_rss_bytes"])
            parts.append(f"{name} {fmt_time(s)} (ratio {t / s:.2f}, RSS {fmt_bytes(res['peak_rss_bytes'])})")
        log(f"  round {r + 1}/{args.rounds}: " + "; ".join(parts))
    ours.update({f"{k}_s": v for k, v in spread(ours["seconds"]).items()})
    ours["peak_rss_max_bytes"] = max(ours["peak_rss_bytes"], default=None)
    for p in entry["peers"].values():
        p["available"] = bool(p["ratios"])
        if not p["ratios"] and p["reason"] is None:
            p["reason"] = f"no ratio: our subprocess failed: {entry['ours_failure']}"
        stats = spread(p["ratios"])
        p.update(median_ratio=stats["median"], ratio_min=stats["min"], ratio_max=stats["max"],
                 median_s=spread(p["seconds"])["median"],
                 peak_rss_max_bytes=max(p["peak_rss_bytes"], default=None))
        p["memory_ratio"] = (ours["peak_rss_max_bytes"] / p["peak_rss_max_bytes"]
                             if p["peak_rss_max_bytes"] and ours["peak_rss_max_bytes"] else None)
    return entry


def run_peers(args, names, log):
    """The ``peers`` section of the JSON: every selected case with a peer workload, compared."""
    section = {"settings": {"rounds": args.rounds, "peers_dir": str(args.peers_dir),
                            "peer_python": args.peer_python, "timeout_s": args.peer_timeout,
                            "iters": args.repeats, "warmup": args.warmup, "quick": args.quick},
               "note": PEER_NOTE, "unavailable": None, "cases": {}}
    cases = [n for n in names if n in PEER_WORKLOADS]
    if not cases:
        section["unavailable"] = "no selected case has a peer workload"
        log(f"peers: {section['unavailable']} ({', '.join(PEER_WORKLOADS)})")
        return section
    why = peers_missing(args)
    if why:
        section["unavailable"] = why
        log(f"peers unavailable: {why}; the bench goes on without them")
    for case in cases:
        if why:
            cmds = peer_commands(case, args.peers_dir, args.peer_python, args.repeats, args.warmup)
            section["cases"][case] = {"workload": dict(zip(("workload", "mode", "dtype"), PEER_WORKLOADS[case])),
                                      "ours": None, "ours_failure": None,
                                      "peers": {k: {"command": c, "available": False, "reason": why}
                                                for k, c in cmds.items()}}
            continue
        log(f"[peers: {case}] {args.rounds} round(s): ours, then {', '.join(PEERS)} where they have it")
        section["cases"][case] = compare_case(args, case, log)
    return section



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


def targets(cases, ratios, peak, peers=None):
    out = []

    def add(name, desc, value, threshold, ok, unit=""):
        out.append({"name": name, "target": desc, "value": value, "threshold": threshold,
                    "status": "PASS" if ok else "BELOW", "unit": unit})

    c = cases.get("omniglot_maml_f32")
    if c and c.get("gflops") is not None and "float32" in peak:
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
    peer_cases = (peers or {}).get("cases", {})
    for case, peer, bound, what in PEER_TARGETS:
        p = peer_cases.get(case, {}).get("peers", {}).get(peer)
        if p and p.get("median_ratio") is not None:
            add(f"{case}_vs_{peer}", f"{what} <= {bound:g}x {PEER_LABELS[peer]}'s (median over "
                f"{len(p['ratios'])} round(s) of ours/peer)", p["median_ratio"], bound,
                p["median_ratio"] <= bound, "ratio")
    p = peer_cases.get("omniglot_maml_f32", {}).get("peers", {}).get("pytorch")
    if p and p.get("memory_ratio") is not None:
        add("omniglot_maml_f32_rss_vs_pytorch", "peak RSS of the Omniglot MAML f32 step's process <= "
            "PyTorch's (ratio ours/PyTorch)", p["memory_ratio"], 1.0, p["memory_ratio"] <= 1.0, "ratio")
    return out


def peers_table(section):
    s = section["settings"]
    lines = ["", f"peers ({s['rounds']} round(s), each side the median of {s['iters']} after {s['warmup']} "
                 f"warm-up; ratio = ours/peer per round: median [min-max] over rounds; RSS = peak "
                 f"resident memory of each whole process, os.wait4)"
                 + (": QUICK SIZES on our side only, ratios meaningless" if s["quick"] else ":")]
    if section["unavailable"] and not section["cases"]:
        return lines + [f"  {section['unavailable']}"]
    head = (f"{'case':<22} {'peer':<8} {'ours':>9} {'peer':>9} {'ratio':>6} {'min-max':>11} {'n':>2} "
            f"{'ours RSS':>9} {'peer RSS':>9} {'RSS ratio':>9}")
    lines += [head, "-" * len(head)]
    for case, c in section["cases"].items():
        for name, p in c["peers"].items():
            if not p["available"]:
                why = p["reason"]
                lines.append(f"{case:<22} {name:<8} " + (why if why.startswith("no ratio") else
                                                         f"peer unavailable: {why}"))
                continue
            o = c["ours"]
            lines.append(f"{case:<22} {name:<8} {fmt_time(o['median_s']):>9} {fmt_time(p['median_s']):>9} "
                         f"{p['median_ratio']:>6.2f} {p['ratio_min']:>5.2f}-{p['ratio_max']:<5.2f} "
                         f"{len(p['ratios']):>2} {fmt_bytes(o['peak_rss_max_bytes']):>9} "
                         f"{fmt_bytes(p['peak_rss_max_bytes']):>9} {p['memory_ratio']:>9.2f}"
                         + (f"  ({p['reason']})" if p["reason"] else ""))
    return lines


def table(result):
    peak = result["matmul"]
    lines = [f"machine: {result['machine']['cpu']} ({result['machine']['cores']} cores), "
             f"numpy {result['machine']['numpy']}, numba {result['machine']['numba']}, "
             f"backend {result['machine']['backend']}, "
             f"OPENBLAS_NUM_THREADS={result['machine']['env']['OPENBLAS_NUM_THREADS']}, "
             f"numba threads {result['machine']['numba_threads']}, workers {result['machine'].get('workers')}",
             "matmul peak: " + (", ".join(f"{d} {v['gflops']:.1f} GFLOP/s ({v.get('threads', 1)} x "
                                          f"{v['n']}x{v['n']} at once, median of {v['repeats']})"
                                          for d, v in peak.items())
                                or "not measured (--timing-only)"),
             ""]
    head = (f"{'case':<24} {'dtype':<8} {'T':>3} {'s/iter':>10} {'min':>10} {'max':>10} {'n':>2} "
            f"{'peak mem':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'%peak':>6}  config")
    lines += [head, "-" * len(head)] if result["cases"] else []
    for name, c in result["cases"].items():
        pk = peak.get(c.get("dtype"), {}).get("gflops")
        pct = f"{100 * c['gflops'] / pk:.1f}" if pk and c.get("gflops") is not None else "-"
        T = "" if c.get("meta_batch") is None else str(c["meta_batch"])
        loop = "" if c.get("batched") in (None, True) else " [loop]"
        gflop = "-" if c.get("gflop") is None else f"{c['gflop']:.3f}"
        gflops = "-" if c.get("gflops") is None else f"{c['gflops']:.2f}"
        lines.append(f"{name:<24} {c.get('dtype', ''):<8} {T:>3} {fmt_time(c['seconds']):>10} "
                     f"{fmt_time(c['min_s']):>10} {fmt_time(c['max_s']):>10} {c['repeats']:>2} "
                     f"{fmt_bytes(c.get('peak_bytes')):>8} {gflop:>8} {gflops:>8} "
                     f"{pct:>6}  {c['config']}{loop}")
    lines.append(f"({result['notes']['gflop']}; peak memory: {result['notes']['peak_memory']}; "
                 f"%peak is against the matmul peak of the same dtype)")
    if result["ratios"]:
        lines += ["", f"{'ratio':<26} {'value':>7}  {'numerator':>26} / {'denominator':<26} note"]
        for name, r in result["ratios"].items():
            lines.append(f"{name:<26} {r['ratio']:>7.2f}  {r['numerator'] + ' ' + fmt_time(r['numerator_s']):>26} / "
                         f"{r['denominator'] + ' ' + fmt_time(r['denominator_s']):<26} {r['note']}")
    if result.get("peers"):
        lines += peers_table(result["peers"])
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
    p.add_argument("--peers", action="store_true",
                   help="also run the selected cases that have a peer workload side by side with the "
                        "PyTorch and JAX scripts of --peers-dir, one process at a time (see the module help)")
    p.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR,
                   help="folder of torch_maml.py and jax_maml.py (default: ../shared/peers beside the "
                        f"checkout, here {DEFAULT_PEERS_DIR})")
    p.add_argument("--peer-python", default=default_peer_python(),
                   help=f"the Python that has torch and jax (default: $PEER_PY or {DEFAULT_PEER_PYTHON})")
    p.add_argument("--rounds", type=int, default=3, help="--peers: alternating rounds per case (median ratio)")
    p.add_argument("--peer-timeout", type=float, default=PEER_TIMEOUT,
                   help="--peers: seconds each subprocess (ours or a peer's) may run before it is killed")
    p.add_argument("--timing-only", action="store_true",
                   help="only the seconds per iteration: no matmul peak, no flop-counting or tracemalloc "
                        "iteration (what --peers runs in its subprocesses, so their peak RSS is the step's)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if args.rounds < 1 or args.peer_timeout <= 0:
        p.error("--rounds must be >= 1 and --peer-timeout > 0")
    args.peer_python = os.path.expanduser(args.peer_python)
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
        peak = {}
        if not args.timing_only:
            print(f"[matmul peak] {S['matmul_n']}x{S['matmul_n']} float32 and float64 ...", flush=True)
            peak = matmul_peak(S["matmul_n"])
            for d, v in peak.items():
                print(f"  {d}: {v['gflops']:.1f} GFLOP/s", flush=True)
        bench = Bench(args)
        t_start = time.perf_counter()
        for name in names:
            bench.run_case(name)
        peers = run_peers(args, names, bench.log) if args.peers else None
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
                         "timing_only": args.timing_only, "peers": args.peers,
                         "backend": backend.name, "max_seconds": args.max_seconds, "cases": names,
                         "sizes": S},
            "notes": {"gflop": FLOP_NOTE, "peak_memory": mem_note,
                      "time": "seconds per meta-iteration: median of the timed repeats after the "
                              "warm-up (batches drawn beforehand, sampling not timed)"},
            "matmul": peak,
            "cases": bench.cases,
            "ratios": bench.ratios,
            "peers": peers,
            "targets": targets(bench.cases, bench.ratios, peak, peers),
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
