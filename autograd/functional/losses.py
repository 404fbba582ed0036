"""Losses, and ``Labels``. cross_entropy is written through log_softmax, i.e. log-sum-exp,
so it is stable for large logits; it checks that every label names a class, which for
``Labels`` costs no read from the device."""
import numpy

from .. import backend, mode
from ..function import Function
from ..ops import log_softmax, mean, sum
from ..ops._operands import as_tensor
from ..tensor import Tensor, as_array


class Labels(Tensor):
    """Integer class labels that know their smallest and largest value.

    The two numbers are read where the labels are made, on the host before the array goes to
    the device (a learner's ``inputs``), so ``cross_entropy`` checks the range without
    waiting for the device. Indexing a Labels gives a plain Tensor, whose range is read
    again where it is used.
    """
    __slots__ = ("low", "high")

    def __init__(self, labels):
        y = _array(labels)
        if y.dtype.kind not in "iu":
            raise TypeError(f"Labels: class labels must be integers, got {y.dtype}")
        self.low, self.high = _range(y)
        super().__init__(y)                                       # to the device, once


def _array(labels):
    """The array of a Tensor, an array as it is, anything else (lists) as a host array."""
    if isinstance(labels, Tensor):
        return labels.data
    return labels if hasattr(labels, "dtype") else numpy.asarray(labels)


def _range(y):
    """(smallest, largest) entry of an integer array, (0, −1) when empty: read where the
    array is on the host, else one device reduction and one transfer."""
    if y.size == 0:
        return 0, -1
    if isinstance(y, numpy.ndarray):
        return int(y.min()), int(y.max())
    low, high = backend.to_numpy(backend.xp.stack([y.min(), y.max()]))   # the one sync
    return int(low), int(high)


def _reduce(op, per_example, reduction):
    if reduction == "mean":
        return mean(per_example)
    if reduction == "sum":
        return sum(per_example)
    if reduction == "none":
        return per_example
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def cross_entropy(logits, labels, reduction="mean"):
    """−log softmax(logits)[label], for logits (..., N, classes) and integer labels (..., N)."""
    xp = backend.xp
    logits = as_tensor("cross_entropy", logits)
    y = _array(labels)
    if y.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: labels must be integers, got {y.dtype}")
    if logits.ndim < 2 or tuple(y.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"cross_entropy: labels of shape {tuple(y.shape)} do not match logits "
                         f"{tuple(logits.shape)} (expected labels of shape {tuple(logits.shape[:-1])})")
    classes = logits.shape[-1]
    low, high = (labels.low, labels.high) if isinstance(labels, Labels) else _range(y)
    if y.size and (low < 0 or high >= classes):
        raise ValueError(f"cross_entropy: labels must lie in [0, {classes}), got values in [{low}, {high}]")
    y = backend.from_numpy(y)                                             # checked, then moved
    onehot = (y[..., None] == xp.arange(classes)).astype(logits.dtype)    # a constant selector
    nll = -sum(log_softmax(logits, axis=-1) * Tensor.constant(onehot), axis=-1)   # −log p(y|x)
    return _reduce("cross_entropy", nll, reduction)


def mse_loss(pred, target, reduction="mean"):
    """(pred − target)², averaged over everything by default. A target that is not a Tensor
    is data: it takes a float prediction's dtype."""
    pred = as_tensor("mse_loss", pred)
    if not isinstance(target, Tensor):
        target = Tensor.constant(as_array(target, pred.dtype if pred.dtype.kind == "f" else None,
                                          op="mse_loss"))
    if pred.shape != target.shape:
        raise ValueError(f"mse_loss: prediction {tuple(pred.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    if pred.dtype.kind == "f" and target.dtype == pred.dtype:
        return _reduce("mse_loss", SquaredDifference()(pred, target), reduction)
    diff = pred - target                     # integers, or a dtype mismatch to report
    return _reduce("mse_loss", diff * diff, reduction)


class SquaredDifference(Function):
    """(p − t)² element-wise, p and t of one shape and float dtype, as one node: the values
    of ``d = p − t; d * d``, which records two nodes, and its backward several (two
    products, their sum, a negation). The backward is ∂p = 2 gy (p − t) = −∂t, through
    the node ``ScaledDifference`` when the engine records and on arrays when it does not."""

    def forward(self, p, t):
        d = p - t
        return d * d                                              # (p − t)²

    def backward(self, gy):
        p, t = self.inputs
        if mode.is_grad_enabled():
            gp = ScaledDifference()(gy, p, t)                     # 2 gy (p − t)
            return (gp if p.requires_grad else None), (-gp if t.requires_grad else None)
        gp = (gy.data * (p.data - t.data)) * gy.dtype.type(2)     # 2 gy (p − t)
        return (Tensor.constant(gp) if p.requires_grad else None), \
            (Tensor.constant(-gp) if t.requires_grad else None)


class ScaledDifference(Function):
    """u = 2 g (p − t) element-wise (g, p, t of one shape): the backward of
    ``SquaredDifference``, linear in g and in p − t. For a cotangent A of u:
        ∂g = 2 A (p − t),   ∂p = 2 A g = −∂t
    on arrays when the engine does not record, with differentiable ops when it does."""

    def forward(self, g, p, t):
        return (g * (p - t)) * g.dtype.type(2)                    # 2 g (p − t)

    def backward(self, a):
        g, p, t = self.inputs
        two = a.dtype.type(2)
        if mode.is_grad_enabled():
            gg = (a * (p - t)) * 2.0 if g.requires_grad else None                  # 2 A (p − t)
            ap = (a * g) * 2.0 if p.requires_grad or t.requires_grad else None     # 2 A g
        else:
            gg = Tensor.constant((a.data * (p.data - t.data)) * two) if g.requires_grad else None
            ap = Tensor.constant((a.data * g.data) * two) if p.requires_grad or t.requires_grad else None
        return gg, (ap if p.requires_grad else None), (-ap if t.requires_grad else None)
