"""Turning operands into Tensors, and the dtype rule every op follows.

* An op's operands may be Tensors, arrays, lists or numbers: whatever is not a Tensor is
  taken as a constant (``as_tensor``); what does not hold numbers is refused, naming the op.
* float32 and float64 never mix silently, and a float operand's dtype is never changed: a
  mismatch is a TypeError asking for an explicit ``.astype()``.
* A number takes the dtype of a float Tensor it meets (``x * 0.5`` stays float32).
* Integer and bool operands (constants: they cannot require grad) follow NumPy's result
  dtype, never truncated: ``Tensor([1, 2, 3]) * 0.5`` is float64 [0.5, 1.0, 1.5], as in
  NumPy. They are converted only where that result is the dtype of the other operands.
"""
import numpy

from .. import backend
from ..tensor import Tensor, as_array


def as_tensor(op, x):
    """``x`` as a Tensor: a Tensor as it is, anything else as a constant of numbers."""
    if isinstance(x, Tensor):
        return x
    return Tensor.constant(as_array(x, op=op))


def _is_number(x):
    return isinstance(x, (int, float)) or (isinstance(x, numpy.generic) and x.dtype.kind in "biuf")


def _constant(value, dtype):
    """A number as a 0-d constant. On a GPU it is made by a fill kernel, not copied from host
    memory: a copy is a transfer at every use, and cannot be recorded into a CUDA graph."""
    xp = backend.xp
    if xp is numpy:
        return Tensor.constant(numpy.asarray(value, dtype=dtype))
    return Tensor.constant(xp.full((), value, dtype=dtype))


def binary_operands(op, a, b):
    """(a, b) as Tensors of one dtype; the common cases first, the general rule after."""
    if isinstance(a, Tensor):
        if isinstance(b, Tensor):
            if a.data.dtype == b.data.dtype:
                return a, b
        elif _is_number(b) and a.data.dtype.kind == "f":
            return a, _constant(b, a.data.dtype)
    elif isinstance(b, Tensor) and _is_number(a) and b.data.dtype.kind == "f":
        return _constant(a, b.data.dtype), b
    return operands(op, a, b)


def operands(op, *xs):
    """The operands of ``op`` as Tensors of one dtype, by the rule of the module docstring
    (``None`` stays ``None``: an absent bias)."""
    dtype = None
    for x in xs:                                  # the common case: Tensors of one dtype
        if x is None:
            continue
        if not isinstance(x, Tensor) or (dtype is not None and x.data.dtype != dtype):
            return _unified(op, xs)
        dtype = x.data.dtype
    return xs


def _unified(op, xs):
    tensors = [None if x is None or _is_number(x) else as_tensor(op, x) for x in xs]
    present = [t for t in tensors if t is not None]
    dtype = numpy.result_type(*[t.data.dtype for t in present]) if present else None
    for t in present:
        if t.data.dtype != dtype and t.data.dtype.kind not in "biu":
            listed = " and ".join(f"{t.data.dtype} {tuple(t.shape)}" for t in present)
            raise TypeError(f"{op}: dtype mismatch, {listed}; tinymeta never up-casts silently, "
                            "convert one side with .astype() first")
    numbers = [x for x, t in zip(xs, tensors) if t is None and x is not None]
    if numbers and (dtype is None or dtype.kind not in "fc"):
        dtype = numpy.result_type(*([] if dtype is None else [dtype]), *numbers)   # NumPy's rule
    out = []
    for x, t in zip(xs, tensors):
        if x is None:
            out.append(None)
        elif t is None:
            out.append(_constant(x, dtype))
        else:
            out.append(t if t.data.dtype == dtype else Tensor.constant(t.data.astype(dtype)))
    return out


def floating(x):
    """``x`` itself when it holds floats; integers and bools as a float64 constant (the dtype
    NumPy's mean and transcendental functions give them)."""
    if x.data.dtype.kind in "fc":
        return x
    return Tensor.constant(x.data.astype(numpy.float64))


def broadcast_error(op, *shapes):
    listed = " and ".join(str(tuple(s)) for s in shapes)
    return ValueError(f"{op}: shapes {listed} cannot be broadcast together")
