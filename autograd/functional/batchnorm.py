"""Batch normalisation composed from differentiable reductions, so its double backward
is exact (no saved raw inverse standard deviation that would cut a second-order path).

    x̂ = (x − μ_B) / √(σ²_B + ε),   y = γ x̂ + β          (Ioffe & Szegedy, 2015)
"""
from .. import backend, kernels, mode
from ..function import Function
from ..mode import no_grad
from ..ops import mean, reshape, sqrt, sum
from ..ops.unary import ReLUGrad
from ..tensor import Tensor


def batch_norm(x, gamma, beta, eps=1e-5, running_mean=None, running_var=None, training=True,
               momentum=0.1, tasks=False, channel_axis=None):
    """Normalise x per channel (axis 1: x (N, C) or (N, C, H, W)).

    ``training=True`` uses the batch statistics (and updates ``running_mean``/``running_var``
    in place when given, as arrays); ``training=False`` uses the running statistics.
    With ``tasks=True`` axis 0 is a task axis: statistics are per task and ``gamma``/``beta``
    are (T, C). ``channel_axis`` overrides where the channels are (e.g. 1 for the
    channel-major task layout (T, C, N, H, W) that Conv4 uses internally).
    """
    first = 1 if tasks else 0
    if x.ndim - first not in (2, 4):
        raise ValueError(f"batch_norm: expected x (N, C) or (N, C, H, W){' after the task axis' if tasks else ''}, "
                         f"got {tuple(x.shape)}")
    ch = first + 1 if channel_axis is None else channel_axis % x.ndim
    C = x.shape[ch]
    want = (x.shape[0], C) if tasks else (C,)
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is not None and tuple(p.shape) != want:
            raise ValueError(f"batch_norm: {name} of shape {tuple(p.shape)} does not match "
                             f"{want} for x {tuple(x.shape)}")
    axes = tuple(i for i in range(first, x.ndim) if i != ch)
    stat_shape = tuple(n if (i == ch or (tasks and i == 0)) else 1 for i, n in enumerate(x.shape))
    if training:
        mu = mean(x, axes, keepdims=True)                       # μ_B
        d = x - mu                                              # x − μ_B, computed once
        sigma2 = mean(d * d, axes, keepdims=True)               # σ²_B
        if running_mean is not None:
            n = x.size // mu.size
            with no_grad():                     # one update per task, in order, as a loop would
                for m, v in zip(mu.data.reshape(-1, C), sigma2.data.reshape(-1, C) * (n / max(n - 1, 1))):
                    running_mean *= 1 - momentum
                    running_mean += momentum * m          # r ← (1 − m) r + m μ_B
                    running_var *= 1 - momentum
                    running_var += momentum * v           # unbiased σ²_B, as in Ioffe & Szegedy
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: training=False needs running_mean and running_var")
        rs = tuple(C if i == ch else 1 for i in range(x.ndim))
        mu = Tensor._from_op(backend.xp.asarray(running_mean, dtype=x.dtype).reshape(rs))
        sigma2 = Tensor._from_op(backend.xp.asarray(running_var, dtype=x.dtype).reshape(rs))
        d = x - mu
    # y = γ x̂ + β with x̂ = (x − μ)/√(σ² + ε). The per-channel factor γ/√(σ² + ε) is formed
    # on the small statistics first, so the full-size tensor is touched only twice.
    scale = 1.0 / sqrt(sigma2 + eps)
    if gamma is not None:
        scale = scale * reshape(gamma, stat_shape)
    y = d * scale
    if beta is not None:
        y = y + reshape(beta, stat_shape)
    return y


class BatchNormReLU(Function):
    """relu(batch_norm(x)) with batch statistics, fused, in the channel-major layout
    x (T, C, ...) with γ, β of shape (T, C).

    The forward pass and the first-order backward pass are single fused kernels
    (autograd.kernels.bn_relu_forward / bn_relu_backward). The backward keeps the batch
    statistics as raw arrays, which would cut second-order paths if they were ever
    differentiated: so it uses the kernel only when no graph is being recorded. When the
    engine records the backward pass (``create_graph=True``), it instead evaluates the same
    vector-Jacobian product formulas (see kernels/batchnorm_numpy.py) with differentiable ops
    of x, γ and gy, recomputing μ and 1/√(σ² + ε) from x: exact to every order, the same
    numbers, and about half the graph of differentiating the composed forward.
    In MAML that composed path runs on the support sets only; the large query sets take the
    fused path.
    """

    def __init__(self, eps):
        self.eps = eps

    def forward(self, x, gamma, beta):
        T, C = x.shape[:2]
        y, self.mu, self.inv = kernels.bn_relu_forward(x.reshape(T, C, -1), gamma, beta, self.eps)
        return y.reshape(x.shape)

    def backward(self, gy):
        x, gamma, beta = self.inputs
        if not mode.is_grad_enabled():                          # first order: fused kernel
            T, C = x.shape[:2]
            gx, gg, gb = kernels.bn_relu_backward(gy.data.reshape(T, C, -1), x.data.reshape(T, C, -1),
                                                  self.output().data.reshape(T, C, -1), self.mu,
                                                  self.inv, gamma.data)
            return Tensor._from_op(gx.reshape(x.shape)), Tensor._from_op(gg), Tensor._from_op(gb)
        # Recorded (create_graph=True): the same formulas, in differentiable ops of x, γ and gy.
        axes = tuple(range(2, x.ndim))
        stat = tuple(x.shape[:2]) + (1,) * (x.ndim - 2)
        inv_m = 1.0 / (x.size // (x.shape[0] * x.shape[1]))
        g = ReLUGrad(self.output().data > 0)(gy)            # the ReLU gate: a constant mask
        d = x - mean(x, axes, keepdims=True)                   # x − μ
        s = 1.0 / sqrt(mean(d * d, axes, keepdims=True) + self.eps)   # 1/√(σ² + ε)
        xhat = d * s                                           # x̂
        gbeta = sum(g, axes)                                   # ∂β = Σ g
        ggamma = sum(g * xhat, axes)                           # ∂γ = Σ g x̂
        gx = (reshape(gamma, stat) * s) * (g - reshape(gbeta, stat) * inv_m
                                           - xhat * (reshape(ggamma, stat) * inv_m))   # γs(g − ∂β/M − x̂ ∂γ/M)
        return gx, ggamma, gbeta


def batch_norm_relu(x, gamma, beta, eps=1e-5, running_mean=None, running_var=None, momentum=0.1):
    """relu(batch_norm(x)) with batch statistics for x (T, C, ...) channel-major, γ/β (T, C).

    Updates ``running_mean``/``running_var`` (arrays of shape (C,)) in place when given,
    one update per task in order, like ``batch_norm``.
    """
    if x.ndim < 3 or tuple(gamma.shape) != tuple(x.shape[:2]) or tuple(beta.shape) != tuple(x.shape[:2]):
        raise ValueError(f"batch_norm_relu: expected x (T, C, ...) with gamma and beta (T, C); got x "
                         f"{tuple(x.shape)}, gamma {tuple(gamma.shape)}, beta {tuple(beta.shape)}")
    node = BatchNormReLU(eps)
    y = node(x, gamma, beta)
    if running_mean is not None:
        n = x.size // (x.shape[0] * x.shape[1])
        var = (1.0 / (node.inv.astype(backend.xp.float64) ** 2) - eps) * (n / max(n - 1, 1))
        for m, v in zip(node.mu, var):                       # one update per task, in order
            running_mean *= 1 - momentum
            running_mean += momentum * m
            running_var *= 1 - momentum
            running_var += momentum * v
    return y

