"""Meta-SGD (Li, Zhou, Chen & Li, 2017): the inner step size is a learned vector α, one per
parameter entry, meta-trained together with θ:

    θ'ᵢ = θ − α ⊙ ∇θ L_Tᵢ(f_θ),     (θ, α) ← (θ, α) − β ∇(θ,α) Σᵢ L_Tᵢ(f_θ'ᵢ)
"""
from autograd import Tensor, backend

from .maml import MAML


class MetaSGD(MAML):
    def __init__(self, model, params, loss_fn, inner_lr=0.01, **kwargs):
        self.alpha = {f"alpha/{k}": Tensor(backend.xp.full(p.shape, inner_lr, dtype=p.dtype),
                                           requires_grad=True) for k, p in params.items()}
        self._all = {**params, **self.alpha}                   # the outer loop learns θ and α
        super().__init__(model, params, loss_fn, inner_lr=inner_lr, **kwargs)

    def meta_parameters(self):
        return self._all

    def step_size(self, name):
        return self.alpha[f"alpha/{name}"]                     # α, learned, per entry
