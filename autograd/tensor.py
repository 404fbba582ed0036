"""``Tensor``: an array from the active backend plus what reverse mode needs.

``data`` is the array, ``requires_grad`` says whether gradients should flow to it,
``creator`` is the ``Function`` that produced it (``None`` for a leaf), ``grad`` is filled by
``Tensor.backward()``. All arithmetic is delegated to the ops in ``autograd.ops``.
"""
import reprlib

import numpy

from . import backend

_FLOATS = ("float32", "float64")
_NUMERIC = "biufc"      # array kinds a Tensor may hold: bool, integers, floats, complex


def _describe(data):
    if hasattr(data, "dtype") and hasattr(data, "shape"):
        return f"an array of dtype {data.dtype} and shape {tuple(data.shape)}"
    return f"{type(data).__name__} {reprlib.repr(data)}"


def as_array(data, dtype=None, op="Tensor"):
    """``data`` (a Tensor, an array, numbers or nested lists of numbers) as an array of the
    active backend; anything that does not hold numbers (strings, None, objects) is refused
    with a TypeError naming ``op`` and what was given."""
    if isinstance(data, Tensor):
        data = data.data
    try:
        host = data if hasattr(data, "dtype") else numpy.asarray(data)   # Python objects: on the host
        if host.dtype.kind in _NUMERIC:
            return backend.xp.asarray(host, dtype=dtype)
    except (TypeError, ValueError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise TypeError(f"{op}: cannot make a numeric array{'' if dtype is None else f' of dtype {dtype}'} "
                        f"from {_describe(data)} ({reason})") from None
    raise TypeError(f"{op}: expected a Tensor, numbers or a numeric array, got {_describe(data)}")


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "creator", "name", "__weakref__")
    __array_ufunc__ = None   # `ndarray * Tensor` defers to Tensor.__rmul__
    # No __eq__ (and so identity hashing): the engine keys its sets and dicts by tensors.

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        data = as_array(data, dtype)
        if requires_grad and data.dtype.name not in _FLOATS:
            raise TypeError(f"Tensor: only float32/float64 tensors can require grad, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.creator = None
        self.name = name

    @classmethod
    def constant(cls, array):
        """Wrap an array of the active backend as a constant: no copy, no checks,
        ``requires_grad=False``. The ops use it for their outputs and for the constant arrays
        a backward pass needs; ``Tensor(data)`` is the checked constructor."""
        t = object.__new__(cls)
        t.data = array
        t.grad = None
        t.requires_grad = False
        t.creator = None
        t.name = None
        return t

    # --- array facts -------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def numpy(self):
        """The values as a NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    # --- graph -------------------------------------------------------------------------
    @property
    def is_leaf(self):
        return self.creator is None

    def detach(self):
        """The same values as a new leaf that gradients do not flow through."""
        return Tensor.constant(self.data)

    def requires_grad_(self, flag=True):
        if flag and self.dtype.name not in _FLOATS:
            raise TypeError(f"requires_grad_: only float tensors can require grad, got {self.dtype}")
        self.requires_grad = flag
        return self

    def astype(self, dtype):
        return ops.astype(self, dtype)

    def backward(self, grad=None, retain_graph=False, create_graph=False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad."""
        from .engine import backward
        backward(self, grad, retain_graph=retain_graph, create_graph=create_graph)

    # --- operators ---------------------------------------------------------------------
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __neg__(self): return ops.neg(self)
    def __pow__(self, exponent): return ops.pow(self, exponent)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __getitem__(self, index): return ops.getitem(self, index)

    # comparisons give plain boolean arrays: they have no derivative
    def __gt__(self, other): return self.data > _raw(other)
    def __lt__(self, other): return self.data < _raw(other)
    def __ge__(self, other): return self.data >= _raw(other)
    def __le__(self, other): return self.data <= _raw(other)

    # --- methods -----------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def var(self, axis=None, keepdims=False): return ops.var(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def tanh(self): return ops.tanh(self)
    def sigmoid(self): return ops.sigmoid(self)
    def relu(self): return ops.relu(self)
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return ops.reshape(self, shape)
    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return ops.transpose(self, axes or None)
    permute = transpose
    def swapaxes(self, a, b): return ops.swapaxes(self, a, b)
    @property
    def T(self): return ops.transpose(self, None)
    def broadcast_to(self, shape): return ops.broadcast_to(self, shape)


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def tensor(data, requires_grad=False, dtype=None):
    """Make a Tensor (Python floats become float64, as in NumPy)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


from . import ops  # noqa: E402  (ops needs Tensor defined first)
