"""The contract every meta-learner honours, and what the gradient-based learners share.

Every learner (MAML, FOMAML, ANIL, Meta-SGD, Reptile, joint training, Prototypical
Networks, ...) is driven through the same few methods, so the run layer
(``tinymeta.training``) never asks which learner it holds:

=============================  ==========================================================
``meta_parameters()``          what the outer loop learns: name → Tensor
``meta_gradients(batch)``      ``(loss, {name: gradient})``; ``loss`` is the mean query
                               loss after the learner's adaptation to each task
``step(batch)``                one meta-iteration: ``meta_gradients``, then
                               ``optimizer.step``; returns ``{"loss": float}`` plus
                               ``"accuracy"`` for classification
``adapt(batch, steps)``        each task's fast weights after ``steps`` meta-test steps on
                               its support set (no second-order graph kept)
``evaluate(batch, steps)``     query loss (and accuracy) after 0, 1, …, ``steps`` steps:
                               arrays of shape (steps + 1, T)
``state_dict()``               everything the learner holds (parameters, optimizer state,
``load_state_dict(state)``     model state), as nested dicts of arrays and numbers
=============================  ==========================================================

The outer optimizer belongs to the learner. It is made by the ``optimizer`` argument, a
function ``params → optimizer`` (default: Adam 1e-3; Reptile: SGD whose learning rate is
ε), and schedules change ``learner.optimizer.lr``.

**Model state.** A forward pass takes a ``mode``: ``"train"`` (the meta-training query
pass: batch statistics; a non-transductive batch-norm updates its running statistics),
``"adapt"`` (an inner-loop pass in meta-training: batch statistics, nothing updated) or
``"test"`` (meta-test: running statistics where the model keeps them, nothing updated). So
``step`` is the only method that changes model state; ``adapt`` and ``evaluate`` never do.

**Per-step layers.** A model with ``per_step = True`` (MAML++'s per-step batch-norm in
``Conv4(bn_steps=S)``) is also told the inner step: the support pass of inner step k
(k = 0, 1, …) runs with ``step=k`` and the query pass after k ≥ 1 steps with ``step=k − 1``
(after 0 steps: 0), as in Antoniou et al.'s code; other models never see ``step``.

A *task batch* is any object with ``support_x, support_y, query_x, query_y`` arrays whose
leading axis indexes the T tasks (see ``tinymeta.tasks``). Two ways to run it, with equal
results (the tests check it to 1e-10):

* ``batched=True`` (default, fast): θ is broadcast to T copies along a leading task axis and
  all tasks run as one batched computation; the sum of the per-task losses is
  differentiated once, and since task t's loss depends only on copy t, its slice of that
  gradient is exactly ∇θ L_Tt.
* ``batched=False``: a Python loop over tasks, the textbook reading.

**Parts of a meta-batch on the cores.** Where a learner's meta-loss is the mean of
independent per-task losses (``splits_tasks = True``: MAML and its variants, Reptile,
iMAML), ``step`` cuts the meta-batch into parts of a few tasks (``PART_ELEMENTS`` input
numbers: two Omniglot tasks, one mini-ImageNet task) and the worker threads of
``autograd.parallel`` compute the parts' meta-gradients at the same time
(``meta_gradients_in_parts``): both cores busy on every matrix product and kernel, and only
a few tasks' activations alive at once. On the 2-core machine the Omniglot MAML step went
from 0.83 s to about 0.55 s, and its process from 1.6 GB to 380 MB (parts of four tasks:
584 MB, no faster; of one: slower). The result equals ``meta_gradients`` of the whole batch
up to the order of summation (tests/test_parallel.py). A model that updates running
statistics in the query pass (a non-transductive ``Conv4``) keeps the whole batch, so that
the statistics are updated task after task as without parts.
"""
import math
import threading

import numpy as np

from autograd import Tensor, backend, grad, no_grad, parallel
from autograd.functional import Labels
from autograd.ops import mean, stack, sub_scaled, sum as tsum

from ..optim import Adam, clip_by_global_norm
from ..parameters import broadcast_to_tasks, detached, to_arrays
from ..tasks.batches import task_parts

PART_ELEMENTS = 1 << 17     # input numbers per part of a split meta-batch (two Omniglot tasks)

class NonFiniteError(FloatingPointError):
    """A loss or gradient became inf or NaN; the parameters were left unchanged."""


def as_tensor(array, dtype=None):
    """A host or device array as a constant Tensor on the active backend."""
    return Tensor.constant(backend.from_numpy(array, dtype=dtype))


def adam_1e3(params):
    return Adam(params, lr=1e-3)


class MetaLearner:
    """Base of every learner: data handling, per-task losses, the meta-test protocol and
    the optimizer and state plumbing. Subclasses write ``meta_gradients`` (and, when their
    adaptation is not the gradient step θ' = θ − α∇L, ``adapt_steps``)."""

    default_optimizer = staticmethod(adam_1e3)
    splits_tasks = False        # True: the meta-loss is a mean of independent per-task losses
    clip_norm = None            # a number: step clips the meta-gradient's global norm to it

    def __init__(self, model, params, loss_fn, optimizer=None, batched=True):
        self.model, self.params, self.loss_fn, self.batched = model, params, loss_fn, batched
        self.dtype = next(iter(params.values())).dtype
        self.last_metrics = {}
        self.optimizer = (optimizer or self.default_optimizer)(self.meta_parameters())

    # --- the contract -------------------------------------------------------------------
    def meta_parameters(self):
        """What the outer loop learns (Meta-SGD adds α)."""
        return self.params

    def meta_gradients(self, batch):
        raise NotImplementedError

    def step(self, batch):
        """One meta-iteration. Raises NonFiniteError, leaving every parameter as it was,
        when the loss or a gradient is not finite."""
        loss, grads = self.meta_gradients_in_parts(batch)
        metrics = self.check_finite(loss, grads)
        if self.clip_norm is not None:
            grads, _norm = clip_by_global_norm(grads, self.clip_norm)
        self.optimizer.step(grads)
        return metrics

    @property
    def last_metrics(self):
        """Metrics of this thread's last meta-loss (e.g. the query accuracy), one dict per
        thread: each worker thread computes the meta-loss of its own part of a batch."""
        return getattr(self._per_thread(), "metrics", {})

    @last_metrics.setter
    def last_metrics(self, value):
        self._per_thread().metrics = value

    def _per_thread(self):
        return self.__dict__.get("_thread") or self.__dict__.setdefault("_thread", threading.local())

    # --- a meta-batch in parts, on the worker threads ----------------------------------
    def parts(self, batch):
        """The parts ``step`` computes separately: consecutive tasks, about PART_ELEMENTS
        input numbers each; the whole batch where parts cannot help or must not be used
        (one worker, the GPU, ``splits_tasks`` False, running statistics updated)."""
        if (not self.splits_tasks or parallel.workers() == 1 or backend.name != "numpy"
                or getattr(self.model, "tracks_statistics", False)):
            return [batch]
        per_task = batch.support_x[0].size + batch.query_x[0].size
        return task_parts(batch, max(1, PART_ELEMENTS // per_task))

    def meta_gradients_in_parts(self, batch):
        """``meta_gradients(batch)``, computed part by part on the worker threads. With Tc
        tasks in part c of a batch of T,

            L = (1/T) Σᵢ Lᵢ = Σ_c (Tc/T) L_c,        ∇L = Σ_c (Tc/T) ∇L_c

        and the metrics (means over tasks) combine the same way."""
        parts = self.parts(batch)
        if len(parts) == 1:
            return self.meta_gradients(batch)
        T = self.n_tasks(batch)

        def part_gradients(part):
            loss, grads = self.meta_gradients(part)
            return (self.n_tasks(part) / T, loss.data,
                    {k: None if g is None else g.data for k, g in grads.items()}, self.last_metrics)
        done = parallel.map_workers(part_gradients, parts)

        def weighted(values):                                   # Σ_c (Tc/T) v_c
            return sum(d[0] * v for d, v in zip(done, values))
        loss = Tensor.constant(backend.xp.asarray(weighted(d[1] for d in done)))
        grads = {k: None if any(d[2][k] is None for d in done) else Tensor.constant(weighted(d[2][k] for d in done))
                 for k in done[0][2]}
        self.last_metrics = {k: weighted(d[3][k] for d in done) for k in done[0][3]}
        return loss, grads

    def check_finite(self, loss, grads):
        """{"loss": float, **last_metrics as floats}, read from the device in one transfer,
        after checking that the loss and every meta-gradient exist and are finite
        (RuntimeError, NonFiniteError otherwise)."""
        missing = [k for k, g in grads.items() if g is None]
        if missing:
            raise RuntimeError(f"{type(self).__name__}: parameters {missing} received no meta-gradient")
        metrics, finite = read_back({"loss": loss.data, **self.last_metrics},
                                    [backend.xp.isfinite(g.data).all() for g in grads.values()])
        bad = [k for k, ok in zip(grads, finite) if not ok]
        if not math.isfinite(metrics["loss"]) or bad:
            what = f"meta-loss {metrics['loss']}" if not math.isfinite(metrics["loss"]) else f"meta-gradient of {bad}"
            raise NonFiniteError(f"{type(self).__name__}: {what} is not finite")
        return metrics

    def adapt(self, batch, steps, inner_lr=None):
        """Each task's fast weights after ``steps`` meta-test steps on its support set
        (task-stacked when ``batched``)."""
        xs, ys = self.inputs(batch, "support")
        start = self.tasks_view(detached(self.params), self.n_tasks(batch))
        for fast in self.adapt_steps(start, xs, ys, steps, inner_lr):
            pass
        return fast

    def evaluate(self, batch, steps, classification=None, inner_lr=None):
        """Query loss (and accuracy, for integer labels) after 0, 1, …, ``steps`` meta-test
        steps on each task's support set: arrays (steps + 1, T).

        Adaptation starts from a detached copy of θ; no second-order graph is built and the
        model runs in ``"test"`` mode, so nothing the learner holds changes. ``inner_lr``
        overrides the learner's step size (e.g. to fine-tune every method alike).
        """
        xs, ys = self.inputs(batch, "support")
        xq, yq = self.inputs(batch, "query")
        if classification is None:
            classification = yq.dtype.kind in "iu"
        T = self.n_tasks(batch)
        start = detached(self.params)
        if self.batched:
            runs = [(broadcast_to_tasks(start, T), xs, ys, xq, yq)]
        else:
            runs = [(start, xs[t], ys[t], xq[t], yq[t]) for t in range(T)]
        per_run_losses, per_run_accs = [], []
        for fast0, x_s, y_s, x_q, y_q in runs:
            ls, acc = [], []
            for fast in self.adapt_steps(fast0, x_s, y_s, steps, inner_lr):
                with no_grad():
                    out = self.forward(fast, x_q, "test", query_step(len(ls)))
                    ls.append(backend.to_numpy(self.task_losses_from(out, y_q, fast).data))
                if classification:
                    acc.append(backend.to_numpy(accuracy(out.data, y_q.data)))
            per_run_losses.append(np.array(ls))
            per_run_accs.append(np.array(acc))
        result = {"loss": np.stack(per_run_losses, axis=-1).reshape(steps + 1, T)}
        if classification:
            result["accuracy"] = np.stack(per_run_accs, axis=-1).reshape(steps + 1, T)
        return result

    def state_dict(self):
        """Parameters, optimizer state and model state: nested dicts of arrays and numbers
        (``tinymeta.checkpoint`` stores them)."""
        return {"params": to_arrays(self.meta_parameters()),
                "optimizer": self.optimizer.state_dict(),
                "model": self.model.state_dict()}

    def load_state_dict(self, state):
        target = self.meta_parameters()
        saved = state["params"]
        if sorted(saved) != sorted(target):
            raise ValueError(f"{type(self).__name__}.load_state_dict: saved parameters "
                             f"{sorted(saved)} do not match the learner's {sorted(target)}")
        for k, p in target.items():
            a = saved[k]
            if tuple(a.shape) != tuple(p.shape) or np.dtype(a.dtype) != np.dtype(p.dtype):
                raise ValueError(f"{type(self).__name__}.load_state_dict: parameter {k!r} is "
                                 f"{a.dtype} {tuple(a.shape)}, the learner's is {p.dtype} {tuple(p.shape)}")
        for k, p in target.items():
            p.data[...] = backend.from_numpy(saved[k])
        self.optimizer.load_state_dict(state["optimizer"])
        self.model.load_state_dict(state.get("model", {}))

    # --- data ---------------------------------------------------------------------------
    def inputs(self, batch, which):
        """(x, y) of the batch's support or query sets as constants on the active backend.
        Integer y are class ``Labels``, their range read here, once, before they are moved."""
        x = as_tensor(getattr(batch, which + "_x"), self.dtype)
        y = getattr(batch, which + "_y")
        if isinstance(y, Labels):
            return x, y
        return x, Labels(y) if y.dtype.kind in "iu" else as_tensor(y, self.dtype)

    @staticmethod
    def n_tasks(batch):
        return len(batch.support_x)

    def tasks_view(self, params, T):
        """θ as the learner runs it: broadcast along the task axis when batched."""
        return broadcast_to_tasks(params, T) if self.batched else params

    # --- losses -------------------------------------------------------------------------
    def forward(self, params, x, mode, step=None):
        """f_θ(x); a model with per-step layers also gets the inner step (see above)."""
        if step is not None and getattr(self.model, "per_step", False):
            return self.model(params, x, mode=mode, step=step)
        return self.model(params, x, mode=mode)

    def task_losses(self, params, x, y, mode="train", step=None):
        """L_T(f_θ) per task: shape (T,) with a task axis, a scalar without."""
        return self.task_losses_from(self.forward(params, x, mode, step), y, params)

    def task_losses_from(self, out, y, params):
        per_example = self.loss_fn(out, y, reduction="none")
        if self._has_task_axis(params):
            return mean(per_example, axis=tuple(range(1, per_example.ndim)))
        return mean(per_example)

    def _has_task_axis(self, params):
        k = next(iter(self.params))
        return params[k].ndim == self.params[k].ndim + 1

    def query_loss(self, fast, xq, yq, step=None):
        """(1/T) Σᵢ L_Tᵢ(f_θ'ᵢ) on the query sets, in ``"train"`` mode; remembers the training
        accuracy of this pass (classification) for ``step``'s metrics."""
        out = self.forward(fast, xq, "train", step)
        losses = self.task_losses_from(out, yq, fast)
        self.last_metrics = {}
        if yq.dtype.kind in "iu":
            self.last_metrics["accuracy"] = accuracy(out.data, yq.data).mean()   # on the device: step reads it
        return mean(losses)

    # --- the inner loop -----------------------------------------------------------------
    def adapted_names(self):
        return list(self.params)

    def step_size(self, name):
        raise NotImplementedError

    def step_size_at(self, name, step):
        """α of inner step ``step`` (MAML++ learns one per step); by default ``step_size``."""
        return self.step_size(name)

    def inner_update(self, fast, x, y, create_graph, mode="adapt", inner_lr=None, step=None):
        """One gradient step of every task on its support set: θ' = θ − α ∇θ L_T(f_θ)."""
        losses = self.task_losses(fast, x, y, mode, step)
        total = tsum(losses) if losses.ndim else losses      # Σ_t L_t: slice t of ∇ is ∇L_t
        names = self.adapted_names()
        grads = grad(total, [fast[k] for k in names], create_graph=create_graph)
        new = dict(fast)
        for k, g in zip(names, grads):
            alpha = float(inner_lr) if inner_lr is not None else (
                self.step_size(k) if step is None else self.step_size_at(k, step))
            if isinstance(alpha, float):
                new[k] = sub_scaled(fast[k], g, alpha)         # θ' = θ − α ∇θ L_Ti(fθ), one node
            else:
                new[k] = fast[k] - alpha * g                   # θ' = θ − α ⊙ ∇θ L_Ti(fθ), α learned
        return new

    def inner_loop(self, fast, x, y, steps, create_graph, mode="adapt"):
        """θ'ᵢ after ``steps`` inner updates (meta-training: the graph is kept when
        ``create_graph``)."""
        for k in range(steps):
            fast = self.inner_update(fast, x, y, create_graph, mode, step=k)
        return fast

    def adapt_steps(self, fast, x, y, steps, inner_lr=None):
        """Yield the fast weights after 0, 1, …, ``steps`` meta-test steps (no graph kept)."""
        yield fast
        for k in range(steps):
            fast = detached(self.inner_update(fast, x, y, create_graph=False, mode="test",
                                              inner_lr=inner_lr, step=k))
            yield fast


def query_step(k):
    """The per-step layers' index of the query pass after k inner steps."""
    return max(k - 1, 0)


def read_back(values, flags):
    """({name: float}, [bool]) of device scalars (and numbers) and device booleans, brought
    to the host in one transfer: the only time a training step waits for the device."""
    xp = backend.xp
    if xp is np:                                 # already on the host: nothing to pack
        return {k: float(v) for k, v in values.items()}, [bool(f) for f in flags]
    on_device = [k for k, v in values.items() if hasattr(v, "dtype")]
    packed = [xp.asarray(values[k], dtype=xp.float64).reshape(()) for k in on_device]
    packed += [xp.asarray(f, dtype=xp.float64).reshape(()) for f in flags]
    host = backend.to_numpy(xp.stack(packed)) if packed else np.zeros(0)
    read = dict(zip(on_device, host))
    numbers = {k: float(read[k] if k in read else v) for k, v in values.items()}
    return numbers, [bool(v) for v in host[len(on_device):]]


def accuracy(logits, labels):
    """Fraction of correct arg-max predictions per task (arrays of the active backend)."""
    correct = logits.argmax(axis=-1) == labels
    return correct.mean(axis=-1) if correct.ndim > 1 else correct.mean()


def task_loop(learner, batch, per_task):
    """``stack([per_task(t) for t in tasks])``: the textbook per-task loop."""
    return stack([per_task(t) for t in range(learner.n_tasks(batch))])
