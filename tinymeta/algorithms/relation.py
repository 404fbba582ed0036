"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, 2018).

An embedding module f_φ maps each image to a feature map; the K support maps of class k are
summed into one class map; a relation module g_ϕ scores each (query, class) pair from the
two maps concatenated along the channels, C(·, ·):

    r_{q,k} = g_ϕ(C(Σ_{x_i ∈ S_k} f_φ(x_i), f_φ(x_q)))          (eq. 1; K-shot: summed)

trained by regression of the scores onto the one-hot labels,

    L = Σ_q Σ_k (r_{q,k} − [y_q = k])²                            (eq. 2; here averaged)

The modules (``RelationModel``, Sung et al.'s Omniglot architecture in the Conv4 family):
the embedding is four blocks of 3×3 conv (64 filters, padding 1), batch-norm and ReLU, with a
2×2 max-pool after the first two (28 → 14 → 7: 64 maps of 7×7; the paper pads only the last
two convolutions, 5×5 maps); the relation module is two such blocks with max-pool on the 128
concatenated channels (7 → 3 → 1), then 64 → 8 (ReLU) → 1 (sigmoid). Batch-norm uses the
statistics of the batch at training and at test alike, as the paper's code does (its
``momentum=1`` running averages are the last batch's). The class maps are sums, not means,
and the loss averages over the (query, class) pairs, as the authors' code does.
"""
import numpy as np

from autograd import Tensor, backend
from autograd import functional as F
from autograd.ops import getitem, matmul, mean, reshape, sigmoid, transpose

from ..models.init import check_mode, glorot_uniform
from ..parameters import leaves
from .base import as_tensor
from .metric import MetricLearner, support_one_hot

PAD = (1, 1)          # padding of every 3×3 conv
ONE = (1, 1)          # stride


def conv_block(h, params, name, pool):
    """3×3 conv → batch-norm (batch statistics) → ReLU → [2×2 max-pool], channel-major
    (T, C, N, H, W) with task-stacked parameters. The conv bias is not added: batch
    statistics cancel it (``batch_norm_relu``'s ``cancelled_bias``)."""
    h = F.conv2d_grouped(h, params[f"{name}.w"], None, ONE, PAD)
    h = F.batch_norm_relu(h, params[f"{name}.gamma"], params[f"{name}.beta"], cancelled_bias=params[f"{name}.b"])
    return F.max_pool2d(h, 2) if pool else h


def one_hot_mse(scores, labels, reduction="mean"):
    """(r_{q,k} − [y_q = k])² averaged over the classes: per query (…, Q), or reduced."""
    onehot = (labels.data[..., None] == backend.xp.arange(scores.shape[-1])).astype(scores.dtype)
    per_query = mean(F.mse_loss(scores, Tensor.constant(onehot), reduction="none"), axis=-1)
    return per_query if reduction == "none" else mean(per_query)


class RelationModel:
    """The embedding module f_φ (``__call__``: images → maps) and the relation module g_ϕ
    (``relate``), with the parameters of both."""

    def __init__(self, in_channels=1, filters=64, image_size=28, hidden=8):
        self.in_channels, self.filters, self.hidden = int(in_channels), int(filters), int(hidden)
        self.image_size = int(image_size)
        self.map_size = self.image_size // 4                            # two 2×2 pools
        if self.map_size // 4 < 1:
            raise ValueError(f"RelationModel: image size {image_size} is too small: the relation "
                             "module pools the 1/4-size maps twice more (at least 16 pixels)")
        self.features = self.filters * (self.map_size // 4) ** 2        # after the relation blocks
        self.head = ()

    def init(self, rng, dtype=np.float32):
        arrays, c_in = {}, self.in_channels
        blocks = [(f"conv{i}", c) for i, c in enumerate([c_in] + [self.filters] * 3)]
        blocks += [("relation.conv0", 2 * self.filters), ("relation.conv1", self.filters)]
        for name, c in blocks:
            arrays[f"{name}.w"] = glorot_uniform(rng, (self.filters, c, 3, 3))
            arrays[f"{name}.b"] = np.zeros(self.filters)
            arrays[f"{name}.gamma"] = np.ones(self.filters)
            arrays[f"{name}.beta"] = np.zeros(self.filters)
        arrays["relation.fc0.w"] = glorot_uniform(rng, (self.hidden, self.features))
        arrays["relation.fc0.b"] = np.zeros(self.hidden)
        arrays["relation.fc1.w"] = glorot_uniform(rng, (1, self.hidden))
        arrays["relation.fc1.b"] = np.zeros(1)
        return leaves(arrays, dtype)

    def __call__(self, params, x, mode="train"):
        """f_φ(x): images (T, N, C, H, W) → maps (T, N, filters, H/4, W/4), task-stacked params."""
        check_mode("RelationModel", mode)
        if x.ndim != 5 or x.shape[2] != self.in_channels:
            raise ValueError(f"RelationModel: expected images (T, N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h = transpose(x, (0, 2, 1, 3, 4))                               # channel-major (T, C, N, H, W)
        for i in range(4):
            h = conv_block(h, params, f"conv{i}", pool=i < 2)
        return transpose(h, (0, 2, 1, 3, 4))

    def relate(self, params, classes, queries):
        """r_{q,k} = g_ϕ(C(class map k, query map q)) for class maps (T, K, C, h, w) and query
        maps (T, Q, C, h, w): (T, Q, K).

        The first convolution is linear in its input, so on the concatenation it is the sum of
        its two halves, W C(a, b) = W_a a + W_b b: each class map and each query map is
        convolved once, not once per pair."""
        T, K, Q = classes.shape[0], classes.shape[1], queries.shape[1]
        C = self.filters
        w = params["relation.conv0.w"]                                  # (T, C, 2C, 3, 3)
        w_class = getitem(w, (slice(None), slice(None), slice(0, C)))
        w_query = getitem(w, (slice(None), slice(None), slice(C, 2 * C)))
        a = F.conv2d_grouped(transpose(classes, (0, 2, 1, 3, 4)), w_class, params["relation.conv0.b"], ONE, PAD)
        b = F.conv2d_grouped(transpose(queries, (0, 2, 1, 3, 4)), w_query, None, ONE, PAD)
        s = a.shape[-1]
        pairs = reshape(a, (T, C, 1, K, s, s)) + reshape(b, (T, C, Q, 1, s, s))   # W_a a_k + W_b b_q
        h = F.batch_norm_relu(reshape(pairs, (T, C, Q * K, s, s)),
                              params["relation.conv0.gamma"], params["relation.conv0.beta"])
        h = conv_block(F.max_pool2d(h, 2), params, "relation.conv1", pool=True)
        h = transpose(reshape(h, (T, C, Q * K, -1)), (0, 2, 1, 3))      # (T, QK, C, s²)
        h = reshape(h, (T, Q * K, self.features))
        h = F.relu(F.linear(h, params["relation.fc0.w"], params["relation.fc0.b"]))
        r = sigmoid(F.linear(h, params["relation.fc1.w"], params["relation.fc1.b"]))
        return reshape(r, (T, Q, K))

    def state_dict(self):
        """No state: batch-norm always uses batch statistics."""
        return {}

    def load_state_dict(self, state):
        if state:
            raise ValueError(f"RelationModel.load_state_dict: the model has no state, got {sorted(state)}")


class RelationNet(MetricLearner):
    def __init__(self, model, params, optimizer=None, batched=True):
        super().__init__(model, params, one_hot_mse, optimizer, batched)

    def logits(self, params, batch, mode):
        """The relation scores r_{q,k} ∈ (0, 1): (T, Q, ways)."""
        zs, zq = self.embed(params, batch, mode)                       # f_φ(x): (T, N, C, h, w)
        T, S = zs.shape[:2]
        Y = as_tensor(support_one_hot(batch.support_y, "RelationNet", self.dtype))   # (T, K, S)
        classes = matmul(Y, reshape(zs, (T, S, -1)))                    # Σ_{x_i ∈ S_k} f_φ(x_i)
        classes = reshape(classes, (T, Y.shape[1]) + tuple(zs.shape[2:]))
        return self.model.relate(self.tasks_view(params, T), classes, zq)   # r = g_ϕ(C(·, ·))
