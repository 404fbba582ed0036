"""Losses. cross_entropy is written through log_softmax, i.e. log-sum-exp, so it is stable
for large logits."""
from .. import backend
from ..ops import log_softmax, mean, sum
from ..ops._operands import as_tensor
from ..tensor import Tensor, as_array


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
    y = labels.data if isinstance(labels, Tensor) else xp.asarray(labels)
    if y.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: labels must be integers, got {y.dtype}")
    if logits.ndim < 2 or tuple(y.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"cross_entropy: labels of shape {tuple(y.shape)} do not match logits "
                         f"{tuple(logits.shape)} (expected labels of shape {tuple(logits.shape[:-1])})")
    classes = logits.shape[-1]
    if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"cross_entropy: labels must lie in [0, {classes}), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
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
    diff = pred - target
    return _reduce("mse_loss", diff * diff, reduction)
