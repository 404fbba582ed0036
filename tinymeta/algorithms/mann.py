"""Memory-augmented neural network (MANN; Santoro, Bartunov, Botvinick, Wierstra & Lillicrap,
2016), and the plain LSTM it is compared with.

There is no inner loop and no fast weights: a task is solved *in the activations*. An LSTM
controller reads an episode one step at a time (``tinymeta.tasks.sequences``: the image x_t
with the previous step's label y_{t−1}) and binds images to labels in an external memory
(``autograd.functional.memory``), which is wiped at the start of every episode. Per step,
with R heads, memory M (N × W), usage w^u and the previous read weights w^r_{t−1}:

    h_t, c_t = LSTM([x_t, onehot(y_{t−1}), r_{t−1}], h_{t−1}, c_{t−1})
    k_t = tanh(W_k h_t + b_k)                  one key per head (R × W)
    α_t = W_α h_t + b_α                        one write gate per head
    w^w_t = σ(α_t) w^r_{t−1} + (1 − σ(α_t)) w^lu_{t−1};   M_t = clear(M_{t−1}) + w^wᵀ k_t
    w^r_t = softmax cos(k_t, M_t);   r_t = w^r_t M_t
            (``key_strength=True``: softmax β_t cos(k_t, M_t), β_t = exp(W_β h_t + b_β) per head)
    w^u_t = γ w^u_{t−1} + Σ (w^r_t + w^w_t)
    p(y_t | …) = softmax(W_o [h_t, r_t] + b_o)

The meta-objective is the cross-entropy of every step's label, averaged over steps and
episodes; it is trained by back-propagation through the whole episode (first order). With
``memory=False`` the same controller answers from h_t alone: the paper's LSTM baseline.
The key's tanh is our choice (the paper leaves the key's nonlinearity open). The key strength
β is not in the paper (its reads are softmax cos): it is the NTM's, offered because a softmax
over cosines of 128 slots cannot put more than 5.5% of a read on one slot.
"""
import numpy as np

from autograd import Tensor, backend, grad, no_grad
from autograd import functional as F
from autograd.functional import memory as mem
from autograd.ops import concatenate, exp, getitem, mean, reshape, sigmoid, stack, tanh

from ..tasks.sequences import previous_labels
from .base import MetaLearner, as_tensor


class MemoryNetwork:
    """The MANN (or, with ``memory=False``, the LSTM baseline) as a function of explicit
    parameters: ``model(params, x, previous) -> logits`` for x (B, L, D) and the previous
    labels' one-hots (B, L, ways), logits (B, L, ways)."""

    def __init__(self, input_size, ways, hidden=200, slots=128, width=40, heads=4, gamma=0.95, memory=True,
                 key_strength=False):
        self.input_size, self.ways, self.hidden = int(input_size), int(ways), int(hidden)
        self.slots, self.width, self.heads, self.gamma = int(slots), int(width), int(heads), float(gamma)
        self.memory = bool(memory)
        self.key_strength = bool(key_strength) and self.memory
        self.reads = self.heads * self.width if self.memory else 0

    def init(self, rng, dtype=np.float32):
        """Initial parameters (Tensors that require grad): the controller as
        ``lstm_parameters``, linear layers uniform in ±1/√fan_in."""
        H, R, W = self.hidden, self.heads, self.width
        arrays = {"controller/" + k: v for k, v in
                  F.lstm_parameters(rng, self.input_size + self.ways + self.reads, H).items()}

        def layer(name, out, fan_in):
            bound = 1.0 / np.sqrt(fan_in)
            arrays[name + "/w"] = rng.uniform(-bound, bound, (out, fan_in))
            arrays[name + "/b"] = np.zeros(out)
        if self.memory:
            layer("key", R * W, H)
            layer("gate", R, H)
        if self.key_strength:                  # β = exp(W_β h + b_β) starts at exactly 1: the paper's reads
            arrays["strength/w"], arrays["strength/b"] = np.zeros((R, H)), np.zeros(R)
        layer("output", self.ways, H + self.reads)
        return {k: Tensor(v.astype(dtype), requires_grad=True) for k, v in arrays.items()}

    def __call__(self, params, x, previous, mode="train", trace=None):
        """``trace``: a list that receives, at every step, the read and write weights w^r_t and
        w^w_t (B, R, N) and the write gates σ(α_t) (B, R) as host arrays (for inspection)."""
        B, L, _ = x.shape
        xp, dtype = backend.xp, x.dtype
        controller = {k: params["controller/" + k] for k in ("w_ih", "w_hh", "b")}
        h = c = Tensor.constant(xp.zeros((B, self.hidden), dtype=dtype))
        if self.memory:
            M = Tensor.constant(xp.zeros((B, self.slots, self.width), dtype=dtype))   # wiped per episode
            usage = Tensor.constant(xp.zeros((B, self.slots), dtype=dtype))
            w_r = Tensor.constant(xp.zeros((B, self.heads, self.slots), dtype=dtype))  # nothing read yet
            r = Tensor.constant(xp.zeros((B, self.reads), dtype=dtype))
        logits = []
        for t in range(L):
            step_in = [getitem(x, (slice(None), t)), getitem(previous, (slice(None), t))]
            h, c = F.lstm_cell(concatenate(step_in + ([r] if self.memory else []), axis=-1), h, c, controller)
            if self.memory:
                k = reshape(tanh(F.linear(h, params["key/w"], params["key/b"])), (B, self.heads, self.width))
                alpha = F.linear(h, params["gate/w"], params["gate/b"])          # α_t, one per head
                least = mem.least_used(usage, self.heads)                         # w^lu_{t−1}
                M, w_w = mem.lrua_write(M, k, w_r, least, alpha)                  # clear, then write
                beta = exp(F.linear(h, params["strength/w"], params["strength/b"])) if self.key_strength else None
                w_r = mem.content_weights(k, M, beta)                             # w^r_t = softmax β cos(k, M)
                r = reshape(mem.read(w_r, M), (B, self.reads))                    # r_t = w^r_t M_t
                with no_grad():                                                   # usage only feeds w^lu: zero derivative
                    usage = mem.usage_update(usage, w_r.detach(), w_w.detach(), self.gamma)
                if trace is not None:
                    trace.append({"reads": backend.to_numpy(w_r.data), "writes": backend.to_numpy(w_w.data),
                                  "gates": backend.to_numpy(sigmoid(alpha).data)})
            features = concatenate([h, r], axis=-1) if self.memory else h
            logits.append(F.linear(features, params["output/w"], params["output/b"]))
        return stack(logits, axis=1)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class MANN(MetaLearner):
    """Trains a ``MemoryNetwork`` on label-offset episodes (``SequenceBatch``). ``evaluate``
    adds ``"by_instance"``: accuracy (instances, T) at each class's 1st, 2nd, … drawing, rows
    like the per-step rows of the other learners, so ``meta_test`` and ``summarize`` take it."""

    def __init__(self, model, params, loss_fn=F.cross_entropy, optimizer=None):
        super().__init__(model, params, loss_fn, optimizer, batched=True)

    def logits(self, params, batch, mode, trace=None):
        x = as_tensor(batch.x, self.dtype)
        previous = as_tensor(previous_labels(batch.y, self.model.ways, np.dtype(self.dtype)), self.dtype)
        return self.model(params, x, previous, mode=mode, trace=trace)

    def meta_gradients(self, batch):
        """(mean cross-entropy of every step of every episode, its gradient)."""
        logits = self.logits(self.params, batch, "train")
        y = as_tensor(np.asarray(batch.y))
        loss = mean(self.loss_fn(logits, y, reduction="none"))
        self.last_metrics = {"accuracy": float(np.mean(correct(logits, batch.y)))}
        names = list(self.params)
        return loss, dict(zip(names, grad(loss, [self.params[k] for k in names])))

    def adapt(self, batch, steps=0, inner_lr=None):
        """Adaptation happens in the memory and the LSTM state: θ itself, unchanged."""
        return self.params

    def evaluate(self, batch, steps=0, classification=True, inner_lr=None):
        """Per-episode loss and accuracy over all steps, (steps + 1, T) with equal rows, and
        ``"by_instance"`` (instances, T)."""
        with no_grad():
            logits = self.logits(self.params, batch, "test")
            y = as_tensor(np.asarray(batch.y))
            loss = backend.to_numpy(mean(self.loss_fn(logits, y, reduction="none"), axis=-1).data)
        right = correct(logits, batch.y)
        return {"loss": np.repeat(loss[None], steps + 1, axis=0),
                "accuracy": np.repeat(right.mean(axis=-1)[None], steps + 1, axis=0),
                "by_instance": by_instance(right, batch.instance)}


def correct(logits, y):
    """Whether each step's arg-max is its label: bool (T, L) on the host."""
    return backend.to_numpy(logits.data).argmax(axis=-1) == np.asarray(y)


def by_instance(right, instance):
    """Accuracy (n, T) at the 1st … n-th drawing of a class, from right and instance (T, L)."""
    n = int(np.max(instance)) + 1
    return np.array([[r[i == k].mean() for r, i in zip(right, instance)] for k in range(n)])
