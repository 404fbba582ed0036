"""Reptile (Nichol, Achiam & Schulman, 2018).

For each task of the meta-batch, k steps of plain SGD (or Adam) from θ on all of the task's
examples (Reptile has no support/query split in training: ``merge_support_query``) give Wᵢ;
then θ moves toward them:

    θ ← θ + ε · (1/n) Σᵢ (Wᵢ − θ)

No gradient flows through the inner loop: g = θ − (1/n) Σᵢ Wᵢ plays the role of a gradient,
and the update above is plain SGD with learning rate ε on it. So ``meta_gradients`` returns g
and the learner's optimizer (default ``SGD(lr=ε)``) applies it like any other; a schedule
anneals ε by setting ``learner.optimizer.lr``. A meta-batch of one task is the serial
version of the paper; n > 1 is the batched version. The inner loops of all n tasks run at
once along the task axis when ``batched=True``.

At meta-test, ``adapt``/``evaluate`` run the same inner optimizer on the support set only.
"""
from autograd import Tensor, backend, grad, no_grad
from autograd.ops import mean, stack, sum as tsum

from ..optim import SGD
from ..optim.adam import adam_update
from ..tasks.batches import merge_support_query
from .base import MetaLearner


class Reptile(MetaLearner):
    splits_tasks = True          # the meta-loss is a mean of independent per-task losses

    def __init__(self, model, params, loss_fn, inner_lr=0.01, inner_steps=5, outer_lr=0.1,
                 inner_optimizer="sgd", adam_betas=(0.0, 0.999), optimizer=None, batched=True):
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"Reptile: inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}")
        if int(inner_steps) < 1:
            raise ValueError(f"Reptile: inner_steps must be >= 1 (with 0 steps Wᵢ = θ and "
                             f"nothing is learned), got {inner_steps}")
        self.inner_lr, self.inner_steps = float(inner_lr), int(inner_steps)
        self.inner_optimizer, self.adam_betas = inner_optimizer, tuple(adam_betas)
        sgd_eps = lambda p: SGD(p, lr=outer_lr)                # θ ← θ − ε g  =  θ + ε·mean(Wᵢ − θ)
        super().__init__(model, params, loss_fn, optimizer or sgd_eps, batched)

    def weights_after(self, params, x, y, steps, lr=None, mode="adapt"):
        """Yield W after 0, 1, …, ``steps`` optimizer steps on (x, y) from ``params``, as arrays.

        Each step: W ← W − α ∇L(W) (SGD) or one Adam step; the Adam moments start at zero
        for every call (every task)."""
        xp = backend.xp
        lr = self.inner_lr if lr is None else float(lr)
        w = {k: xp.array(v.data) for k, v in params.items()}
        m = {k: xp.zeros_like(v) for k, v in w.items()}
        v2 = {k: xp.zeros_like(v) for k, v in w.items()}
        yield w
        for step in range(1, steps + 1):
            leaves = {k: Tensor(a, requires_grad=True) for k, a in w.items()}
            losses = self.task_losses(leaves, x, y, mode)
            total = tsum(losses) if losses.ndim else losses
            names = list(leaves)
            grads = grad(total, [leaves[k] for k in names])
            for k, g in zip(names, grads):
                if self.inner_optimizer == "sgd":
                    w[k] -= lr * g.data                                # W ← W − α ∇L(W)
                else:
                    adam_update(w[k], g.data, m[k], v2[k], step, lr, *self.adam_betas)
            yield w

    def task_weights(self, batch):
        """Wᵢ for every task (task-stacked arrays): k inner steps on all its examples."""
        xp = backend.xp
        x, y = self.inputs(merge_support_query(batch), "support")
        T = self.n_tasks(batch)
        if self.batched:
            runs = [(self.tasks_view(self.params, T), x, y)]
        else:
            runs = [(self.params, x[t], y[t]) for t in range(T)]
        finals = []
        for params, x_t, y_t in runs:
            for w in self.weights_after(params, x_t, y_t, self.inner_steps):
                pass
            finals.append(w)
        return finals[0] if self.batched else {k: xp.stack([f[k] for f in finals]) for k in self.params}

    def meta_gradients(self, batch):
        """(mean query loss at Wᵢ, {name: θ − mean_i Wᵢ})."""
        W = self.task_weights(batch)
        grads = {k: Tensor.constant(p.data - W[k].mean(axis=0)) for k, p in self.params.items()}
        xq, yq = self.inputs(batch, "query")
        with no_grad():
            if self.batched:
                loss = self.query_loss({k: Tensor.constant(w) for k, w in W.items()}, xq, yq)
            else:
                loss = mean(stack([self.task_losses({k: Tensor.constant(w[t]) for k, w in W.items()},
                                                    xq[t], yq[t], mode="train")
                                   for t in range(self.n_tasks(batch))]))
                self.last_metrics = {}
        return loss, grads

    def adapt_steps(self, fast, x, y, steps, inner_lr=None):
        for w in self.weights_after(fast, x, y, steps, lr=inner_lr, mode="test"):
            yield {k: Tensor.constant(a) for k, a in w.items()}
