"""Indexing (slices and integer-array gathers), its adjoint scatter-add, concatenate, stack
and where. getitem and scatter_add are each other's backward, so every order is exact.
"""
import numpy

from .. import backend
from ..function import Function
from ..tensor import Tensor
from ._operands import as_tensor, binary_operands, broadcast_error, operands


def _is_array(part):
    return hasattr(part, "shape") and not isinstance(part, numpy.generic)


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


def _axes(parts, ndim):
    """The axis of x at which each index part starts: None and Ellipsis take none (Ellipsis
    stands for the axes nothing else takes), a boolean mask takes its ndim, the rest one."""
    width = [0 if p is None or p is Ellipsis else p.ndim if _is_array(p) and p.dtype == bool else 1
             for p in parts]
    axis, starts = 0, []
    for p, w in zip(parts, width):
        starts.append(axis)
        axis += ndim - sum(width) if p is Ellipsis else w
    return starts


def _out_of_range(op, lo, hi, axis, shape):
    n = shape[axis]
    return IndexError(f"{op}: an integer index array with values in [{lo}, {hi}] does not fit shape "
                      f"{tuple(shape)} on axis {axis} (valid: {-n} to {n - 1})")


def _check_range(op, parts, shape):
    """Refuse integer index arrays with entries outside [−n, n) for the axis they index:
    NumPy raises there, CuPy would wrap them around silently. Host arrays are checked on the
    host; device arrays with one reduction and one device→host transfer for all of them."""
    on_device = []
    for p, axis in zip(parts, _axes(parts, len(shape))):
        if not _is_array(p) or p.dtype.kind not in "iu" or p.size == 0 or axis >= len(shape):
            continue                                 # too many indices: the array library says so
        n = shape[axis]
        if isinstance(p, numpy.ndarray):
            lo, hi = int(p.min()), int(p.max())
            if lo < -n or hi >= n:
                raise _out_of_range(op, lo, hi, axis, shape)
        else:
            on_device.append((p, axis, n))
    if on_device:
        bad = [((p < -n) | (p >= n)).any() for p, _, n in on_device]
        if bool(backend.xp.stack(bad).any()):        # the one sync
            for p, axis, n in on_device:
                lo, hi = int(p.min()), int(p.max())
                if lo < -n or hi >= n:
                    raise _out_of_range(op, lo, hi, axis, shape)


def _prepared_index(op, index, shape):
    """``index`` as the node keeps it: Tensors replaced by their arrays, lists made arrays,
    integer arrays checked against ``shape``, index arrays moved to the active backend once
    (the node's backward and its backward reuse that copy)."""
    def part(p):
        if isinstance(p, Tensor):
            p = p.data
        if isinstance(p, list):
            p = numpy.asarray(p)
        return p
    parts = tuple(part(p) for p in (index if isinstance(index, tuple) else (index,)))
    _check_range(op, parts, shape)
    parts = tuple(backend.from_numpy(p) if _is_array(p) else p for p in parts)
    return parts if isinstance(index, tuple) else parts[0]


class GetItem(Function):
    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return x[self.index]
        except IndexError as e:
            raise IndexError(f"getitem: index {self.index!r} does not fit shape {tuple(x.shape)}: {e}") from None

    def backward(self, gy):
        return (ScatterAdd(self.index, self.in_shape)(gy),)


class ScatterAdd(Function):
    """zeros(shape) with ``g`` added at ``index``: the adjoint of ``x[index]``."""

    def __init__(self, index, shape):
        self.index, self.shape = index, tuple(shape)

    def forward(self, g):
        xp = backend.xp
        out = xp.zeros(self.shape, dtype=g.dtype)
        if _is_basic(self.index):
            out[self.index] = g                      # a slice: no repeated positions
        else:
            xp.add.at(out, self.index, g)            # integer arrays may repeat positions
        return out

    def backward(self, gy):
        return (GetItem(self.index)(gy),)


def getitem(x, index):
    x = as_tensor("getitem", x)
    return GetItem(_prepared_index("getitem", index, x.shape))(x)


def scatter_add(g, index, shape):
    return ScatterAdd(_prepared_index("scatter_add", index, tuple(shape)), shape)(as_tensor("scatter_add", g))


class Concatenate(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        try:
            return backend.xp.concatenate(xs, axis=self.axis)
        except ValueError:
            shapes = ", ".join(str(tuple(x.shape)) for x in xs)
            raise ValueError(f"concatenate: shapes {shapes} differ outside axis {self.axis}") from None

    def backward(self, gy):
        grads, start = [], 0
        for size in self.sizes:                       # each input gets back its own slab
            index = [slice(None)] * gy.ndim
            index[self.axis] = slice(start, start + size)
            grads.append(getitem(gy, tuple(index)))
            start += size
        return tuple(grads)


def concatenate(tensors, axis=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    tensors = operands("concatenate", *tensors)
    ndim = tensors[0].ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"concatenate: axis {axis} is out of range for {ndim}-d tensors")
    return Concatenate(axis % ndim)(*tensors)


def stack(tensors, axis=0):
    """Stack along a new axis: expand each input by one axis, then concatenate."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    tensors = [as_tensor("stack", t) for t in tensors]
    shape = tensors[0].shape
    for t in tensors:
        if t.shape != shape:
            raise ValueError(f"stack: all shapes must be equal, got {tuple(shape)} and {tuple(t.shape)}")
    axis = axis % (len(shape) + 1)
    expanded = [t.reshape(shape[:axis] + (1,) + shape[axis:]) for t in tensors]
    return concatenate(expanded, axis)


class Where(Function):
    def __init__(self, condition):
        self.condition = condition

    def forward(self, a, b):
        return backend.xp.where(self.condition, a, b)

    def backward(self, gy):
        a, b = self.inputs
        mask = Tensor.constant(self.condition.astype(gy.dtype))      # a constant selection
        ga = sum_to(gy * mask, a.shape) if a.requires_grad else None
        gb = sum_to(gy * (1.0 - mask), b.shape) if b.requires_grad else None
        return ga, gb


def where(condition, a, b):
    """Elements of ``a`` where ``condition`` holds, else of ``b`` (condition is a constant)."""
    a, b = binary_operands("where", a, b)
    cond = condition.data if isinstance(condition, Tensor) else backend.xp.asarray(condition)
    try:
        shape = numpy.broadcast_shapes(cond.shape, a.shape, b.shape)   # host tuples
    except ValueError:
        raise broadcast_error("where", cond.shape, a.shape, b.shape) from None
    return Where(backend.xp.broadcast_to(cond.astype(bool), shape))(a, b)


from .shape import sum_to  # noqa: E402
