"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, 2016).

A query x̂ is labelled by attention over the support set S = {(x_i, y_i)}:

    P(ŷ = k | x̂, S) = Σ_i a(x̂, x_i) [y_i = k]                              (eq. 1)
    a(x̂, x_i) = exp c(f(x̂), g(x_i)) / Σ_j exp c(f(x̂), g(x_j))               (eq. 2)

with c the cosine similarity, and trained on −log P(y | x̂, S) of the query labels.

Without full context embeddings, f = g = the Conv4 embedding. With them (Appendix A.1 and
A.2, ``FullContextEmbedding``), each support embedding is read in the context of the whole
support set, and each query embedding attends to the support set K times:

    g(x_i, S) = h→_i + h←_i + g'(x_i)       a bidirectional LSTM over g'(x_1), …, g'(x_|S|)
    ĥ_k, c_k = LSTM(f'(x̂), [h_{k−1}, r_{k−1}], c_{k−1})
    h_k = ĥ_k + f'(x̂)
    r_{k−1} = Σ_i softmax_i(h_{k−1}ᵀ g(x_i)) g(x_i)
    f(x̂, S) = h_K

from ĥ_0 = c_0 = 0 (so h_0 = f'(x̂), and the first read is with the query's own embedding),
f' = g' = the Conv4 embedding. The support set is read in the episode's order (label by
label). The paper gives no K for Omniglot; the experiment's default is ours.

With ``scale`` (not in the paper: the metric scaling of Oreshkin et al. 2018, TADAM), a
learned scalar α, starting at ``scale``, multiplies the cosines before the softmax:
a(x̂, x_i) = softmax_i α·c(f(x̂), g(x_i)). Cosines of ReLU features lie in [0, 1], so without
α the attention can never be confident: P(y | x̂, S) ≤ e / (e + N − 1) for N support images.
"""
import numpy as np

from autograd import Tensor, backend
from autograd import functional as F
from autograd.functional.similarity import cosine_similarity
from autograd.ops import concatenate, log, matmul, softmax

from ..parameters import leaves
from .base import as_tensor
from .metric import MetricLearner, support_one_hot

LSTMS = ("fce.g.forward", "fce.g.backward", "fce.f")      # the three LSTMs of the full context
SCALE = "attention.scale"                                   # α of the metric scaling, shape (1,)


def lstm_of(params, name):
    """The parameters of one LSTM, named as ``autograd.functional.lstm_cell`` expects."""
    return {k: params[f"{name}.{k}"] for k in ("w_ih", "w_hh", "b")}


class FullContextEmbedding:
    """Matching Networks' embedding with full context: a base embedding f' = g' (e.g. a
    headless Conv4) whose support embeddings a bidirectional LSTM reads in context and whose
    query embeddings an attention LSTM reads against them, ``steps`` (K) times.

    As a model it is the base embedding (``__call__``, state); ``context`` does the reading.
    Its parameters are the base's plus ``fce.g.forward.*``, ``fce.g.backward.*``, ``fce.f.*``.
    """

    def __init__(self, base, steps):
        if int(steps) < 1:
            raise ValueError(f"FullContextEmbedding: steps (K read steps) must be >= 1, got {steps}")
        self.base, self.steps, self.features = base, int(steps), base.features
        self.head = ()

    def init(self, rng, dtype=np.float32):
        params = self.base.init(rng, dtype)
        D = self.features
        for name in LSTMS:
            recurrent = 2 * D if name == "fce.f" else D               # the attention LSTM reads [h, r]
            arrays = F.lstm_parameters(rng, D, D, recurrent)
            params.update(leaves({f"{name}.{k}": v for k, v in arrays.items()}, dtype))
        return params

    def __call__(self, params, x, mode="train"):
        return self.base(params, x, mode)                             # f'(x) = g'(x)

    def context(self, params, zs, zq):
        """(g(x_i, S) for the support set (T, S, D), f(x̂, S) for the queries (T, Q, D)) from
        the base embeddings g'(x_i) and f'(x̂)."""
        ahead, behind = F.bidirectional_lstm(zs, lstm_of(params, "fce.g.forward"),
                                             lstm_of(params, "fce.g.backward"))
        g = ahead + behind + zs                                       # g(x_i, S) = h→_i + h←_i + g'(x_i)
        attention_lstm = lstm_of(params, "fce.f")
        h_hat = c = Tensor.constant(backend.xp.zeros(zq.shape, dtype=zq.dtype))   # ĥ_0 = c_0 = 0
        for _ in range(self.steps):
            h = h_hat + zq                                            # h_{k−1} = ĥ_{k−1} + f'(x̂)
            read = matmul(softmax(matmul(h, g, transpose_b=True), axis=-1), g)   # r_{k−1} = Σ_i softmax(h_{k−1}ᵀ g(x_i)) g(x_i)
            h_hat, c = F.lstm_cell(zq, concatenate([h, read], axis=-1), c, attention_lstm)   # ĥ_k, c_k = LSTM(f'(x̂), [h_{k−1}, r_{k−1}], c_{k−1})
        return g, h_hat + zq                                          # f(x̂, S) = h_K

    def state_dict(self):
        return self.base.state_dict()

    def load_state_dict(self, state):
        self.base.load_state_dict(state)


class MatchingNet(MetricLearner):
    """Matching Networks as a learner; with a ``FullContextEmbedding`` model, the embeddings
    are read in the context of the support set (FCE)."""

    def __init__(self, model, params, optimizer=None, batched=True, scale=None):
        if scale is not None:
            if not float(scale) > 0:
                raise ValueError(f"MatchingNet: scale (the initial α of α·cos) must be > 0, got {scale}")
            dtype = next(iter(params.values())).dtype
            params = {**params, SCALE: Tensor(backend.xp.full((1,), float(scale), dtype=dtype), requires_grad=True)}
        super().__init__(model, params, F.cross_entropy, optimizer, batched)
        self.fce = isinstance(model, FullContextEmbedding)

    def attention(self, params, batch, mode):
        """a(x̂, x_i) for every query and support example of every task: (T, Q, S)."""
        zs, zq = self.embed(params, batch, mode)                      # g'(x_i), f'(x̂)
        if self.fce:
            zs, zq = self.model.context(params, zs, zq)               # g(x_i, S), f(x̂, S)
        c = cosine_similarity(zq, zs)                                 # c(f(x̂), g(x_i))
        if SCALE in params:
            c = params[SCALE] * c                                     # α·c, metric scaling
        return softmax(c, axis=-1)                                    # a(x̂, x_i) = softmax_i c(f(x̂), g(x_i))

    def logits(self, params, batch, mode):
        """log P(ŷ = k | x̂, S): (T, Q, ways). As Σ_k P = 1, the cross-entropy's softmax of these
        logits is P itself, so the loss is −log P(y | x̂, S) exactly."""
        Y = as_tensor(support_one_hot(batch.support_y, "MatchingNet", self.dtype))   # (T, ways, S)
        P = matmul(self.attention(params, batch, mode), Y, transpose_b=True)          # P(ŷ = k) = Σ_i a(x̂, x_i) y_ik
        return log(P)
