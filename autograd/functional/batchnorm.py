"""Batch normalisation, in two forms whose derivatives of every order are exact.

    x̂ = (x − μ_B) / √(σ²_B + ε),   y = γ x̂ + β          (Ioffe & Szegedy, 2015)

* ``batch_norm``: composed from differentiable reductions (batch or running statistics),
  so its derivatives follow from those of its ops.
* ``batch_norm_relu``: relu(batch_norm(x)) with batch statistics as one fused node
  (``BatchNormReLU``, a kernel from ``autograd.kernels``) in the channel-major task layout
  Conv4 uses. The node saves the batch mean and the inverse standard deviation
  s = 1/√(σ² + ε) from the forward kernel; its backward is the node ``BatchNormReLUGrad``,
  whose own backward treats μ and s as the functions of x they are (a cache, not
  constants), so no second-order path is cut. The formulas are in
  ``kernels/batchnorm_numpy.py`` and derived in autograd/README.md.
"""
from .. import backend, kernels, mode
from ..function import Function
from ..mode import no_grad
from ..ops import mean, reshape, sqrt, sum
from ..ops._operands import floating, operands
from ..ops.unary import ReLUGrad
from ..tensor import Tensor


def _updatable(op, running_mean, running_var):
    """Running statistics are updated in place, so they must be arrays of the active
    backend: a NumPy array cannot take a device result in place, nor the other way round."""
    for name, a in (("running_mean", running_mean), ("running_var", running_var)):
        if not isinstance(a, backend.xp.ndarray):
            raise TypeError(f"{op}: {name} is a {type(a).__module__}.{type(a).__name__} but the active "
                            f"backend is {backend.name}, so it cannot be updated in place; make the "
                            f"running statistics on this backend (autograd.backend.from_numpy)")


def batch_norm(x, gamma, beta, eps=1e-5, running_mean=None, running_var=None, training=True,
               momentum=0.1, tasks=False, channel_axis=None):
    """Normalise x per channel (axis 1: x (N, C) or (N, C, H, W)).

    ``training=True`` uses the batch statistics (and updates ``running_mean``/``running_var``
    in place when given, as arrays); ``training=False`` uses the running statistics.
    With ``tasks=True`` axis 0 is a task axis: statistics are per task and ``gamma``/``beta``
    are (T, C). ``channel_axis`` overrides where the channels are (e.g. 1 for the
    channel-major task layout (T, C, N, H, W) that Conv4 uses internally).
    """
    x, gamma, beta = operands("batch_norm", x, gamma, beta)
    x = floating(x)                                             # integers: float64, as NumPy
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
            _updatable("batch_norm", running_mean, running_var)
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
        mu = Tensor.constant(backend.xp.asarray(running_mean, dtype=x.dtype).reshape(rs))
        sigma2 = Tensor.constant(backend.xp.asarray(running_var, dtype=x.dtype).reshape(rs))
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

    The forward pass is one fused kernel (autograd.kernels.bn_relu_forward). Its backward
    is the node below, ``BatchNormReLUGrad``: when no graph is recorded the engine only
    needs its values, so the kernel is called directly; when the engine records the
    backward pass (``create_graph=True``, the inner loop of MAML, the first half of a
    Hessian-vector product) the same kernel runs as a node of the graph, whose own
    backward is exact (Chainer's FunctionNode pattern: a gradient that is itself a
    differentiable function).
    """

    def __init__(self, eps):
        self.eps = eps

    def forward(self, x, gamma, beta, *cancelled_bias):
        T, C = x.shape[:2]                  # a cancelled bias b changes nothing: BN_B(x + b) = BN_B(x)
        y, self.mu, self.inv = kernels.bn_relu_forward(x.reshape(T, C, -1), gamma, beta, self.eps)
        return y.reshape(x.shape)

    def backward(self, gy):
        x, gamma, beta = self.inputs[:3]
        y = self.output().data
        if not mode.is_grad_enabled():                          # values only: the kernel
            T, C = x.shape[:2]
            gx, gg, gb = kernels.bn_relu_backward(gy.data.reshape(T, C, -1), x.data.reshape(T, C, -1),
                                                  y.reshape(T, C, -1), self.mu, self.inv, gamma.data)
            grads = Tensor.constant(gx.reshape(x.shape)), Tensor.constant(gg), Tensor.constant(gb)
        else:
            grads = BatchNormReLUGrad(y, self.mu, self.inv, self.eps)(x, gamma, gy)
        if len(self.inputs) == 4:                               # ∂/∂b BN_B(x + b) = 0, to every order
            grads = tuple(grads) + (Tensor.constant(backend.xp.zeros_like(self.inputs[3].data)),)
        return grads


class BatchNormReLUGrad(Function):
    """The backward of BatchNormReLU as a node with three outputs:
    (x, γ, gy) -> (∂x, ∂γ, ∂β), with g = gy·1[y > 0] and per (task, channel) row

        ∂β = Σ g,   ∂γ = Σ g x̂,   ∂x = γ s (g − ∂β/M − x̂ ∂γ/M)      (s = 1/√(σ² + ε))

    β enters only through the ReLU mask, whose derivative is zero, so it is not an input.
    The batch statistics μ and s saved by the forward kernel are functions of x; this
    node's own backward accounts for that dependence (they are a cache, not constants).

    backward(a, b, c), the cotangents of (∂x, ∂γ, ∂β): the double backward. Without
    recording it is one fused kernel (kernels.bn_relu_double_backward: two passes over a
    row, where the composed formulas took about thirty full-size NumPy operations); with
    recording (third order) the same formulas in differentiable ops, recomputing μ and s
    from x.
    """

    def __init__(self, y, mu, inv, eps):
        self.y, self.mu, self.inv, self.eps = y, mu, inv, eps       # y: the forward output (mask)

    def forward(self, x, gamma, gy):
        T, C = x.shape[:2]
        gx, gg, gb = kernels.bn_relu_backward(gy.reshape(T, C, -1), x.reshape(T, C, -1),
                                              self.y.reshape(T, C, -1), self.mu, self.inv, gamma)
        return gx.reshape(x.shape), gg, gb

    def backward(self, a, b, c):
        x, gamma, gy = self.inputs
        if not mode.is_grad_enabled():                          # values only: the kernel
            T, C = x.shape[:2]
            rows = (T, C, -1)
            gx, gg, ggy = kernels.bn_relu_double_backward(
                x.data.reshape(rows), self.y.reshape(rows), gy.data.reshape(rows), self.mu,
                self.inv, gamma.data, None if a is None else a.data.reshape(rows),
                None if b is None else b.data, None if c is None else c.data)
            return (Tensor.constant(gx.reshape(x.shape)), Tensor.constant(gg),
                    Tensor.constant(ggy.reshape(x.shape)))
        return self._recorded_backward(a, b, c)

    def _recorded_backward(self, a, b, c):
        """The double backward in differentiable ops (see kernels/batchnorm_numpy.py for the
        formulas and autograd/README.md for their derivation)."""
        x, gamma, gy = self.inputs
        axes = tuple(range(2, x.ndim))
        stat = tuple(x.shape[:2]) + (1,) * (x.ndim - 2)
        inv_m = 1.0 / (x.size // (x.shape[0] * x.shape[1]))
        mask = self.y > 0
        g = ReLUGrad(mask)(gy)                                     # g = gy·1[y > 0]
        d = x - mean(x, axes, keepdims=True)                       # x − μ
        s = 1.0 / sqrt(mean(d * d, axes, keepdims=True) + self.eps)   # s = 1/√(σ² + ε)
        xhat = d * s                                               # x̂
        gs = reshape(gamma, stat) * s                              # γ s
        bb = 0.0 if b is None else reshape(b, stat)
        cc = 0.0 if c is None else reshape(c, stat)
        q = mean(g * xhat, axes, keepdims=True)                    # q = mean(g x̂)
        if a is None:
            K = 0.0
            ggy = ReLUGrad(mask)(bb * xhat + cc)                   # 1[y>0](b x̂ + c)
            w = bb * g
            ax = 0.0
        else:
            ax = mean(a * xhat, axes, keepdims=True)               # āₓ = mean(a x̂)
            Pa = a - mean(a, axes, keepdims=True) - xhat * ax      # P a
            K = sum(g * Pa, axes, keepdims=True)                   # K = Σ g·P a
            ggy = ReLUGrad(mask)(gs * Pa + bb * xhat + cc)         # 1[y>0](γ s P a + b x̂ + c)
            w = (bb - gs * ax) * g - gs * q * a                    # w = (b − γ s āₓ) g − γ s q a
        Pw = w - mean(w, axes, keepdims=True) - xhat * mean(w * xhat, axes, keepdims=True)
        gx = s * Pw - gs * s * K * xhat * inv_m                    # ∂x' = s P w − γ s² K x̂ / M
        ggamma = None if a is None else reshape(s * K, gamma.shape)   # ∂γ' = s K
        return gx, ggamma, ggy


def batch_norm_relu(x, gamma, beta, eps=1e-5, running_mean=None, running_var=None, momentum=0.1,
                    cancelled_bias=None):
    """relu(batch_norm(x)) with batch statistics for x (T, C, ...) channel-major, γ/β (T, C).

    Updates ``running_mean``/``running_var`` (arrays of shape (C,)) in place when given,
    one update per task in order, like ``batch_norm``.

    ``cancelled_bias`` (T, C): a per-channel bias b that belongs to x but was not added to
    it (a convolution's bias). Batch statistics remove it exactly,

        BN_B(x + b) = γ (x + b − μ_B − b) / σ_B + β = BN_B(x),

    so the output and every derivative but b's are those of x + b, and b's gradient is 0
    to every order; b is an input only to receive that gradient, and the running mean
    tracks the mean of x + b. A caller saves the full-size add and its gradient's sum.
    """
    x, gamma, beta, bias = operands("batch_norm_relu", x, gamma, beta, cancelled_bias)
    if x.ndim < 3 or tuple(gamma.shape) != tuple(x.shape[:2]) or tuple(beta.shape) != tuple(x.shape[:2]):
        raise ValueError(f"batch_norm_relu: expected x (T, C, ...) with gamma and beta (T, C); got x "
                         f"{tuple(x.shape)}, gamma {tuple(gamma.shape)}, beta {tuple(beta.shape)}")
    inputs = (x, gamma, beta)
    if bias is not None:
        if tuple(bias.shape) != tuple(x.shape[:2]):
            raise ValueError(f"batch_norm_relu: cancelled_bias of shape {tuple(bias.shape)} does not "
                             f"match x {tuple(x.shape)} (expected {tuple(x.shape[:2])})")
        inputs += (bias,)
    if running_mean is not None:
        _updatable("batch_norm_relu", running_mean, running_var)
    node = BatchNormReLU(eps)
    y = node(*inputs)
    if running_mean is not None:
        n = x.size // (x.shape[0] * x.shape[1])
        var = (1.0 / (node.inv.astype(backend.xp.float64) ** 2) - eps) * (n / max(n - 1, 1))
        mu = node.mu if bias is None else node.mu + bias.data      # the mean of x + b
        for m, v in zip(mu, var):                            # one update per task, in order
            running_mean *= 1 - momentum
            running_mean += momentum * m
            running_var *= 1 - momentum
            running_var += momentum * v
    return y
