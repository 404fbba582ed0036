"""The four-block convolutional network of the MAML paper (after Vinyals et al., 2016).

Each block: 3×3 conv → batch-norm → ReLU, then either a stride-2 conv (Omniglot: the conv
itself has stride 2, 64 filters) or a 2×2 max-pool (mini-ImageNet, 32 filters). A linear
head maps the features to the classes (``ways=None``: no head, the features are the output,
as the metric-based learners use it). On Omniglot 28×28 the map shrinks 28→14→7→4→2 and
is averaged over space (as the MAML code does without max-pool): 64 features. On
mini-ImageNet 84×84 it shrinks 84→42→21→10→5 and is flattened: 32·5·5 = 800 features.

Where batch-norm uses batch statistics the conv bias b is not added: the statistics cancel
it, BN_B(W∗h + b) = BN_B(W∗h), so it changes no output and its gradient is exactly 0;
``batch_norm_relu(..., cancelled_bias=b)`` gives it that gradient and adds it to the running
mean (tests/test_backend.py checks this against the network that adds it). With running
statistics (meta-test, ``transductive=False``) the bias is added.

Initialisation as in the MAML code: conv and head weights Glorot-uniform, biases zero,
batch-norm scale 1 and offset 0. The batch-norm scale and offset are parameters like the
others, adapted in the inner loop too.

Batch-norm statistics are *transductive* by default (``transductive=True``): every forward
pass normalises with the statistics of the batch it is given, at meta-training and
meta-test alike, as the original code did. With ``transductive=False`` the model keeps
running averages and uses them at meta-test, so a test prediction depends on its own
example only. The forward pass's ``mode`` says which (see ``tinymeta.algorithms.base``):
``"train"`` (a meta-training query pass) normalises with the batch and updates the running
averages, one update per task in task order, so the batched task axis and the per-task loop
end with the same statistics; ``"adapt"`` (an inner-loop pass) normalises with the batch
and updates nothing; ``"test"`` uses the running averages and updates nothing. The running
averages are the model's state: ``state_dict()`` / ``load_state_dict()``.

**Per-step batch-norm** (MAML++, Antoniou et al. 2019), ``bn_steps=S``: every batch-norm
layer keeps S sets of scale, offset and running statistics, one per inner step; the
parameters ``bn{i}.gamma``/``bn{i}.beta`` get a leading step axis, (S, C), and a forward
pass with ``step=k`` uses set min(k, S − 1) and updates only that set's running averages.
The learner passes the step (``MetaLearner.forward``); ``bn_steps=None`` (default) is the
single set of the MAML paper.
"""
import numpy as np

from autograd import backend
from autograd import functional as F
from autograd.ops import getitem, mean, reshape, transpose

from ..parameters import leaves
from .init import check_mode, glorot_uniform


class Conv4:
    def __init__(self, ways, in_channels=1, filters=64, image_size=28, max_pool=False,
                 transductive=True, bn_momentum=0.1, bn_steps=None):
        self.ways = None if ways is None else int(ways)          # None: an embedding, no head
        self.in_channels, self.filters = int(in_channels), int(filters)
        self.image_size, self.max_pool = int(image_size), bool(max_pool)
        self.transductive, self.bn_momentum = transductive, bn_momentum
        size = self.image_size
        for _ in range(4):
            size = size // 2 if max_pool else (size + 2 - 3) // 2 + 1
        if size < 1:
            raise ValueError(f"Conv4: image size {image_size} is too small for four blocks")
        self.final_size = size
        self.features = filters * size * size if max_pool else filters
        self.head = ("w_head", "b_head") if self.ways is not None else ()
        if bn_steps is not None and int(bn_steps) < 1:
            raise ValueError(f"Conv4: bn_steps must be a positive number of inner steps or None, got {bn_steps}")
        self.bn_steps = None if bn_steps is None else int(bn_steps)
        self.per_step = self.bn_steps is not None               # the learner passes step=k
        sets = () if self.bn_steps is None else (self.bn_steps,)
        self.running = {f"bn{i}": (backend.xp.zeros(sets + (filters,)), backend.xp.ones(sets + (filters,)))
                        for i in range(4)}

    @property
    def tracks_statistics(self):
        """Whether a ``"train"`` pass updates running averages (the task order matters)."""
        return not self.transductive

    def init(self, rng, dtype=np.float32):
        arrays, c_in = {}, self.in_channels
        for i in range(4):
            arrays[f"conv{i}.w"] = glorot_uniform(rng, (self.filters, c_in, 3, 3))
            arrays[f"conv{i}.b"] = np.zeros(self.filters)
            sets = () if self.bn_steps is None else (self.bn_steps,)
            arrays[f"bn{i}.gamma"] = np.ones(sets + (self.filters,))
            arrays[f"bn{i}.beta"] = np.zeros(sets + (self.filters,))
            c_in = self.filters
        if self.ways is not None:
            arrays["w_head"] = glorot_uniform(rng, (self.ways, self.features))
            arrays["b_head"] = np.zeros(self.ways)
        return leaves(arrays, dtype)

    def bn_set(self, params, i, step):
        """(γ, β, running mean, running var) of batch-norm layer i at inner step ``step``."""
        gamma, beta = params[f"bn{i}.gamma"], params[f"bn{i}.beta"]
        rm, rv = self._running(f"bn{i}")
        if self.bn_steps is None:
            return gamma, beta, rm, rv
        s = min(step, self.bn_steps - 1)
        at = (slice(None),) * (gamma.ndim - 2) + (s,)           # the step axis, after any task axis
        return getitem(gamma, at), getitem(beta, at), rm[s], rv[s]    # views: updates land in set s

    def body(self, params, x, mode="train", step=0):
        """Features of x (N, C, H, W) → (N, F), or (T, N, C, H, W) → (T, N, F) with
        task-stacked params.

        Inside, activations are kept channel-major, (T, C, N, H, W): each task's convolution is
        then one matrix product whose output is already in that layout, and batch-norm
        reduces over (N, H, W) per (task, channel). Only the input and the final features are
        transposed, both small.
        """
        if params["conv0.w"].ndim == 4:                        # one task: run it as T = 1
            one = {k: reshape(v, (1,) + v.shape) for k, v in params.items()}
            return reshape(self.body(one, reshape(x, (1,) + x.shape), mode, step),
                           (x.shape[0], self.features))
        for h in self.blocks(params, x, mode, step):
            pass
        T, N = x.shape[:2]
        if self.max_pool:                                       # flatten each image: (T, N, C·h·w)
            return reshape(transpose(h, (0, 2, 1, 3, 4)), (T, N, self.features))
        return transpose(mean(h, axis=(-2, -1)), (0, 2, 1))    # average over the final 2×2 map

    def blocks(self, params, x, mode="train", step=0):
        """Yield each block's output, channel-major (T, C, N, h, w), for images (T, N, C, H, W)
        and task-stacked params (the representations that analyses of adaptation compare)."""
        h = transpose(x, (0, 2, 1, 3, 4))                       # (T, C, N, H, W)
        stride, pad = ((1, 1), (1, 1)) if self.max_pool else ((2, 2), (1, 1))
        for i in range(4):
            w, b = params[f"conv{i}.w"], params[f"conv{i}.b"]
            use_batch = self.transductive or mode != "test"
            track = not self.transductive and mode == "train"
            gamma, beta, rm, rv = self.bn_set(params, i, step)
            if use_batch:                                       # fused kernel, batch statistics
                # BN_B(W∗h + b) = BN_B(W∗h): batch statistics cancel the conv bias, so it is not
                # added (a full-size pass and its gradient's sum saved); b gets its gradient, 0
                h = F.conv2d_grouped(h, w, None, stride, pad)
                h = F.batch_norm_relu(h, gamma, beta, cancelled_bias=b,
                                      running_mean=rm if track else None,
                                      running_var=rv if track else None, momentum=self.bn_momentum)
            else:                                               # meta-test with running statistics
                h = F.conv2d_grouped(h, w, b, stride, pad)
                h = F.relu(F.batch_norm(h, gamma, beta,
                                        running_mean=rm, running_var=rv, training=False,
                                        tasks=True, channel_axis=1))
            if self.max_pool:
                h = F.max_pool2d(h, 2)                          # per (task, channel, image) plane
            yield h

    def _running(self, key):
        """One layer's running statistics on the active backend: moved there first when the
        backend changed since they were made (they are updated in place)."""
        rm, rv = self.running[key]
        if not isinstance(rm, backend.xp.ndarray):
            rm, rv = self.running[key] = (backend.from_numpy(rm), backend.from_numpy(rv))
        return rm, rv

    def __call__(self, params, x, mode="train", step=0):
        check_mode("Conv4", mode)
        if x.ndim not in (4, 5) or x.shape[-3] != self.in_channels:
            raise ValueError(f"Conv4: expected images (N, {self.in_channels}, H, W) or (T, N, "
                             f"{self.in_channels}, H, W), got {tuple(x.shape)}")
        features = self.body(params, x, mode, step)
        if self.ways is None:
            return features                                    # an embedding f_φ(x)
        return F.linear(features, params["w_head"], params["b_head"])

    def state_dict(self):
        """The running batch-norm statistics (NumPy copies): the state a forward pass changes."""
        return {f"{k}.{s}": np.array(backend.to_numpy(v)) for k, (m, var) in self.running.items()
                for s, v in (("mean", m), ("var", var))}

    def load_state_dict(self, state):
        missing = [f"{k}.{s}" for k in self.running for s in ("mean", "var") if f"{k}.{s}" not in state]
        if missing:
            raise ValueError(f"Conv4.load_state_dict: running statistics {missing} are missing")
        for k in self.running:
            self.running[k] = (backend.xp.array(backend.to_numpy(state[f"{k}.mean"])),
                                backend.xp.array(backend.to_numpy(state[f"{k}.var"])))
