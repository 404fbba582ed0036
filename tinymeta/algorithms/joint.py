"""Joint training, the "pretrained" baseline of the MAML paper (Section 5.1): one network
trained on all tasks' examples pooled together, with no inner loop,

    θ ← θ − β ∇θ (1/N) Σ_(x, y) ∈ all tasks L(f_θ(x), y),

then fine-tuned at meta-test with plain SGD of step size α, like MAML. It answers the
question "does learning to adapt beat learning the average task?".
"""
import dataclasses

from autograd import grad

from ..tasks.batches import flatten_tasks, merge_support_query
from .base import MetaLearner


class JointTraining(MetaLearner):
    def __init__(self, model, params, loss_fn, inner_lr=0.01, optimizer=None, batched=True):
        self.inner_lr = float(inner_lr)                        # α of the meta-test fine-tuning
        super().__init__(model, params, loss_fn, optimizer, batched)

    def step_size(self, name):
        return self.inner_lr

    def meta_gradients(self, batch):
        """(mean loss over every example of every task, its gradient)."""
        pooled = merge_support_query(batch)
        pooled = dataclasses.replace(pooled, support_x=flatten_tasks(pooled.support_x),
                                     support_y=flatten_tasks(pooled.support_y))
        x, y = self.inputs(pooled, "support")
        loss = self.loss_fn(self.model(self.params, x, mode="train"), y)
        self.last_metrics = {}
        names = list(self.params)
        return loss, dict(zip(names, grad(loss, [self.params[k] for k in names])))
