"""Similarities between two sets of vectors, every pair at once."""
from ..ops import matmul, sqrt, sum


def unit(x, eps=1e-8):
    """x / ‖x‖ along the last axis, with ‖x‖ = √(Σ x² + ε): a zero vector stays zero."""
    return x / sqrt(sum(x * x, axis=-1, keepdims=True) + eps)


def cosine_similarity(a, b, eps=1e-8):
    """cos(a_n, b_m) = a_n · b_m / (‖a_n‖ ‖b_m‖) for every pair: a (..., N, D) and b (..., M, D)
    give (..., N, M); leading axes broadcast."""
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"cosine_similarity: expected a (..., N, D) and b (..., M, D) with the same D, "
                         f"got a {tuple(a.shape)} and b {tuple(b.shape)}")
    return matmul(unit(a, eps), unit(b, eps), transpose_b=True)       # â b̂ᵀ
