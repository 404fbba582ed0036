"""Reinforcement learning for MAML (Finn et al., 2017, Section 5.3 and Algorithm 3), in NumPy
on the engine, batched over tasks and trajectories:

    navigation  the 2D point robot and its goal sampler (the task stream)
    policy      the Gaussian MLP policy, Gaussian log-density and KL
    rollouts    trajectories of every task at once, returns
    baseline    the linear feature baseline fitted per task, advantages
    losses      REINFORCE loss, TRPO surrogate, mean KL
    trpo        conjugate gradient and the trust-region step

The learner that puts them together is ``tinymeta.algorithms.MAMLRL``.
"""
from .navigation import GoalBatch, GoalSampler, PointNavigation
from .policy import GaussianMLPPolicy, gaussian_kl, gaussian_log_prob
from .rollouts import Episodes, discounted_returns, noise, rollout
from .baseline import LinearFeatureBaseline, advantages, features
from .losses import PolicyGradientData, mean_kl, reinforce_loss, surrogate_loss
from .trpo import TRPO, conjugate_gradient, flatten, unflatten
