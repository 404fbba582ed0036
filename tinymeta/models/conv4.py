"""The four-block convolutional network of the MAML paper (after Vinyals et al., 2016).

Each block: 3×3 conv → batch-norm → ReLU, then either a stride-2 conv (Omniglot: the conv
itself has stride 2, 64 filters) or a 2×2 max-pool (mini-ImageNet, 32 filters). A linear
head maps the features to the classes. On Omniglot 28×28 the map shrinks 28→14→7→4→2 and
is averaged over space (as the MAML code does without max-pool): 64 features. On
mini-ImageNet 84×84 it shrinks 84→42→21→10→5 and is flattened: 32·5·5 = 800 features.

Initialisation as in the MAML code: conv and head weights Glorot-uniform, biases zero,
batch-norm scale 1 and offset 0. The batch-norm scale and offset are parameters like the
others, adapted in the inner loop too.

Batch-norm statistics are *transductive* by default (``transductive=True``): every forward
pass normalises with the statistics of the batch it is given, at meta-training and
meta-test alike, as the original code did. With ``transductive=False`` the model keeps
running averages while training and uses them at meta-test (``training=False``), so a
test prediction depends on its own example only. The running averages are accumulated
from the query-set passes only (the inner loop calls the model with
``track_running=False``), one update per task in task order, so the batched task axis and
the per-task loop end with the same statistics.
"""
import numpy as np

from autograd import backend
from autograd import functional as F
from autograd.ops import mean, reshape

from ..parameters import leaves
from .init import glorot_uniform


class Conv4:
    def __init__(self, ways, in_channels=1, filters=64, image_size=28, max_pool=False,
                 transductive=True, bn_momentum=0.1):
        self.ways, self.in_channels, self.filters = int(ways), int(in_channels), int(filters)
        self.image_size, self.max_pool = int(image_size), bool(max_pool)
        self.transductive, self.bn_momentum = transductive, bn_momentum
        size = self.image_size
        for _ in range(4):
            size = size // 2 if max_pool else (size + 2 - 3) // 2 + 1
        if size < 1:
            raise ValueError(f"Conv4: image size {image_size} is too small for four blocks")
        self.final_size = size
        self.features = filters * size * size if max_pool else filters
        self.head = ("w_head", "b_head")
        self.running = {f"bn{i}": (np.zeros(filters), np.ones(filters)) for i in range(4)}

    def init(self, rng, dtype=np.float32):
        arrays, c_in = {}, self.in_channels
        for i in range(4):
            arrays[f"conv{i}.w"] = glorot_uniform(rng, (self.filters, c_in, 3, 3))
            arrays[f"conv{i}.b"] = np.zeros(self.filters)
            arrays[f"bn{i}.gamma"] = np.ones(self.filters)
            arrays[f"bn{i}.beta"] = np.zeros(self.filters)
            c_in = self.filters
        arrays["w_head"] = glorot_uniform(rng, (self.ways, self.features))
        arrays["b_head"] = np.zeros(self.ways)
        return leaves(arrays, dtype)

    def body(self, params, x, training=True, track_running=True):
        """Features of x (N, C, H, W), or (T, N, C, H, W) with task-stacked params."""
        tasks = params["conv0.w"].ndim == 5
        h = x
        for i in range(4):
            stride, pad = (1, 1) if self.max_pool else (2, 1)
            h = F.conv2d(h, params[f"conv{i}.w"], params[f"conv{i}.b"], stride=stride, padding=pad)
            use_batch = self.transductive or training
            rm, rv = self.running[f"bn{i}"]
            h = F.batch_norm(h, params[f"bn{i}.gamma"], params[f"bn{i}.beta"],
                             running_mean=None if self.transductive or (training and not track_running) else rm,
                             running_var=None if self.transductive or (training and not track_running) else rv,
                             training=use_batch, momentum=self.bn_momentum, tasks=tasks)
            h = F.relu(h)
            if self.max_pool:
                h = F.max_pool2d(h, 2)
        lead = h.shape[:-3]
        if self.max_pool:
            return reshape(h, lead + (self.features,))
        return mean(h, axis=(-2, -1))                      # average over the final 2×2 map

    def __call__(self, params, x, training=True, track_running=True):
        if x.ndim not in (4, 5) or x.shape[-3] != self.in_channels:
            raise ValueError(f"Conv4: expected images (N, {self.in_channels}, H, W) or (T, N, "
                             f"{self.in_channels}, H, W), got {tuple(x.shape)}")
        return F.linear(self.body(params, x, training, track_running), params["w_head"], params["b_head"])

    def running_state(self):
        return {f"{k}.{s}": np.array(backend.to_numpy(v)) for k, (m, var) in self.running.items()
                for s, v in (("mean", m), ("var", var))}

    def load_running_state(self, state):
        for k in self.running:
            self.running[k] = (np.array(state[f"{k}.mean"]), np.array(state[f"{k}.var"]))
