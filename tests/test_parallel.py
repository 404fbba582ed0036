"""The worker threads (``autograd.parallel``) and a meta-batch computed in parts on them
(``MetaLearner.meta_gradients_in_parts``, ``tinymeta.tasks.task_parts``).

A step in parts must give the step of the whole batch. In float64 the two differ only in
the order of summation (the parts' means are combined with weights Tc/T), so the bound is
relative 1e-10 with an absolute floor of 1e-10 × the largest entry (for the
meta-gradients: the largest entry of any of them, as a conv bias in front of batch-norm has
an exactly-zero gradient, rounding noise ~1e-17 in both). For the same reason the parameters after the Adam step are
compared without those biases (Adam scales a ~1e-17 noise gradient up to a full step);
their meta-gradients are compared. Every other check is exact.
"""
import dataclasses
import threading

import numpy as np
import pytest

import autograd as ag
from autograd import Tensor, backend, kernels, parallel, settings
from autograd import functional as F
from helpers import host
from tinymeta.algorithms import ANIL, IMAML, MAML, MetaSGD, Reptile
from tinymeta.algorithms import base
from tinymeta.models import MLP, Conv4
from tinymeta.tasks import EpisodeSampler, SinusoidTasks
from tinymeta.tasks.batches import task_parts

TOL = 1e-10


# ----------------------------------------------------------------------------- map_workers
def test_map_workers_keeps_the_order_and_runs_on_the_workers():
    with settings.using(workers=2):
        names = parallel.map_workers(lambda i: (i, threading.current_thread().name), range(6))
    assert [i for i, _ in names] == list(range(6))
    expect_workers = backend.name == "numpy"                  # on the GPU one stream does the work
    assert all(n.startswith("tinymeta-worker") == expect_workers for _, n in names)


def test_one_worker_is_a_plain_loop_in_the_calling_thread():
    with settings.using(workers=1):
        names = parallel.map_workers(lambda i: threading.current_thread().name, range(3))
    assert names == [threading.current_thread().name] * 3


def test_an_error_in_one_item_is_raised_after_every_item_finished():
    if backend.name != "numpy":
        pytest.skip("workers run on the NumPy backend only (on the GPU map_workers is a plain loop)")
    finished = []

    def work(i):
        if i == 0:
            raise ValueError("item 0")
        finished.append(i)
        return i
    with settings.using(workers=2):
        with pytest.raises(ValueError, match="item 0"):
            parallel.map_workers(work, range(5))
    assert sorted(finished) == [1, 2, 3, 4]


def test_a_worker_records_as_its_caller_does_and_runs_numba_on_one_thread():
    def seen(_):
        numba_threads = None
        if kernels.kernels_name() == "numba":
            import numba
            numba_threads = numba.get_num_threads()
        return ag.is_grad_enabled(), numba_threads
    with settings.using(workers=2):
        recording = parallel.map_workers(seen, range(2))
        with ag.no_grad():
            silent = parallel.map_workers(seen, range(2))
    assert [r for r, _ in recording] == [True, True] and [r for r, _ in silent] == [False, False]
    if kernels.kernels_name() == "numba" and backend.name == "numpy":
        assert {n for _, n in recording} == {1}


def test_a_map_inside_a_worker_runs_there_instead_of_waiting_for_the_pool():
    with settings.using(workers=2):
        inner = parallel.map_workers(
            lambda _: parallel.map_workers(lambda j: threading.current_thread().name, range(3)), range(2))
    for names in inner:
        assert len(set(names)) == 1                           # each inner map ran in one thread


# ----------------------------------------------------------------------------- task_parts
def test_task_parts_slice_every_field_with_the_task_axis():
    batch = SinusoidTasks().sample(np.random.default_rng(0), tasks=5, shots=3, queries=4)
    parts = task_parts(batch, 2)
    assert [len(p.support_x) for p in parts] == [2, 2, 1]
    for f in dataclasses.fields(batch):
        whole = getattr(batch, f.name)
        np.testing.assert_array_equal(np.concatenate([getattr(p, f.name) for p in parts]), whole)
    assert task_parts(batch, 5) == [batch] and task_parts(batch, 9) == [batch]


def test_a_batch_that_is_not_a_dataclass_is_one_part():
    class Plain:
        support_x = np.zeros((4, 2, 1))
    batch = Plain()
    assert task_parts(batch, 1) == [batch]


# ----------------------------------------------------------------------------- a step in parts
def mlp_problem(seed=3):
    model = MLP([1, 8, 8, 1], activation="tanh", init_std=0.5)
    params = model.init(np.random.default_rng(seed), dtype=np.float64)
    batch = SinusoidTasks().sample(np.random.default_rng(seed + 1), tasks=5, shots=5, queries=7)
    return model, params, batch, F.mse_loss


def conv_problem(seed=3, transductive=True):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((5, 1, 8, 8)) + 0.3 * rng.standard_normal((5, 6, 8, 8))
    model = Conv4(ways=3, in_channels=1, filters=4, image_size=8, transductive=transductive)
    params = model.init(np.random.default_rng(seed + 1), dtype=np.float64)
    sampler = EpisodeSampler(images, ways=3, shots=2, queries=2, rng=seed + 2, dtype=np.float64)
    return model, params, sampler.sample_batch(5), F.cross_entropy


LEARNERS = {
    "maml2": lambda m, p, l: MAML(m, p, l, inner_lr=0.1, inner_steps=2),
    "fomaml": lambda m, p, l: MAML(m, p, l, inner_lr=0.1, inner_steps=2, first_order=True),
    "anil": lambda m, p, l: ANIL(m, p, l, inner_lr=0.1, inner_steps=1),
    "metasgd": lambda m, p, l: MetaSGD(m, p, l, inner_lr=0.1, inner_steps=1),
    "reptile": lambda m, p, l: Reptile(m, p, l, inner_lr=0.05, inner_steps=2),      # SGD inside: with
    # Adam inside, the noise gradients of the conv biases become steps (see test_batched_tasks.py)
    "imaml": lambda m, p, l: IMAML(m, p, l, inner_lr=0.05, inner_steps=3, cg_steps=3),
}


def copy_params(params):
    return {k: Tensor(v.data.copy(), requires_grad=True) for k, v in params.items()}


def close(a, b, what, scale=0.0):
    a, b = host(a), host(b)
    floor = TOL * max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), scale)
    np.testing.assert_allclose(a, b, rtol=TOL, atol=floor, err_msg=what)


@pytest.mark.parametrize("problem", ["mlp", "conv"])
@pytest.mark.parametrize("name", list(LEARNERS))
def test_a_step_in_parts_is_the_step_of_the_whole_batch(problem, name, monkeypatch):
    model, params, batch, loss_fn = {"mlp": mlp_problem, "conv": conv_problem}[problem]()
    if name == "anil" and problem == "mlp":
        pytest.skip("ANIL adapts a Conv4's head")
    whole = LEARNERS[name](model, copy_params(params), loss_fn)
    split = LEARNERS[name](model, copy_params(params), loss_fn)
    per_task = batch.support_x[0].size + batch.query_x[0].size
    monkeypatch.setattr(base, "PART_ELEMENTS", 2 * per_task)          # parts of 2, 2 and 1 tasks
    threads = set()
    meta_gradients = split.meta_gradients

    def watched(part):
        threads.add(threading.current_thread().name)
        return meta_gradients(part)
    split.meta_gradients = watched
    for it in range(2):
        with settings.using(workers=1):
            assert len(whole.parts(batch)) == 1
            loss_a, grads_a = whole.meta_gradients(batch)
            a = whole.step(batch)
        with settings.using(workers=2):
            n_parts = len(split.parts(batch))
            loss_b, grads_b = split.meta_gradients_in_parts(batch)
            b = split.step(batch)
        close(loss_a.data, loss_b.data, f"{name} {problem} iteration {it}: meta-loss")
        scale = max(np.abs(host(g.data)).max() for g in grads_a.values())
        for k in grads_a:
            close(grads_a[k].data, grads_b[k].data, f"{name} {problem} iteration {it}: meta-gradient of {k}",
                  scale)
        assert sorted(a) == sorted(b)
        for k in a:
            close(a[k], b[k], f"{name} {problem} iteration {it}: {k}")
        for k in whole.meta_parameters():
            if k.startswith("conv") and k.endswith(".b"):
                continue      # gradient exactly 0 in exact arithmetic: Adam scales the noise up to a step
            close(whole.meta_parameters()[k].data, split.meta_parameters()[k].data,
                  f"{name} {problem} iteration {it}: parameter {k}")
    if backend.name == "numpy":
        assert n_parts == 3 and all(t.startswith("tinymeta-worker") for t in threads)
    else:
        assert n_parts == 1                                           # the GPU takes the whole batch


def test_running_statistics_keep_the_whole_batch(monkeypatch):
    model, params, batch, loss_fn = conv_problem(transductive=False)
    learner = MAML(model, params, loss_fn, inner_lr=0.1)
    monkeypatch.setattr(base, "PART_ELEMENTS", 1)
    with settings.using(workers=2):
        assert learner.parts(batch) == [batch]                      # task order of the updates kept
    model.transductive = True
    with settings.using(workers=2):
        assert len(learner.parts(batch)) == (5 if backend.name == "numpy" else 1)


def test_small_tasks_and_other_learners_stay_whole():
    model, params, batch, loss_fn = mlp_problem()
    with settings.using(workers=2):
        assert MAML(model, params, loss_fn).parts(batch) == [batch]    # 5 sinusoids: one part
        learner = MAML(model, params, loss_fn)
        learner.splits_tasks = False
        assert learner.parts(batch) == [batch]


def test_the_metrics_are_per_thread():
    model, params, batch, loss_fn = conv_problem()
    learner = MAML(model, params, loss_fn, inner_lr=0.1)
    learner.last_metrics = {"accuracy": 0.5}
    seen = []
    t = threading.Thread(target=lambda: seen.append(dict(learner.last_metrics)))
    t.start()
    t.join()
    assert seen == [{}] and learner.last_metrics == {"accuracy": 0.5}
