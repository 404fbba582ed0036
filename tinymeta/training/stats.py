"""Means and 95% confidence intervals, one convention for the whole library.

    mean ± 1.96 · s / √n,     s = the sample standard deviation (ddof = 1)

over n independent values (per-task accuracies or losses). 1.96 is the normal quantile; at
the task counts used here (≥ 100) Student's t differs in the third digit. Values that are
not finite (a task on which fine-tuning diverged) are *counted and left out*, never averaged
in silently: ``summarize`` reports how many.
"""
import math

import numpy as np

Z95 = 1.96
CONVENTION = "mean ± 1.96·std(ddof=1)/√n over per-task values; non-finite values counted and excluded"


def mean_ci(values):
    """(mean, half-width of the 95% interval) of a 1-D sequence of finite values."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return float("nan"), float("nan")
    half = Z95 * v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else 0.0
    return float(v.mean()), float(half)


def summarize(per_step):
    """Per-step statistics of an array (steps, tasks): mean, ci95, median, max over the tasks
    whose values are finite at every step, and how many tasks diverged."""
    a = np.asarray(per_step, dtype=np.float64)
    a = a.reshape(1, -1) if a.ndim == 1 else a
    ok = np.isfinite(a).all(axis=0)
    kept = a[:, ok]
    stats = [mean_ci(row) for row in kept]
    return {"mean": [m for m, _ in stats], "ci95": [c for _, c in stats],
            "median": (np.median(kept, axis=1) if kept.shape[1] else np.full(len(a), np.nan)).tolist(),
            "max": (kept.max(axis=1) if kept.shape[1] else np.full(len(a), np.nan)).tolist(),
            "tasks": int(ok.sum()), "diverged": int((~ok).sum())}
