"""A soft external memory read by content and written by least-recently-used access (LRUA),
as in the memory-augmented neural network of Santoro et al. (2016).

A memory is a matrix M (..., N, W): N slots of width W. R heads each emit a key k (..., R, W)
and a gate α (..., R). With cos the cosine similarity and σ the logistic function:

    w^r_t = softmax_i cos(k_t, M_t(i))                          content-based read weights
            (optionally softmax_i β_t cos(k_t, M_t(i)), with a key strength β_t as in the NTM)
    r_t   = Σ_i w^r_t(i) M_t(i)                                  the read vector
    w^w_t = σ(α) w^r_{t−1} + (1 − σ(α)) w^lu_{t−1}              LRUA write weights
    M_t(i) = M_{t−1}(i) [slot i not the least used] + Σ_heads w^w_t(i) k_t   clear, then write
    w^u_t = γ w^u_{t−1} + Σ_heads (w^r_t + w^w_t)                usage

w^lu_{t−1} is one-hot on a least-used slot of w^u_{t−1}: head j gets the j-th least-used slot,
so the R heads write to R different fresh slots. It is a piecewise-constant function of the
usage, so its derivative is zero and it is computed on raw arrays, like ReLU's mask; every
other line is made of engine ops, so derivatives of any order are exact.
"""
from .. import backend
from ..ops import matmul, reshape, sigmoid, softmax, sum
from ..tensor import Tensor
from .similarity import cosine_similarity


def _shapes(*named):
    return ", ".join(f"{name} {tuple(x.shape)}" for name, x in named)


def content_weights(keys, memory, strength=None):
    """w^r = softmax_i cos(k, M(i)): keys (..., R, W), memory (..., N, W) → (..., R, N), each
    row summing to one. With ``strength`` β (..., R), softmax_i β cos(k, M(i)) (the key
    strength of Graves et al.'s NTM): cosines lie in [−1, 1], so without it no weight exceeds
    e / (e + (N − 1)/e), 5.5% for N = 128 slots."""
    if keys.ndim < 2 or memory.ndim < 2 or keys.shape[-1] != memory.shape[-1]:
        raise ValueError(f"content_weights: expected keys (..., R, W) and memory (..., N, W) with the "
                         f"same W, got {_shapes(('keys', keys), ('memory', memory))}")
    similarity = cosine_similarity(keys, memory)
    if strength is None:
        return softmax(similarity, axis=-1)                    # w^r(i) = softmax_i cos(k, M(i))
    if tuple(strength.shape) != keys.shape[:-1]:
        raise ValueError(f"content_weights: expected strength (..., R) for keys (..., R, W), got "
                         f"{_shapes(('keys', keys), ('strength', strength))}")
    beta = reshape(strength, tuple(strength.shape) + (1,))
    return softmax(beta * similarity, axis=-1)                 # w^r(i) = softmax_i β cos(k, M(i))


def read(weights, memory):
    """r = Σ_i w(i) M(i) for every head: weights (..., R, N), memory (..., N, W) → (..., R, W)."""
    if weights.shape[-1] != memory.shape[-2]:
        raise ValueError(f"read: expected weights (..., R, N) over the N slots of memory (..., N, W), "
                         f"got {_shapes(('weights', weights), ('memory', memory))}")
    return matmul(weights, memory)                             # r = w M


def least_used(usage, heads):
    """w^lu: one-hot rows (..., heads, N) on the ``heads`` least-used slots of usage (..., N), the
    least used first (ties: the lower slot). A constant of the graph (zero derivative)."""
    u = backend.from_numpy(usage.data if isinstance(usage, Tensor) else usage)   # a host usage too
    if not 1 <= heads <= u.shape[-1]:
        raise ValueError(f"least_used: {heads} heads need as many distinct slots, usage has {u.shape[-1]}")
    xp = backend.xp
    order = xp.argsort(u, axis=-1, kind="stable")[..., :heads]             # slots by usage, ascending
    onehot = (order[..., :, None] == xp.arange(u.shape[-1])).astype(u.dtype)
    return Tensor.constant(onehot)


def lrua_write(memory, keys, previous_reads, previous_least_used, alpha):
    """One LRUA write: (M_t, w^w_t). memory (..., N, W), keys (..., R, W), previous_reads and
    previous_least_used (..., R, N), alpha (..., R). The least-used slot (row 0 of w^lu) is
    cleared, then each head adds its key with its write weights."""
    N = memory.shape[-2]
    ok = (previous_reads.shape == previous_least_used.shape == keys.shape[:-1] + (N,)
          and tuple(alpha.shape) == keys.shape[:-1] and keys.shape[-1] == memory.shape[-1])
    if not ok:
        raise ValueError("lrua_write: expected memory (..., N, W), keys (..., R, W), previous_reads and "
                         "previous_least_used (..., R, N), alpha (..., R); got " + _shapes(
                             ("memory", memory), ("keys", keys), ("previous_reads", previous_reads),
                             ("previous_least_used", previous_least_used), ("alpha", alpha)))
    gate = sigmoid(reshape(alpha, tuple(alpha.shape) + (1,)))              # σ(α), one per head
    writes = gate * previous_reads + (1.0 - gate) * previous_least_used   # w^w = σ(α) w^r + (1−σ(α)) w^lu
    kept = Tensor.constant(1.0 - previous_least_used.data[..., :1, :].swapaxes(-1, -2))   # (..., N, 1)
    memory = memory * kept + matmul(writes, keys, transpose_a=True)         # M(i) ← M(i)[i ≠ lu] + Σ w^w(i) k
    return memory, writes


def usage_update(usage, reads, writes, gamma):
    """w^u_t = γ w^u_{t−1} + Σ_heads (w^r_t + w^w_t): usage (..., N), reads and writes (..., R, N)."""
    if reads.shape != writes.shape or reads.shape[:-2] + reads.shape[-1:] != usage.shape:
        raise ValueError(f"usage_update: expected usage (..., N) and reads, writes (..., R, N), got "
                         f"{_shapes(('usage', usage), ('reads', reads), ('writes', writes))}")
    return gamma * usage + sum(reads + writes, axis=-2)         # w^u = γ w^u + Σ_heads (w^r + w^w)
