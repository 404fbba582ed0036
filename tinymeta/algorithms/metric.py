"""What the metric-based learners share (Prototypical, Matching and Relation Networks, and
the Siamese network at meta-test): a task is solved by comparing each query's embedding with
the support set's embeddings, never by gradient steps.

A metric learner writes one method, ``logits(params, batch, mode)``: a score (T, Q, ways)
for every query of every task and every class, larger for a likelier class. The contract of
``tinymeta.algorithms.base`` follows from it:

=============================  ==========================================================
``meta_gradients(batch)``      the mean query loss ``loss_fn(logits, y)`` over the tasks,
                               and its gradient (first order: no inner loop to go through)
``adapt(batch, steps)``        θ itself: comparing with the support set is the adaptation
``evaluate(batch, steps)``     query loss and accuracy per task; every one of the
                               ``steps + 1`` rows is the same, as there are no steps
=============================  ==========================================================

Nothing in it depends on the number of ways or shots, so one trained model serves any at
meta-test, where the method's comparison allows it.
"""
import numpy as np

from autograd import backend, grad, no_grad
from autograd import functional as F
from autograd.functional import Labels
from autograd.ops import getitem, mean

from .base import MetaLearner, accuracy, as_tensor


def support_one_hot(labels, who, dtype=np.float64):
    """Y with Y[t, k, n] = [y_tn = k], shape (T, ways, N), for support labels (T, N) with
    ways = max label + 1 (host arrays; a constant of the graph). Refuses a class without
    support examples: it could never be predicted."""
    labels = np.asarray(labels)
    ways = int(labels.max()) + 1
    onehot = (labels[..., None, :] == np.arange(ways)[:, None]).astype(dtype)
    if (onehot.sum(axis=-1) == 0).any():
        raise ValueError(f"{who}: some of the {ways} classes have no support example")
    return onehot


def rows(per_task, steps):
    """A per-task array (T,) as the (steps + 1, T) table ``evaluate`` returns."""
    per_task = np.asarray(backend.to_numpy(per_task), dtype=np.float64)
    return np.repeat(per_task[None], steps + 1, axis=0)


class MetricLearner(MetaLearner):
    def __init__(self, model, params, loss_fn=F.cross_entropy, optimizer=None, batched=True):
        super().__init__(model, params, loss_fn, optimizer, batched)

    def embed(self, params, batch, mode):
        """f_φ of every task's support and query examples in one pass, so batch-norm sees
        both (as the papers' code does): (z_support (T, S, ...), z_query (T, Q, ...))."""
        x = as_tensor(np.concatenate([batch.support_x, batch.query_x], axis=1), self.dtype)
        z = self.model(self.tasks_view(params, self.n_tasks(batch)), x, mode=mode)
        n_support = batch.support_x.shape[1]
        return getitem(z, (slice(None), slice(0, n_support))), getitem(z, (slice(None), slice(n_support, None)))

    def logits(self, params, batch, mode):
        """Scores (T, Q, ways) of every query for every class of its task."""
        raise NotImplementedError

    def meta_loss_of(self, params, batch):
        """The mean query loss over the batch's tasks, with φ = ``params``; remembers the
        training accuracy for ``step``'s metrics."""
        logits = self.logits(params, batch, mode="train")
        yq = Labels(np.asarray(batch.query_y))             # range read on the host, before upload
        self.last_metrics = {"accuracy": accuracy(logits.data, yq.data).mean()}   # stays on the device
        return mean(self.loss_fn(logits, yq, reduction="none"))

    def meta_gradients(self, batch):
        """(mean query loss, its gradient with respect to φ)."""
        loss = self.meta_loss_of(self.params, batch)
        names = list(self.params)
        return loss, dict(zip(names, grad(loss, [self.params[k] for k in names])))

    def adapt(self, batch, steps=0, inner_lr=None):
        """Comparing with the support set is the adaptation: θ itself, unchanged."""
        return self.params

    def evaluate(self, batch, steps=0, classification=None, inner_lr=None):
        """Query loss and accuracy per task, (steps + 1, T), every row the same (there are no
        gradient steps). The model runs in ``"test"`` mode; nothing the learner holds changes."""
        with no_grad():
            logits = self.logits(self.params, batch, mode="test")
            yq = Labels(np.asarray(batch.query_y))
            per_task = mean(self.loss_fn(logits, yq, reduction="none"), axis=-1)
        return {"loss": rows(per_task.data, steps), "accuracy": rows(accuracy(logits.data, yq.data), steps)}
