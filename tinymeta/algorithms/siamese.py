"""Siamese neural networks for one-shot image recognition (Koch, Zemel & Salakhutdinov, 2015).

Twin networks share one embedding f_φ (here the Conv4 embedding, 28×28, instead of the
paper's larger 105×105 network). A pair is scored by a weighted L1 distance between the two
embeddings and a sigmoid,

    p(x₁, x₂) = σ(Σ_j α_j |f_φ(x₁)_j − f_φ(x₂)_j| + β)                (Koch et al., Section 3.1)

and the network is trained on same/different pairs (``tinymeta.tasks.pairs``) with the binary
cross-entropy of t = [x₁ and x₂ show one class],

    L = −t log p − (1 − t) log(1 − p).

It learns to verify, not to classify: at meta-test a query is given the class of the most
similar support image,

    ŷ(x̂) = y_{i*},   i* = argmax_i p(x̂, x_i)                         (Section 4.2)

so one model serves any number of ways and shots. Only first derivatives are needed.
"""
import numpy as np

from autograd import Tensor, backend, no_grad
from autograd.ops import getitem, logsumexp, matmul, max as tmax, mean, relu, reshape, stack, where

from ..parameters import leaves
from .base import accuracy, as_tensor
from .metric import MetricLearner, rows, support_one_hot


def binary_cross_entropy(z, t):
    """−t log σ(z) − (1 − t) log(1 − σ(z)) = softplus(z) − t z per element, for logits z and
    targets t; softplus(z) = log(1 + eᶻ) as the log-sum-exp of (0, z), so no |z| overflows."""
    zeros = Tensor.constant(backend.xp.zeros(z.shape, dtype=z.dtype))
    return logsumexp(stack([zeros, z], axis=-1), axis=-1) - t * z


class SiameseModel:
    """Koch et al.'s twin network: a shared embedding (``__call__``) and the weighted-L1 layer
    (``logit``). Parameters: the embedding's plus ``siamese.alpha`` (1, D) and
    ``siamese.beta`` (1,)."""

    def __init__(self, embedding):
        self.embedding, self.features, self.head = embedding, embedding.features, ()

    def init(self, rng, dtype=np.float32):
        params = self.embedding.init(rng, dtype)
        params.update(leaves({"siamese.alpha": rng.normal(0.0, 0.2, (1, self.features)),   # Koch: N(0, 0.2)
                              "siamese.beta": np.zeros(1)}, dtype))
        return params

    def __call__(self, params, x, mode="train"):
        return self.embedding(params, x, mode)                       # f_φ(x), the twins' shared weights

    def logit(self, params, z1, z2):
        """Σ_j α_j |z1_j − z2_j| + β for embeddings (..., D) that broadcast: (...)."""
        d = z1 - z2
        l1 = relu(d) + relu(-d)                                       # |f_φ(x₁) − f_φ(x₂)|
        return reshape(matmul(l1, params["siamese.alpha"], transpose_b=True), l1.shape[:-1]) + params["siamese.beta"]

    def state_dict(self):
        return self.embedding.state_dict()

    def load_state_dict(self, state):
        self.embedding.load_state_dict(state)


class Siamese(MetricLearner):
    """Trained on ``Pairs`` batches (``meta_gradients``/``step``), evaluated on episodes."""

    def __init__(self, model, params, optimizer=None, batched=True):
        super().__init__(model, params, None, optimizer, batched)

    def pair_logits(self, params, pairs, mode):
        """Σ α |f_φ(x₁) − f_φ(x₂)| + β for every pair: (n,). Both sides go through the
        embedding as one batch (the twins share φ, and batch-norm sees both)."""
        n = len(pairs)
        x = as_tensor(np.concatenate([pairs.first, pairs.second]), self.dtype)
        z = self.model(params, x, mode=mode)
        return self.model.logit(params, getitem(z, slice(0, n)), getitem(z, slice(n, 2 * n)))

    def meta_loss_of(self, params, pairs):
        """Mean binary cross-entropy of the pairs; remembers how many were verified right."""
        z = self.pair_logits(params, pairs, mode="train")
        t = as_tensor(pairs.same, self.dtype)
        self.last_metrics = {"accuracy": ((z.data > 0) == (t.data > 0.5)).mean()}      # read by step, on the device
        return mean(binary_cross_entropy(z, t))

    def support_logits(self, params, batch, mode):
        """The pair logit of every query with every support example of its task: (T, Q, S)."""
        zs, zq = self.embed(params, batch, mode)
        T, S, Q = zs.shape[0], zs.shape[1], zq.shape[1]
        return self.model.logit(params, reshape(zq, (T, Q, 1, -1)), reshape(zs, (T, 1, S, -1)))

    def logits(self, params, batch, mode):
        """Each class's best pair logit, whose arg-max is the class of the most similar support
        image: (T, Q, ways)."""
        return most_similar(self.support_logits(params, batch, mode), batch.support_y)

    def evaluate(self, batch, steps=0, classification=None, inner_lr=None):
        """Query accuracy (the most similar support image's class) and loss (the binary
        cross-entropy of every (query, support) pair of the task) per task, (steps + 1, T),
        every row the same."""
        with no_grad():
            pair = self.support_logits(self.params, batch, mode="test")
            same = batch.query_y[:, :, None] == batch.support_y[:, None, :]
            loss = mean(binary_cross_entropy(pair, as_tensor(same, self.dtype)), axis=(1, 2))
            scores = most_similar(pair, batch.support_y)
        yq = backend.from_numpy(np.asarray(batch.query_y))
        return {"loss": rows(loss.data, steps), "accuracy": rows(accuracy(scores.data, yq), steps)}


def most_similar(pair, support_y):
    """max_{x_i ∈ S_k} of the pair logits (T, Q, S): (T, Q, ways). σ is increasing, so the
    arg-max over k is the class of i* = argmax_i p(x̂, x_i)."""
    T, Q, S = pair.shape
    Y = support_one_hot(support_y, "Siamese", bool)                              # (T, ways, S)
    lowest = float(np.finfo(pair.dtype).min)
    in_class = where(backend.from_numpy(Y[:, None]), reshape(pair, (T, Q, 1, S)), lowest)
    return tmax(in_class, axis=-1)                                               # max_{i ∈ S_k}
