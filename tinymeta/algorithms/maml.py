"""MAML (Finn, Abbeel & Levine, 2017) and its first-order approximation FOMAML.

For each task Tᵢ of a meta-batch, k inner gradient steps on the support set:

    θ'ᵢ = θ − α ∇θ L_Tᵢ(f_θ)                                  (repeated k times)

and the meta-objective is the query loss at the adapted parameters:

    min_θ  Σᵢ L_Tᵢ(f_θ'ᵢ),      θ ← θ − β ∇θ Σᵢ L_Tᵢ(f_θ'ᵢ)

The meta-gradient goes *through* the inner updates: ∇θ L(θ') = (I − α ∇²L_support(θ)) ∇L(θ')
for one step, so it needs second derivatives. Here that costs nothing to write: the inner
gradients are taken with ``create_graph=True``, θ' is an ordinary expression of θ, and one
call of ``grad`` differentiates everything, Hessian-vector products included.

``first_order=True`` gives FOMAML: the inner gradients are constants (``create_graph=False``),
so dθ'/dθ = I and the meta-gradient is simply ∇L_Tᵢ evaluated at θ'ᵢ.
"""
from autograd import grad
from autograd.ops import mean, stack

from ..optim import Adam
from ..parameters import broadcast_to_tasks
from .base import MetaLearner


class MAML(MetaLearner):
    def __init__(self, model, params, loss_fn, inner_lr=0.01, inner_steps=1, first_order=False,
                 optimizer=None, batched=True):
        super().__init__(model, params, loss_fn, batched)
        if inner_steps < 0:
            raise ValueError(f"{type(self).__name__}: inner_steps must be >= 0, got {inner_steps}")
        self.inner_lr, self.inner_steps, self.first_order = float(inner_lr), int(inner_steps), first_order
        self.optimizer = optimizer if optimizer is not None else Adam(self.meta_parameters(), lr=1e-3)

    def step_size(self, name):
        return self.inner_lr                                   # α, one for all parameters

    def meta_parameters(self):
        """What the outer loop learns: θ (Meta-SGD adds α)."""
        return self.params

    def meta_loss(self, batch):
        """(1/T) Σᵢ L_Tᵢ(f_θ'ᵢ) on the query sets, differentiable with respect to θ."""
        xs, ys = self.inputs(batch, "support")
        xq, yq = self.inputs(batch, "query")
        create_graph = not self.first_order
        if self.batched:
            fast = broadcast_to_tasks(self.params, self.n_tasks(batch))
            fast = self.adapt(fast, xs, ys, self.inner_steps, create_graph)
            query_losses = self.task_losses(fast, xq, yq)          # L_Tᵢ(f_θ'ᵢ), shape (T,)
        else:
            per_task = []
            for t in range(self.n_tasks(batch)):
                fast = self.adapt(self.params, xs[t], ys[t], self.inner_steps, create_graph)
                per_task.append(self.task_losses(fast, xq[t], yq[t]))
            query_losses = stack(per_task)
        return mean(query_losses)

    def meta_gradients(self, batch):
        """(meta-loss, {name: ∇ meta-loss}) for the meta-parameters."""
        loss = self.meta_loss(batch)
        names = list(self.meta_parameters())
        grads = grad(loss, [self.meta_parameters()[k] for k in names], allow_unused=True)
        return loss, dict(zip(names, grads))

    def step(self, batch):
        """One meta-iteration: θ ← Adam(θ, ∇θ Σᵢ L_Tᵢ(f_θ'ᵢ)). Returns the meta-loss."""
        loss, grads = self.meta_gradients(batch)
        for k, g in grads.items():
            if g is None:
                raise RuntimeError(f"{type(self).__name__}: parameter {k!r} received no meta-gradient")
        self.optimizer.step(grads)
        return float(loss.data)
