"""Prototypical Networks (Snell, Swersky & Zemel, 2017).

An embedding f_φ maps every image to a vector. A task's classes are represented by their
*prototypes*, the mean embedding of each class's support examples,

    c_k = (1/|S_k|) Σ_(x, y) ∈ S_k f_φ(x),

and a query is classified by a softmax over negative squared Euclidean distances,

    p(y = k | x) = exp(−‖f_φ(x) − c_k‖²) / Σ_k' exp(−‖f_φ(x) − c_k'‖²).

The meta-objective is the cross-entropy of the query labels; there is no inner loop, so
"adaptation" is computing the prototypes, and one model serves any number of ways and shots
at meta-test. Only first derivatives are needed.

The support and query images of a task go through the embedding together (one batch, as in
the paper's code, so batch-norm sees both), with the task axis like the other learners.
"""
import numpy as np

from autograd import backend, grad, no_grad
from autograd import functional as F
from autograd.functional import Labels
from autograd.ops import getitem, matmul, mean, sum as tsum, swapaxes

from .base import MetaLearner, accuracy, as_tensor


def one_hot_means(labels, ways, dtype):
    """A (T, ways, N) matrix M with M[t, k, n] = [y_tn = k] / |S_tk|: M @ z averages the
    embeddings of each class (host arrays; a constant of the graph)."""
    onehot = (labels[..., None, :] == np.arange(ways)[:, None]).astype(dtype)
    counts = onehot.sum(axis=-1, keepdims=True)
    if (counts == 0).any():
        raise ValueError(f"ProtoNet: some of the {ways} classes have no support example")
    return onehot / counts


def squared_distances(q, c):
    """‖q_n − c_k‖² for q (T, Q, D) and c (T, K, D): (T, Q, K), as ‖q‖² − 2 q·c + ‖c‖²."""
    qq = tsum(q * q, axis=-1, keepdims=True)                        # (T, Q, 1)
    cc = swapaxes(tsum(c * c, axis=-1, keepdims=True), -1, -2)      # (T, 1, K)
    return qq - 2.0 * matmul(q, c, transpose_b=True) + cc


class ProtoNet(MetaLearner):
    def __init__(self, model, params, loss_fn=F.cross_entropy, optimizer=None, batched=True):
        super().__init__(model, params, loss_fn, optimizer, batched)

    def logits(self, params, batch, mode):
        """−‖f_φ(x) − c_k‖² for every query of every task: (T, ways·queries, ways)."""
        ys = np.asarray(batch.support_y)
        ways = int(ys.max()) + 1
        x = as_tensor(np.concatenate([batch.support_x, batch.query_x], axis=1), self.dtype)
        n_support = batch.support_x.shape[1]
        z = self.model(self.tasks_view(params, self.n_tasks(batch)), x, mode=mode)   # f_φ(x): (T, S+Q, D)
        zs = getitem(z, (slice(None), slice(0, n_support)))
        zq = getitem(z, (slice(None), slice(n_support, None)))
        prototypes = matmul(as_tensor(one_hot_means(ys, ways, self.dtype)), zs)       # c_k = mean f_φ(x ∈ S_k)
        return -squared_distances(zq, prototypes)                                      # −‖f_φ(x) − c_k‖²

    def meta_loss_of(self, params, batch):
        """The mean query cross-entropy −log p(y | x) over the batch's tasks, with φ = ``params``."""
        logits = self.logits(params, batch, mode="train")
        yq = Labels(np.asarray(batch.query_y))
        self.last_metrics = {"accuracy": accuracy(logits.data, yq.data).mean()}      # read by step
        return mean(self.loss_fn(logits, yq, reduction="none"))

    def meta_gradients(self, batch):
        """(mean query cross-entropy, its gradient with respect to φ)."""
        loss = self.meta_loss_of(self.params, batch)
        names = list(self.params)
        return loss, dict(zip(names, grad(loss, [self.params[k] for k in names])))

    def adapt(self, batch, steps=0, inner_lr=None):
        """The prototypes are the adaptation: θ itself, unchanged."""
        return self.params

    def evaluate(self, batch, steps=0, classification=None, inner_lr=None):
        """Query loss and accuracy with the support set's prototypes: (steps + 1, T), every
        row the same (there are no gradient steps)."""
        with no_grad():
            logits = self.logits(self.params, batch, mode="test")
            yq = Labels(np.asarray(batch.query_y))
            per_task = mean(self.loss_fn(logits, yq, reduction="none"), axis=-1)
        loss = backend.to_numpy(per_task.data)
        acc = backend.to_numpy(accuracy(logits.data, yq.data))
        return {"loss": np.repeat(loss[None], steps + 1, axis=0),
                "accuracy": np.repeat(np.asarray(acc, dtype=np.float64)[None], steps + 1, axis=0)}
