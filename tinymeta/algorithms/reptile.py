"""Reptile (Nichol, Achiam & Schulman, 2018).

For each task of the meta-batch, k steps of plain SGD (or Adam) on its support set from θ
give Wᵢ; then θ moves toward them:

    θ ← θ + ε · (1/n) Σᵢ (Wᵢ − θ)

No gradient flows through the inner loop: (θ − Wᵢ)/(kα) plays the role of a gradient.
A meta-batch of one task is the serial version of the paper; n > 1 is the batched version.
The inner loops of all n tasks run at once along the task axis when ``batched=True``.
"""
from autograd import Tensor, backend, grad, no_grad
from autograd.ops import sum as tsum

from ..optim.adam import adam_update
from ..parameters import broadcast_to_tasks
from .base import MetaLearner


class Reptile(MetaLearner):
    def __init__(self, model, params, loss_fn, inner_lr=0.01, inner_steps=5, outer_lr=0.1,
                 inner_optimizer="sgd", adam_betas=(0.0, 0.999), batched=True):
        super().__init__(model, params, loss_fn, batched)
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"Reptile: inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}")
        self.inner_lr, self.inner_steps, self.outer_lr = float(inner_lr), int(inner_steps), float(outer_lr)
        self.inner_optimizer, self.adam_betas = inner_optimizer, adam_betas

    def step_size(self, name):
        return self.inner_lr

    def task_weights(self, batch):
        """Wᵢ for every task: k optimizer steps on the support set, starting at θ."""
        xp = backend.xp
        xs, ys = self.inputs(batch, "support")
        T = self.n_tasks(batch)
        if self.batched:
            runs = [({k: xp.array(v.data) for k, v in broadcast_to_tasks(self.params, T).items()}, xs, ys)]
        else:
            runs = [({k: xp.array(v.data) for k, v in self.params.items()}, xs[t], ys[t]) for t in range(T)]
        finals = []
        for w, x, y in runs:
            m = {k: xp.zeros_like(v) for k, v in w.items()}
            v2 = {k: xp.zeros_like(v) for k, v in w.items()}
            for step in range(1, self.inner_steps + 1):
                leaves = {k: Tensor(a, requires_grad=True) for k, a in w.items()}
                losses = self.task_losses(leaves, x, y)
                total = tsum(losses) if losses.ndim else losses
                names = list(leaves)
                grads = grad(total, [leaves[k] for k in names])
                for k, g in zip(names, grads):
                    if self.inner_optimizer == "sgd":
                        w[k] -= self.inner_lr * g.data                    # W ← W − α ∇L(W)
                    else:
                        adam_update(w[k], g.data, m[k], v2[k], step, self.inner_lr, *self.adam_betas)
            finals.append(w)
        if self.batched:
            return finals[0]
        return {k: xp.stack([f[k] for f in finals]) for k in self.params}

    def step(self, batch):
        """θ ← θ + ε · mean_i(Wᵢ − θ). Returns the mean support loss before adaptation."""
        xs, ys = self.inputs(batch, "support")
        with no_grad():
            if self.batched:
                before = self.task_losses(broadcast_to_tasks(self.params, self.n_tasks(batch)), xs, ys)
                before = float(before.data.mean())
            else:
                before = float(sum(float(self.task_losses(self.params, xs[t], ys[t]).data)
                                   for t in range(self.n_tasks(batch))) / self.n_tasks(batch))
        W = self.task_weights(batch)
        for k, p in self.params.items():
            p.data += self.outer_lr * (W[k].mean(axis=0) - p.data)    # θ ← θ + ε·mean(Wᵢ − θ)
        return before
