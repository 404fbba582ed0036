"""MAML for reinforcement learning (Finn, Abbeel & Levine, 2017, Algorithm 3): policy
gradients inside, TRPO outside.

For each task Tᵢ of a meta-batch (a goal, ``tinymeta.rl.navigation``):

    D_i  ← K trajectories of f_θ                                        (K = 20)
    θ'ᵢ  = θ − α ∇θ L_Tᵢ(f_θ; D_i)          one REINFORCE step, α = 0.1
    D'_i ← K trajectories of f_θ'ᵢ

and the meta-objective is the TRPO surrogate of the adapted policies on D'ᵢ, as a function
of θ *through* the inner step (second order, like ``MAML``):

    min_θ (1/T) Σᵢ L̃_Tᵢ(θ'ᵢ(θ); D'ᵢ)   subject to   (1/T) Σᵢ KL_Tᵢ(θ'ᵢ(θ_old), θ'ᵢ(θ)) ≤ δ

(losses in ``tinymeta.rl.losses``). ``inner_steps = k`` repeats the inner step k times, each
on trajectories of the policy it starts from; ``inner_steps = 0`` is the "pretrained"
baseline: TRPO on the tasks' trajectories with no adaptation (trained on all tasks jointly).

**Why ``step`` is not ``optimizer.step(grads)``.** TRPO needs more than the gradient: the
direction is F⁻¹∇L̃, found by conjugate gradient from Fisher-vector products, and the step
length is settled by a line search that re-evaluates the surrogate and the KL at trial
parameters, on the same trajectories. So ``step`` samples once, records the objective once,
and hands ``TRPO.step`` the gradient together with two functions: v ↦ F v and θ ↦ (L̃, KL̄).
``meta_gradients`` still returns the surrogate and its gradient through the inner step, as
every learner does.

**Fisher-vector products.** F is the Hessian of the mean KL at θ_old (where the KL and its
gradient vanish), so F v = ∇θ(∇θ KL̄ · v): one gradient with ``create_graph=True``, then one
backward pass through it per product. The KL is a function of θ through the inner step, so
this is a derivative of third order of the inner loss graph; the engine's exact double
backward does it without finite differences (the paper used finite differences here).

The random stream of the trajectories is the goal batch's: each task carries a seed
(``GoalBatch.seeds``), so ``step`` and ``evaluate`` are functions of the parameters and the
batch, and the goal sampler's state is all a checkpoint needs for an exact resume.
"""
from dataclasses import dataclass
from typing import List

import numpy as np

from autograd import Tensor, backend, grad, no_grad
from autograd.ops import mean, sub_scaled, sum as tsum

from ..parameters import detached
from ..rl.baseline import LinearFeatureBaseline, advantages
from ..rl.losses import PolicyGradientData, mean_kl, reinforce_loss, surrogate_loss
from ..rl.policy import gaussian_log_prob
from ..rl.rollouts import Episodes, noise, rollout
from ..rl.trpo import TRPO, flatten, unflatten
from .base import MetaLearner


def task_leaves(fast):
    """New leaves holding the values of task-stacked parameters: (T, ...) each."""
    xp = backend.xp
    return {k: Tensor(xp.ascontiguousarray(v.data), requires_grad=True) for k, v in fast.items()}


def trpo_01(params):
    return TRPO(params, max_kl=0.01)


@dataclass
class Exploration:
    """What one meta-iteration sampled: the inner steps' data and the final trajectories."""
    inner: List[PolicyGradientData]       # D_i (and the later steps' data), as loss constants
    first: Episodes                       # the trajectories of θ itself
    last: Episodes                        # D'_i: the adapted policies' trajectories
    data: PolicyGradientData              # D'_i as loss constants


@dataclass
class OldPolicy:
    """π_old on D'_i: the constants of the surrogate and the KL."""
    mean: Tensor
    log_std: Tensor
    log_prob: Tensor


class MAMLRL(MetaLearner):
    default_optimizer = staticmethod(trpo_01)

    def __init__(self, env, policy, params, inner_lr=0.1, inner_steps=1, trajectories=20,
                 test_trajectories=40, later_inner_lr=None, discount=0.99, first_order=False,
                 baseline=None, optimizer=None):
        if inner_steps < 0:
            raise ValueError(f"MAMLRL: inner_steps must be >= 0, got {inner_steps}")
        if backend.name != "numpy":
            raise NotImplementedError(f"MAMLRL runs on the numpy backend only (the environment and "
                                      f"trajectories are NumPy arrays on the host), not {backend.name}")
        self.env, self.inner_lr, self.inner_steps = env, float(inner_lr), int(inner_steps)
        self.later_inner_lr = self.inner_lr / 2 if later_inner_lr is None else float(later_inner_lr)
        self.trajectories, self.test_trajectories = int(trajectories), int(test_trajectories)
        self.discount, self.first_order = float(discount), bool(first_order)
        self.baseline = baseline or LinearFeatureBaseline()
        super().__init__(policy, params, loss_fn=None, optimizer=optimizer, batched=True)

    @property
    def policy(self):
        return self.model

    # --- trajectories -------------------------------------------------------------------
    def sample(self, fast, batch, generators, n):
        """n trajectories of each task's policy ``fast`` (task-stacked)."""
        eps = noise(generators, n, self.env.horizon, self.env.action_dim)
        return rollout(self.env, self.policy, fast, batch.goals, eps)

    def loss_data(self, episodes):
        """Trajectories as the constants of the losses, with their advantages."""
        adv = advantages(episodes, self.discount, self.baseline)
        return PolicyGradientData.from_episodes(episodes, adv, self.dtype)

    def policy_gradient_step(self, fast, data, lr, create_graph):
        """θ' = θ − α ∇θ L_T(f_θ) for every task at once (REINFORCE on ``data``)."""
        names = list(fast)
        total = tsum(reinforce_loss(self.policy, fast, data))             # Σ_t L_t: slice t of ∇ is ∇L_t
        grads = grad(total, [fast[k] for k in names], create_graph=create_graph)
        return {k: sub_scaled(fast[k], g, lr) for k, g in zip(names, grads)}   # θ' = θ − α ∇θ L_T(f_θ)

    def explore(self, batch):
        """Algorithm 3's sampling: D_i with θ, the inner step(s), D'_i with θ'_i."""
        generators = [np.random.default_rng(int(s)) for s in batch.seeds]
        fast = self.tasks_view(detached(self.params), len(batch))
        inner, first = [], None
        for _ in range(self.inner_steps):
            episodes = self.sample(fast, batch, generators, self.trajectories)
            first = episodes if first is None else first
            inner.append(self.loss_data(episodes))
            fast = detached(self.policy_gradient_step(fast, inner[-1], self.inner_lr, create_graph=False))
        last = self.sample(fast, batch, generators, self.trajectories)
        return Exploration(inner, last if first is None else first, last, self.loss_data(last))

    # --- the meta-objective -------------------------------------------------------------
    def adapted(self, params, exploration, create_graph):
        """θ'_i(θ) for every task, recorded as a function of θ when ``create_graph``."""
        fast = self.tasks_view(params, len(exploration.last.mask))
        for data in exploration.inner:
            fast = self.policy_gradient_step(fast, data, self.inner_lr, create_graph)
        return fast

    def objective(self, fast, data, old=None):
        """(surrogate L̃, mean KL, π_old) of the adapted policies on D'; π_old = these
        policies themselves when ``old`` is None (then the ratio is 1 and the KL 0)."""
        mu, log_std = self.policy(fast, data.observations)
        log_prob = gaussian_log_prob(data.actions, mu, log_std)
        if old is None:
            old = OldPolicy(mu.detach(), log_std.detach(), log_prob.detach())
        surrogate = mean(surrogate_loss(log_prob, old.log_prob, data))   # (1/T) Σᵢ L̃_Tᵢ
        kl = mean(mean_kl(mu, log_std, old.mean, old.log_std, data))      # (1/T) Σᵢ KL_Tᵢ
        return surrogate, kl, old

    def fisher_product(self, exploration, old):
        """v ↦ F v on flat vectors, F the Hessian at θ_old of the mean KL as a function of θ
        through the inner steps. With θ'ᵢ = θ'ᵢ(θ) and its Jacobian Jᵢ = ∏ⱼ (I − α∇²L_Tᵢ)
        (symmetric factors, one per inner step), the chain rule gives

            F = (1/T) Σᵢ Jᵢᵀ ∇²KLᵢ(θ'ᵢ) Jᵢ,

        the term ∇KLᵢ · ∂²θ'ᵢ/∂θ² being 0 at θ_old, where the KL has its minimum. Each factor
        is a Hessian-vector product by double backward (recorded once, one backward pass per
        product), so no derivative of third order is ever taken. ``first_order``: Jᵢ = I."""
        T = len(exploration.last.mask)
        names = list(self.params)
        chain, fast = [], self.tasks_view(detached(self.params), T)
        for data in ([] if self.first_order else exploration.inner):
            leaves = task_leaves(fast)
            total = tsum(reinforce_loss(self.policy, leaves, data))
            grads = dict(zip(names, grad(total, [leaves[k] for k in names], create_graph=True)))   # ∇L_Tᵢ, recorded
            chain.append((leaves, grads))
            fast = {k: sub_scaled(leaves[k], grads[k], self.inner_lr) for k in names}   # θ' = θ − α∇L
        post = task_leaves(fast)
        mu, log_std = self.policy(post, exploration.data.observations)
        kl = mean(mean_kl(mu, log_std, old.mean, old.log_std, exploration.data))
        kl_grads = dict(zip(names, grad(kl, [post[k] for k in names], create_graph=True)))   # ∇KL̄, recorded

        def hessian_product(leaves, grads, vs):
            """∇(∇f · v) = ∇²f v for per-task vectors vs (name → array (T, ...))."""
            out = grad([grads[k] for k in names], [leaves[k] for k in names],
                       grad_outputs=[Tensor.constant(vs[k]) for k in names], retain_graph=True)
            return {k: h.data for k, h in zip(names, out)}

        def jacobian_product(vs, steps):
            for leaves, grads in steps:
                hv = hessian_product(leaves, grads, vs)
                vs = {k: vs[k] - self.inner_lr * hv[k] for k in names}     # (I − α∇²L) v
            return vs

        def product(v):
            pieces = unflatten(v, [self.params[k] for k in names])
            xp = backend.xp
            u = {k: xp.ascontiguousarray(xp.broadcast_to(backend.from_numpy(p, dtype=self.dtype),
                                                          (T,) + p.shape)) for k, p in zip(names, pieces)}
            u = jacobian_product(u, chain)                                 # Jᵢ v
            w = hessian_product(post, kl_grads, u)                         # (1/T) ∇²KLᵢ Jᵢ v
            w = jacobian_product(w, reversed(chain))                       # Jᵢᵀ (…)
            return flatten([w[k].sum(axis=0) for k in names])              # Σᵢ
        return product

    def meta_gradients(self, batch):
        """(surrogate L̃ after adaptation, {name: ∇θ L̃}) through the inner step."""
        exploration = self.explore(batch)
        fast = self.adapted(self.params, exploration, create_graph=not self.first_order)
        surrogate, _, _ = self.objective(fast, exploration.data)
        names = list(self.params)
        return surrogate, dict(zip(names, grad(surrogate, [self.params[k] for k in names])))

    def step(self, batch):
        """One meta-iteration: sample, then a TRPO step on the surrogate (see the module
        docstring for why this is not ``optimizer.step``). Returns the negated mean return
        of the adapted policies as ``loss``, the returns before and after adaptation, and
        what the line search did."""
        exploration = self.explore(batch)
        names = list(self.params)
        theta = [self.params[k] for k in names]
        fast = self.adapted(self.params, exploration, create_graph=not self.first_order)
        surrogate, kl, old = self.objective(fast, exploration.data)
        grads = dict(zip(names, grad(surrogate, theta)))
        loss_before = self.check_finite(surrogate, grads)["loss"]
        fisher_product = self.fisher_product(exploration, old)

        def loss_and_kl():
            trial = detached(self.adapted(self.params, exploration, create_graph=False))
            with no_grad():
                s, k, _ = self.objective(trial, exploration.data, old)
            return float(s.data), float(k.data)

        info = self.optimizer.step(grads, loss_before, fisher_product, loss_and_kl)
        after = float(exploration.last.average_return().mean())
        return {"loss": -after, "return_before": float(exploration.first.average_return().mean()),
                "return_after": after, "surrogate": loss_before, "kl": info["kl"],
                "accepted": float(info["accepted"]), "backtracks": float(info["backtracks"])}

    # --- meta-test ----------------------------------------------------------------------
    def adapt_steps(self, batch, steps, inner_lr=None, later_inner_lr=None):
        """Yield (fast weights, their trajectories) after 0, 1, …, ``steps`` policy-gradient
        steps, each step on the previous policy's ``test_trajectories`` trajectories; step
        size α for the first step and ``later_inner_lr`` (the paper: α/2) for the others."""
        first = self.inner_lr if inner_lr is None else float(inner_lr)
        later = self.later_inner_lr if later_inner_lr is None else float(later_inner_lr)
        generators = [np.random.default_rng(int(s)) for s in batch.seeds]
        fast = self.tasks_view(detached(self.params), len(batch))
        for k in range(steps + 1):
            episodes = self.sample(fast, batch, generators, self.test_trajectories)
            yield fast, episodes
            if k < steps:
                lr = first if k == 0 else later
                fast = detached(self.policy_gradient_step(fast, self.loss_data(episodes), lr, create_graph=False))

    def adapt(self, batch, steps, inner_lr=None, later_inner_lr=None):
        """Each task's policy after ``steps`` policy-gradient steps (task-stacked)."""
        for fast, _ in self.adapt_steps(batch, steps, inner_lr, later_inner_lr):
            pass
        return fast

    def evaluate(self, batch, steps, classification=None, inner_lr=None, later_inner_lr=None):
        """Average return of each task's ``test_trajectories`` trajectories after 0, 1, …,
        ``steps`` policy-gradient steps: ``{"return": (steps + 1, T), "loss": −return}``."""
        returns = np.stack([episodes.average_return()
                            for _, episodes in self.adapt_steps(batch, steps, inner_lr, later_inner_lr)])
        return {"return": returns, "loss": -returns}
