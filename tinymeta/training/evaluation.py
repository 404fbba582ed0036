"""The meta-test protocol, the same for every learner and experiment.

For each of ``n_tasks`` held-out tasks (drawn from a sampler with its own seed): adapt from
the learned initialisation with ``steps`` meta-test steps on the support set, and score the
query set after each step (``MetaLearner.evaluate``). Tasks run in chunks so memory stays
bounded. The result is per step and per task; ``tinymeta.training.stats.summarize`` turns
it into mean ± 95% CI with diverged tasks counted.
"""
import numpy as np

from .stats import summarize


def meta_test(learner, sampler, n_tasks, steps, chunk=None, inner_lr=None):
    """{"loss": (steps + 1, n_tasks), "accuracy": (steps + 1, n_tasks) for classification}."""
    chunk = int(chunk or n_tasks)
    parts = []
    done = 0
    while done < n_tasks:
        batch = sampler.sample_batch(min(chunk, n_tasks - done))
        parts.append(learner.evaluate(batch, steps, inner_lr=inner_lr))
        done += parts[-1]["loss"].shape[1]                 # tasks scored: any kind of batch
    return {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}


def report(results):
    """``summarize`` of every metric of ``meta_test``'s result."""
    return {k: summarize(v) for k, v in results.items()}
