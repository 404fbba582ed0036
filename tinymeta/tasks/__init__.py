"""Task distributions for meta-learning, one module per kind of task.

Each import below brings in one kind; adding a new module takes one more line here.
"""

from tinymeta.tasks.episodic import Episode, EpisodeSampler  # noqa: F401  (N-way K-shot classification)
from .sinusoid import SinusoidTasks, SinusoidBatch
