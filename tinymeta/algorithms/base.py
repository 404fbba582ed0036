"""What every meta-learner shares: per-task losses and accuracies, the task axis, and
meta-test evaluation (adapt for k steps, measure on the query set after each step).

A *task batch* is any object with ``support_x, support_y, query_x, query_y`` arrays whose
leading axis indexes the T tasks (see ``tinymeta.tasks``).

Two ways to run a meta-batch, with equal results (tests check it to 1e-10):

* ``batched=True`` (default, fast): θ is broadcast to T copies along a leading task axis and
  all tasks run as one batched computation; the sum of the per-task losses is
  differentiated once, and since task t's loss depends only on copy t, its slice of that
  gradient is exactly ∇θ L_Tt.
* ``batched=False``: a Python loop over tasks, the textbook reading.
"""
import numpy as np

from autograd import Tensor, backend, grad, no_grad
from autograd.ops import mean, sub_scaled, sum as tsum

from ..parameters import broadcast_to_tasks


def _tensor(array, dtype=None):
    return Tensor.constant(backend.from_numpy(array, dtype=dtype))


class MetaLearner:
    def __init__(self, model, params, loss_fn, batched=True):
        self.model, self.params, self.loss_fn, self.batched = model, params, loss_fn, batched
        self.dtype = next(iter(params.values())).dtype

    # --- data ---------------------------------------------------------------------------
    def inputs(self, batch, which):
        x = _tensor(getattr(batch, which + "_x"), self.dtype)
        y = backend.from_numpy(getattr(batch, which + "_y"))
        y = _tensor(y) if y.dtype.kind in "iu" else _tensor(y, self.dtype)
        return x, y

    @staticmethod
    def n_tasks(batch):
        return len(batch.support_x)

    # --- losses -------------------------------------------------------------------------
    def task_losses(self, params, x, y, training=True, track_running=True):
        """L_T(f_θ) per task: shape (T,) with a task axis, a scalar without."""
        out = self.model(params, x, training=training, track_running=track_running)
        per_example = self.loss_fn(out, y, reduction="none")
        if self._has_task_axis(params):
            return mean(per_example, axis=tuple(range(1, per_example.ndim)))
        return mean(per_example)

    def _has_task_axis(self, params):
        k = next(iter(self.params))
        return params[k].ndim == self.params[k].ndim + 1

    def accuracies(self, params, x, y, training=True):
        """Fraction of correct arg-max predictions per task (classification only)."""
        with no_grad():
            logits = self.model(params, x, training=training).data
        correct = (logits.argmax(axis=-1) == y.data)
        return backend.to_numpy(correct.mean(axis=-1) if correct.ndim > 1 else correct.mean())

    # --- the inner loop -----------------------------------------------------------------
    def adapted_names(self):
        return list(self.params)

    def step_size(self, name):
        raise NotImplementedError

    def inner_update(self, fast, x, y, create_graph, training=True):
        """One gradient step of every task on its support set: θ' = θ − α ∇θ L_T(f_θ)."""
        losses = self.task_losses(fast, x, y, training, track_running=False)
        total = tsum(losses) if losses.ndim else losses     # Σ_t L_t: slice t of ∇ is ∇L_t
        names = self.adapted_names()
        grads = grad(total, [fast[k] for k in names], create_graph=create_graph)
        new = dict(fast)
        for k, g in zip(names, grads):
            alpha = self.step_size(k)
            if isinstance(alpha, float):
                new[k] = sub_scaled(fast[k], g, alpha)        # θ' = θ − α ∇θ L_Ti(fθ), one node
            else:
                new[k] = fast[k] - alpha * g                  # θ' = θ − α ⊙ ∇θ L_Ti(fθ), α learned
        return new

    def adapt(self, params, x, y, steps, create_graph, training=True):
        fast = params
        for _ in range(steps):
            fast = self.inner_update(fast, x, y, create_graph, training)
        return fast

    # --- meta-test ----------------------------------------------------------------------
    def evaluate(self, batch, steps, classification=False):
        """Query loss (and accuracy) after 0, 1, …, ``steps`` inner steps: arrays (steps+1, T).

        Adaptation starts from a detached copy of θ; no second-order graph is built. The model
        runs in meta-test mode (``training=False``): a non-transductive batch-norm uses its
        running statistics and does not update them.
        """
        xs, ys = self.inputs(batch, "support")
        xq, yq = self.inputs(batch, "query")
        T = self.n_tasks(batch)
        start = {k: Tensor(v.data, requires_grad=True) for k, v in self.params.items()}
        if self.batched:
            runs = [(broadcast_to_tasks(start, T), xs, ys, xq, yq)]
        else:
            runs = [(start, xs[t], ys[t], xq[t], yq[t]) for t in range(T)]
        per_run_losses, per_run_accs = [], []
        for fast, x_s, y_s, x_q, y_q in runs:
            ls, acc = [], []
            for step in range(steps + 1):
                with no_grad():
                    ls.append(backend.to_numpy(self.task_losses(fast, x_q, y_q, training=False).data))
                if classification:
                    acc.append(self.accuracies(fast, x_q, y_q, training=False))
                if step < steps:
                    fast = self.inner_update(fast, x_s, y_s, create_graph=False, training=False)
                    fast = {k: Tensor(v.data, requires_grad=True) for k, v in fast.items()}
            per_run_losses.append(np.array(ls))
            per_run_accs.append(np.array(acc))
        losses = np.stack(per_run_losses, axis=-1).reshape(steps + 1, T)
        out = {"loss": losses}
        if classification:
            out["accuracy"] = np.stack(per_run_accs, axis=-1).reshape(steps + 1, T)
        return out
