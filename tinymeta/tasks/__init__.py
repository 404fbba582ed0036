"""Task distributions for meta-learning, one module per kind of task, and the operations
on task batches that learners share (``batches``)."""

from .episodic import Episode, EpisodeSampler  # noqa: F401  (N-way K-shot classification)
from .device import DeviceEpisodeSampler, episode_sampler  # noqa: F401  (the same, gathered on the device)
from .sinusoid import SinusoidTasks, SinusoidBatch, SinusoidSampler  # noqa: F401
from .batches import merge_support_query, flatten_tasks  # noqa: F401
