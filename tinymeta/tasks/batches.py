"""Operations on task batches that several learners and experiments name.

A task batch is a dataclass with ``support_x, support_y, query_x, query_y`` (and possibly
more fields, e.g. a sinusoid's amplitude and phase), each with a leading task axis.
"""
import dataclasses

import numpy as np


def merge_support_query(batch):
    """The same batch whose support set is all of each task's examples (support, then
    query): what Reptile and joint training learn from, having no support/query split."""
    x = np.concatenate([batch.support_x, batch.query_x], axis=1)
    y = np.concatenate([batch.support_y, batch.query_y], axis=1)
    return dataclasses.replace(batch, support_x=x, support_y=y)


def task_parts(batch, size):
    """The batch cut along its task axis into consecutive parts of ``size`` tasks (the last
    may be smaller): the same kind of batch, every field with the task axis sliced, fields
    without it (a scalar, a shorter array) kept whole. A batch that is not a dataclass is
    one part."""
    T = len(batch.support_x)
    if not dataclasses.is_dataclass(batch) or size >= T:
        return [batch]
    tasked = [f.name for f in dataclasses.fields(batch)
              if getattr(getattr(batch, f.name), "shape", ())[:1] == (T,)]
    return [dataclasses.replace(batch, **{k: getattr(batch, k)[start:start + size] for k in tasked})
            for start in range(0, T, size)]


def flatten_tasks(x):
    """(T, N, ...) → (T·N, ...): every example of every task as one data set."""
    return x.reshape((-1,) + x.shape[2:])
