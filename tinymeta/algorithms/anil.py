"""ANIL, "Almost No Inner Loop" (Raghu et al., 2020): MAML whose inner loop adapts only the
head; the body's features are shared by all tasks and learned in the outer loop only.

    θ'ᵢ = (θ_body, θ_head − α ∇θ_head L_Tᵢ(f_θ))
"""
from .maml import MAML


class ANIL(MAML):
    def __init__(self, model, params, loss_fn, head=None, **kwargs):
        self.head = list(head if head is not None else model.head)
        missing = [k for k in self.head if k not in params]
        if missing:
            raise ValueError(f"ANIL: head parameters {missing} are not in the model's parameters")
        super().__init__(model, params, loss_fn, **kwargs)

    def adapted_names(self):
        return self.head
