"""Gradient clipping by global norm (Pascanu et al. 2013; Chainer's ``GradientClipping``)."""
from autograd import Tensor, backend


def clip_by_global_norm(grads, max_norm):
    """``grads`` scaled by max_norm / ‖g‖ when their global norm ‖g‖ = √(Σ_k ‖g_k‖²) exceeds
    ``max_norm``, else unchanged; the norm is summed in float64. Returns (grads, ‖g‖)."""
    xp = backend.xp
    norm = float(xp.sqrt(sum(float((g.data.astype(xp.float64) ** 2).sum()) for g in grads.values())))
    if norm <= max_norm:
        return grads, norm
    scale = max_norm / norm                                     # g ← g · max_norm / ‖g‖
    return {k: Tensor.constant(g.data * g.data.dtype.type(scale)) for k, g in grads.items()}, norm
