"""The sinusoid regression tasks of the MAML paper (Section 5.1).

A task is y = A sin(x − φ) with amplitude A ~ U[0.1, 5.0], phase φ ~ U[0, π], inputs
x ~ U[−5, 5]; K support points and K query points are drawn per task.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class SinusoidBatch:
    support_x: np.ndarray   # (T, K, 1)
    support_y: np.ndarray   # (T, K, 1)
    query_x: np.ndarray     # (T, Q, 1)
    query_y: np.ndarray     # (T, Q, 1)
    amplitude: np.ndarray   # (T,)
    phase: np.ndarray       # (T,)


class SinusoidTasks:
    def __init__(self, amplitude=(0.1, 5.0), phase=(0.0, np.pi), x_range=(-5.0, 5.0)):
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range

    @staticmethod
    def function(x, amplitude, phase):
        return amplitude * np.sin(x - phase)              # y = A sin(x − φ)

    def sample(self, rng, tasks, shots, queries=None, dtype=np.float64):
        """T tasks with ``shots`` support and ``queries`` (default: shots) query points each."""
        queries = shots if queries is None else queries
        for name, v in (("tasks", tasks), ("shots", shots), ("queries", queries)):
            if int(v) < 1:
                raise ValueError(f"SinusoidTasks.sample: {name} must be >= 1, got {v}")
        A = rng.uniform(*self.amplitude, size=tasks)
        phi = rng.uniform(*self.phase, size=tasks)
        x = rng.uniform(*self.x_range, size=(tasks, shots + queries, 1))
        y = self.function(x, A[:, None, None], phi[:, None, None])
        x, y = x.astype(dtype), y.astype(dtype)
        return SinusoidBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], A, phi)


class SinusoidSampler:
    """A seeded stream of sinusoid task batches with the sampler interface the run layer
    uses (``sample_batch(n)``, ``get_state()``, ``set_state(state)``)."""

    def __init__(self, tasks, shots, queries=None, rng=None, dtype=np.float64):
        self.tasks, self.shots, self.queries, self.dtype = tasks, int(shots), queries, np.dtype(dtype)
        self.rng = np.random.default_rng(rng)

    def sample_batch(self, n):
        return self.tasks.sample(self.rng, n, self.shots, self.queries, dtype=self.dtype)

    def get_state(self):
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state
