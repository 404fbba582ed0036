"""MAML (Finn, Abbeel & Levine, 2017), its first-order approximation FOMAML, and the options
of MAML++ (Antoniou, Edwards & Storkey, 2019).

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

MAML++ options, each off by default and switchable alone (the iteration i, from 1, is
``learner.iteration``, set before each step by ``tinymeta.training.SetIteration``):

* ``multi_step_loss=N`` (MSL): for i ≤ N the meta-loss is Σₖ wₖ(i) L_query(θ⁽ᵏ⁾) over the
  steps k = 1..K, with weights annealed from uniform toward the last step (``msl_weights``);
  after N, the last step's loss alone.
* ``per_step_lr=True`` (LSLR): a learned step size αₖ per parameter tensor and inner step,
  meta-parameters ``lslr/<name>`` of shape (K,), started at α.
* ``first_order_iterations=N`` (derivative-order annealing): first-order for i ≤ N, then
  second-order.
* per-step batch-norm is the model's (``Conv4(bn_steps=K)``); the learner passes the step.
* cosine annealing of the meta learning rate is a hook (``tinymeta.training.CosineDecay``).

**The compiled step.** For a ReLU ``MLP`` with the squared-error loss (the sinusoid), plain
MAML or FOMAML on the task axis (``batched=True``, the default; the loop stays the textbook
reading), on the NumPy backend with the Numba kernels, ``meta_gradients`` runs the
whole meta-gradient as one compiled kernel (``_maml_mlp_numba``: the inner steps, the
query gradient and the Hessian-vector products written out), the same numbers as the graph
below (tests/test_maml_mlp_fused.py) without a few hundred small NumPy calls and the walk of
a graph. ``settings.using(kernels="numpy")`` runs the graph.
"""
import numpy as np

from autograd import Tensor, backend, grad, kernels
from autograd import functional as F
from autograd.ops import getitem, mean, relu

from .base import MetaLearner, task_loop

MSL_FLOOR = 0.03      # MAML++: a non-final step's weight never falls below 0.03 / K


def msl_weights(steps, iteration, anneal):
    """MAML++'s per-step loss weights at ``iteration`` (from 1) of an annealing over
    ``anneal`` iterations: with p = min((i − 1)/N, 1),

        wₖ = max((1 − p)/K, 0.03/K)                  for k < K
        w_K = min((1 + (K − 1) p)/K, 1 − 0.03 (K − 1)/K)

    uniform at the first iteration, summing to 1 throughout."""
    K = int(steps)
    p = min((iteration - 1) / anneal, 1.0) if anneal else 1.0
    rest = [max((1 - p) / K, MSL_FLOOR / K)] * (K - 1)
    return rest + [min((1 + (K - 1) * p) / K, 1 - MSL_FLOOR * (K - 1) / K)]


class MAML(MetaLearner):
    splits_tasks = True          # the meta-loss is a mean of independent per-task losses

    def __init__(self, model, params, loss_fn, inner_lr=0.01, inner_steps=1, first_order=False,
                 optimizer=None, batched=True, multi_step_loss=0, per_step_lr=False,
                 first_order_iterations=0):
        if inner_steps < 0:
            raise ValueError(f"{type(self).__name__}: inner_steps must be >= 0, got {inner_steps}")
        self.inner_lr, self.inner_steps, self.first_order = float(inner_lr), int(inner_steps), first_order
        self.multi_step_loss, self.first_order_iterations = int(multi_step_loss), int(first_order_iterations)
        self.iteration = None                                  # set by the SetIteration hook
        self.lslr = {}
        if per_step_lr:
            self.lslr = {f"lslr/{k}": Tensor(backend.xp.full((max(self.inner_steps, 1),), self.inner_lr,
                                                             dtype=p.dtype), requires_grad=True)
                         for k, p in params.items()}
        self._meta = {**params, **self.lslr}
        super().__init__(model, params, loss_fn, optimizer, batched)

    def meta_parameters(self):
        return self._meta

    def step_size(self, name):
        return self.inner_lr                                   # α, one for all parameters

    def step_size_at(self, name, step):
        if not self.lslr:
            return self.step_size(name)
        alphas = self.lslr[f"lslr/{name}"]
        return getitem(alphas, min(step, alphas.shape[0] - 1))   # αₖ of this tensor, learned

    # --- the schedule of MAML++'s annealed options --------------------------------------
    def annealing(self, length, option):
        """True while ``learner.iteration`` ≤ ``length``; needs the iteration when length > 0."""
        if not length:
            return False
        if self.iteration is None:
            raise RuntimeError(f"{type(self).__name__}: {option} needs learner.iteration; add the "
                               "tinymeta.training.SetIteration hook (or set it) before each step")
        return self.iteration <= length

    def step_weights(self):
        """{k: wₖ} of the query losses after k steps entering the meta-loss."""
        K = self.inner_steps
        if K > 1 and self.annealing(self.multi_step_loss, "multi_step_loss"):
            return dict(enumerate(msl_weights(K, self.iteration, self.multi_step_loss), start=1))
        return {K: 1.0}

    def meta_loss(self, batch):
        """Σₖ wₖ (1/T) Σᵢ L_Tᵢ(f_θ⁽ᵏ⁾ᵢ) on the query sets (plain MAML: k = K only, w = 1),
        differentiable with respect to θ."""
        xs, ys = self.inputs(batch, "support")
        xq, yq = self.inputs(batch, "query")
        create_graph = not (self.first_order or self.annealing(self.first_order_iterations,
                                                                "first_order_iterations"))
        weights = self.step_weights()

        def weighted(fast, x, y, query):
            total = None
            for k in range(1, self.inner_steps + 1) if self.inner_steps else ():
                fast = self.inner_update(fast, x, y, create_graph, step=k - 1)      # θ⁽ᵏ⁾
                if k in weights:
                    term = query(fast, k) if weights[k] == 1.0 else weights[k] * query(fast, k)
                    total = term if total is None else total + term
            return total if total is not None else query(fast, 0)
        if self.batched:
            fast = self.tasks_view(self.params, self.n_tasks(batch))
            return weighted(fast, xs, ys, lambda f, k: self.query_loss(f, xq, yq, step=max(k - 1, 0)))

        def one_task(t):
            return weighted(self.params, xs[t], ys[t],
                            lambda f, k: self.task_losses(f, xq[t], yq[t], step=max(k - 1, 0)))
        self.last_metrics = {}
        return mean(task_loop(self, batch, one_task))

    def meta_gradients(self, batch):
        """(meta-loss, {name: ∇ meta-loss}) for the meta-parameters."""
        if self.compiled_step_applies(batch):
            return self.compiled_meta_gradients(batch)
        loss = self.meta_loss(batch)
        names = list(self.meta_parameters())
        grads = grad(loss, [self.meta_parameters()[k] for k in names], allow_unused=True)
        return loss, dict(zip(names, grads))

    # --- the compiled step (see the module docstring) -------------------------------------
    def compiled_step_applies(self, batch):
        """Whether ``compiled_meta_gradients`` computes this batch's meta-gradient: plain
        MAML/FOMAML (no subclass, no MAML++ option in effect) on the task axis, of a ReLU
        ``MLP`` with the squared-error loss, float parameters, float targets, the Numba
        kernels on the CPU."""
        from ..models.mlp import MLP
        return (type(self) is MAML and self.batched and backend.name == "numpy" and kernels.kernels_name() == "numba"
                and type(self.model) is MLP and self.model.activation is relu and self.loss_fn is F.mse_loss
                and self.inner_steps >= 1 and not self.lslr and self.step_weights() == {self.inner_steps: 1.0}
                and all(p.dtype.kind == "f" and p.dtype == self.dtype for p in self.params.values())
                and getattr(batch.support_y, "dtype", None) is not None and batch.support_y.dtype.kind == "f"
                and batch.support_x.ndim == 3)

    def compiled_meta_gradients(self, batch):
        """``meta_gradients`` by the compiled kernel; the caller checked that it applies."""
        from ._maml_mlp_numba import mlp_maml_meta_gradients
        layers = len(self.model.sizes) - 1
        second_order = not (self.first_order or self.annealing(self.first_order_iterations,
                                                                "first_order_iterations"))
        arrays = [backend.to_numpy(getattr(batch, k)) for k in ("support_x", "support_y", "query_x", "query_y")]
        loss, gw, gb = mlp_maml_meta_gradients(
            [self.params[f"w{l}"].data for l in range(layers)], [self.params[f"b{l}"].data for l in range(layers)],
            *arrays, self.inner_lr, self.inner_steps, second_order)
        self.last_metrics = {}
        grads = {**{f"w{l}": Tensor.constant(g) for l, g in enumerate(gw)},
                 **{f"b{l}": Tensor.constant(g) for l, g in enumerate(gb)}}
        return Tensor.constant(np.asarray(loss)), {k: grads[k] for k in self.params}
