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
from autograd.ops import mean

from .base import MetaLearner, task_loop


class MAML(MetaLearner):
    def __init__(self, model, params, loss_fn, inner_lr=0.01, inner_steps=1, first_order=False,
                 optimizer=None, batched=True):
        if inner_steps < 0:
            raise ValueError(f"{type(self).__name__}: inner_steps must be >= 0, got {inner_steps}")
        self.inner_lr, self.inner_steps, self.first_order = float(inner_lr), int(inner_steps), first_order
        super().__init__(model, params, loss_fn, optimizer, batched)

    def step_size(self, name):
        return self.inner_lr                                   # α, one for all parameters

    def meta_loss(self, batch):
        """(1/T) Σᵢ L_Tᵢ(f_θ'ᵢ) on the query sets, differentiable with respect to θ."""
        xs, ys = self.inputs(batch, "support")
        xq, yq = self.inputs(batch, "query")
        create_graph = not self.first_order
        if self.batched:
            fast = self.tasks_view(self.params, self.n_tasks(batch))
            fast = self.inner_loop(fast, xs, ys, self.inner_steps, create_graph)   # θ'ᵢ for all i
            return self.query_loss(fast, xq, yq)                                   # mean L_Tᵢ(f_θ'ᵢ)

        def one_task(t):
            fast = self.inner_loop(self.params, xs[t], ys[t], self.inner_steps, create_graph)
            return self.task_losses(fast, xq[t], yq[t])
        self.last_metrics = {}
        return mean(task_loop(self, batch, one_task))

    def meta_gradients(self, batch):
        """(meta-loss, {name: ∇ meta-loss}) for the meta-parameters."""
        loss = self.meta_loss(batch)
        names = list(self.meta_parameters())
        grads = grad(loss, [self.meta_parameters()[k] for k in names], allow_unused=True)
        return loss, dict(zip(names, grads))
