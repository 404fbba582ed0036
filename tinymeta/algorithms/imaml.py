"""Implicit MAML, iMAML (Rajeswaran, Finn, Kakade & Levine, 2019).

Each task's adaptation is a regularised problem, solved approximately from φ = θ:

    φ*ᵢ(θ) = argmin_φ  L̂ᵢ(φ) + (λ/2)‖φ − θ‖²             (L̂ᵢ: support loss)

by k steps of gradient descent, φ ← φ − α(∇L̂ᵢ(φ) + λ(φ − θ)), none of them recorded. At the
minimum ∇L̂ᵢ(φ*) + λ(φ* − θ) = 0; differentiating that in θ gives, without the trajectory,

    dφ*/dθ = (I + H/λ)⁻¹,   H = ∇²L̂ᵢ(φ*)
    ∇θ Lᵢ(φ*) = (I + H/λ)⁻¹ ∇φ Lᵢ(φ*)                       (Lᵢ: query loss)

and the right-hand side is the solution x of (I + H/λ) x = ∇φ Lᵢ(φ*), found by a few steps
of conjugate gradient whose matrix-vector products H v are ``autograd.hvp``. Memory is that
of one gradient and one HVP, whatever the number of inner steps.

At meta-test the same proximal descent adapts from θ (``evaluate``, ``adapt``).

CG assumes I + H/λ positive definite, which H of a non-convex loss need not allow: on the
Omniglot Conv4 with λ = 2, directions with pᵀ(I + H/λ)p < 0 turn up within 5 CG steps and a
few tasks' solutions come out ten times the size of ∇L (docs/beyond_maml.md). ``cg_damping``
d solves (I + H/(λ + d)) x = ∇L instead, positive definite while H ≻ −(λ + d)I; the
authors' code uses d = 10 (its matrix, 2I + H/(λ + 10), also halves x). d = 0 is the paper's.
"""
from autograd import Tensor, backend, grad, hvp
from autograd.ops import sum as tsum

from .base import MetaLearner, task_loop
from .cg import conjugate_gradient
from ..parameters import detached


class IMAML(MetaLearner):
    splits_tasks = True          # the meta-loss is a mean of independent per-task losses

    def __init__(self, model, params, loss_fn, inner_lr=0.1, inner_steps=16, lam=2.0, cg_steps=5,
                 optimizer=None, batched=True, cg_damping=0.0):
        if inner_steps < 0 or cg_steps < 1 or not lam > 0 or not cg_damping >= 0:
            raise ValueError(f"IMAML: needs inner_steps >= 0, cg_steps >= 1, lam > 0 and cg_damping >= 0, got "
                             f"inner_steps={inner_steps}, cg_steps={cg_steps}, lam={lam}, cg_damping={cg_damping}")
        self.inner_lr, self.inner_steps = float(inner_lr), int(inner_steps)
        self.lam, self.cg_steps, self.cg_damping = float(lam), int(cg_steps), float(cg_damping)
        super().__init__(model, params, loss_fn, optimizer, batched)

    # --- the inner problem --------------------------------------------------------------
    def support_loss(self, fast, x, y, mode):
        """Σ_t L̂_t(φ_t): slice t of its gradient (or Hessian) is task t's alone."""
        losses = self.task_losses(fast, x, y, mode)
        return tsum(losses) if losses.ndim else losses

    def proximal_step(self, fast, anchor, x, y, mode, inner_lr=None):
        """φ ← φ − α(∇L̂(φ) + λ(φ − θ)), as new leaves: nothing of the step is kept."""
        alpha = self.inner_lr if inner_lr is None else float(inner_lr)
        names = list(fast)
        grads = grad(self.support_loss(fast, x, y, mode), [fast[k] for k in names])
        return {k: Tensor(fast[k].data - alpha * (g.data + self.lam * (fast[k].data - anchor[k])),
                          requires_grad=True)                  # ∇ of L̂ + (λ/2)‖φ − θ‖²
                for k, g in zip(names, grads)}

    def adapt_steps(self, fast, x, y, steps, inner_lr=None, mode="test"):
        """φ after 0, 1, …, ``steps`` proximal steps anchored at the starting θ."""
        anchor = {k: v.data for k, v in fast.items()}
        fast = detached(fast)
        yield fast
        for _ in range(steps):
            fast = self.proximal_step(fast, anchor, x, y, mode, inner_lr)
            yield fast

    def solve_inner(self, start, x, y):
        """φ after ``inner_steps`` proximal steps in meta-training (``"adapt"`` mode)."""
        for fast in self.adapt_steps(start, x, y, self.inner_steps, mode="adapt"):
            pass
        return fast

    # --- the implicit meta-gradient -----------------------------------------------------
    def implicit_gradient(self, fast, x, y, g, trace=None):
        """x = (I + H/λ)⁻¹ g by CG, H the support loss's Hessian at φ (block-diagonal over
        tasks, so one HVP serves them all); with ``cg_damping`` d, (I + H/(λ + d))⁻¹ g."""
        names = list(fast)
        point = [fast[k].data for k in names]
        lam = self.lam + self.cg_damping

        def loss_at(*leaves):
            return self.support_loss(dict(zip(names, leaves)), x, y, "adapt")

        def matvec(v):                                          # (I + H/λ) v
            _, hv = hvp(loss_at, point, v)
            return [vi + h.data / lam for vi, h in zip(v, hv)]
        return dict(zip(names, conjugate_gradient(matvec, g, self.cg_steps, task_axis=self._has_task_axis(fast),
                                                  trace=trace)))

    def meta_gradients(self, batch):
        """(mean query loss at φ*, {name: Σᵢ (I + H/λ)⁻¹ ∇φ Lᵢ(φ*) / T})."""
        xs, ys = self.inputs(batch, "support")
        xq, yq = self.inputs(batch, "query")
        T = self.n_tasks(batch)
        if self.batched:
            fast = self.solve_inner(self.tasks_view(detached(self.params), T), xs, ys)
            loss = self.query_loss(fast, xq, yq)                             # (1/T) Σᵢ Lᵢ(φ*ᵢ)
            g = [gi.data for gi in grad(loss, list(fast.values()))]          # slice i: ∇φ Lᵢ / T
            meta = self.implicit_gradient(fast, xs, ys, g)
            return loss.detach(), {k: Tensor.constant(m.sum(axis=0)) for k, m in meta.items()}
        total = {k: backend.xp.zeros_like(p.data) for k, p in self.params.items()}

        def one_task(t):
            fast = self.solve_inner(self.params, xs[t], ys[t])
            loss = self.task_losses(fast, xq[t], yq[t]) / T
            g = [gi.data for gi in grad(loss, list(fast.values()))]
            for k, m in self.implicit_gradient(fast, xs[t], ys[t], g).items():
                total[k] += m
            return loss.detach()
        self.last_metrics = {}
        loss = tsum(task_loop(self, batch, one_task))
        return loss, {k: Tensor.constant(m) for k, m in total.items()}
