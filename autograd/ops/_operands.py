"""Turning operands into Tensors, and the dtype rule: float32 and float64 never mix silently."""
from .. import backend
from ..tensor import Tensor


def lift(x, like):
    """``x`` as a Tensor; a Python number takes the dtype of the Tensor it meets."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (int, float)):
        return Tensor.constant(backend.xp.asarray(x, dtype=like.dtype))
    return Tensor(x)


def binary_operands(op, a, b):
    if not isinstance(a, Tensor):
        a = lift(a, b)
    elif not isinstance(b, Tensor):
        b = lift(b, a)
    if a.data.dtype != b.data.dtype:
        raise TypeError(
            f"{op}: dtype mismatch, {a.data.dtype} {tuple(a.shape)} and {b.data.dtype} "
            f"{tuple(b.shape)}; tinymeta never up-casts silently, convert one side with "
            ".astype() first")
    return a, b


def broadcast_error(op, *shapes):
    listed = " and ".join(str(tuple(s)) for s in shapes)
    return ValueError(f"{op}: shapes {listed} cannot be broadcast together")
