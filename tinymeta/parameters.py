"""Parameter collections: an ordered dict name → Tensor.

Models never own their weights; the forward pass takes a collection, so the fast weights
θ'ᵢ of an inner loop are just another collection. For the task axis, a collection of
shared weights θ is *broadcast* to T copies (no memory copied): each task's inner loop then
updates its own slice, and gradients of the copies flow back to θ summed (broadcast's
adjoint).
"""
import numpy as np

from autograd import Tensor, backend
from autograd.ops import broadcast_to


def leaves(arrays, dtype=None):
    """New leaf Tensors that require grad, from a dict of arrays."""
    return {k: Tensor(backend.from_numpy(v, dtype=dtype), requires_grad=True) for k, v in arrays.items()}


def detached(params):
    """The same values as new leaves that require grad, cut from any graph: where a
    meta-test adaptation starts, and where each of its steps restarts."""
    return {k: Tensor(v.data, requires_grad=True) for k, v in params.items()}


def to_arrays(params):
    """A dict of NumPy arrays (copied off the GPU if needed), e.g. for saving."""
    return {k: np.array(backend.to_numpy(v.data if isinstance(v, Tensor) else v)) for k, v in params.items()}


def broadcast_to_tasks(params, tasks):
    """θ → (θ, θ, …, θ) along a new leading task axis, as views: shapes (T, *shape)."""
    return {k: broadcast_to(v, (tasks,) + v.shape) for k, v in params.items()}   # a new leading axis
