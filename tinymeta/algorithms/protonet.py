"""Prototypical Networks (Snell, Swersky & Zemel, 2017).

An embedding f_φ maps every image to a vector. A task's classes are represented by their
*prototypes*, the mean embedding of each class's support examples,

    c_k = (1/|S_k|) Σ_(x, y) ∈ S_k f_φ(x),

and a query is classified by a softmax over negative squared Euclidean distances,

    p(y = k | x) = exp(−‖f_φ(x) − c_k‖²) / Σ_k' exp(−‖f_φ(x) − c_k'‖²).

The meta-objective is the cross-entropy of the query labels; there is no inner loop, so
"adaptation" is computing the prototypes, and one model serves any number of ways and shots
at meta-test (``metric.MetricLearner``). Only first derivatives are needed.
"""
from autograd import functional as F
from autograd.ops import matmul, sum as tsum, swapaxes

from .base import as_tensor
from .metric import MetricLearner, support_one_hot


def one_hot_means(labels, ways, dtype):
    """A (T, ways, N) matrix M with M[t, k, n] = [y_tn = k] / |S_tk|: M @ z averages the
    embeddings of each class (host arrays; a constant of the graph)."""
    onehot = support_one_hot(labels, "ProtoNet", dtype)
    if onehot.shape[-2] != ways:
        raise ValueError(f"ProtoNet: some of the {ways} classes have no support example")
    return onehot / onehot.sum(axis=-1, keepdims=True)


def squared_distances(q, c):
    """‖q_n − c_k‖² for q (T, Q, D) and c (T, K, D): (T, Q, K), as ‖q‖² − 2 q·c + ‖c‖²."""
    qq = tsum(q * q, axis=-1, keepdims=True)                        # (T, Q, 1)
    cc = swapaxes(tsum(c * c, axis=-1, keepdims=True), -1, -2)      # (T, 1, K)
    return qq - 2.0 * matmul(q, c, transpose_b=True) + cc


class ProtoNet(MetricLearner):
    def __init__(self, model, params, loss_fn=F.cross_entropy, optimizer=None, batched=True):
        super().__init__(model, params, loss_fn, optimizer, batched)

    def logits(self, params, batch, mode):
        """−‖f_φ(x) − c_k‖² for every query of every task: (T, ways·queries, ways)."""
        zs, zq = self.embed(params, batch, mode)                                       # f_φ(x)
        ways = int(batch.support_y.max()) + 1
        prototypes = matmul(as_tensor(one_hot_means(batch.support_y, ways, self.dtype)), zs)   # c_k = mean f_φ(x ∈ S_k)
        return -squared_distances(zq, prototypes)                                      # −‖f_φ(x) − c_k‖²
