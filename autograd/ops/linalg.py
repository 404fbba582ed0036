"""Matrix products, 2-D and batched (NumPy matmul broadcasting over leading axes).

``matmul(a, b, transpose_a, transpose_b)`` computes op(A) op(B) with op(M) = M or Mᵀ (the
last two axes swapped). The transposes are BLAS flags, not copies, and they let each
backward product be written directly in the layout its result is needed in: without them
∂L/∂B of A Bᵀ would come out as a transposed view, and every later op that touches it
(adding it to another gradient, a kernel) would walk memory with a stride.

``group_matmul(a, b)``: a stack of G products A_g B_g on contiguous copies of the operands
(the grouped convolution of Meta Networks' per-query fast weights).
"""
from .. import backend
from ..function import Function
from ._operands import binary_operands
from .shape import sum_to, swapaxes


def _t(m, flag):
    return m.swapaxes(-1, -2) if flag else m


def matmul_arrays(a, b):
    """The one place where arrays are matrix-multiplied (MatMul, Linear, LinearGrad): BLAS
    through ``xp.matmul``. experiments/bench.py wraps it to count flops.

    Two products take a shorter way to the same values, because NumPy calls the BLAS once
    per matrix of a batch and at the sizes of a small MLP the calls cost more than the
    arithmetic:

    * an inner dimension of 1 (an outer product: the first layer of a network whose input
      is a number) is the broadcast product a · b, with no sum in it;
    * a task-batched right factor that is one matrix broadcast along the task axis (stride
      0: the shared weights θ in MAML's inner loop) is one 2-D product of all the tasks' rows.

    And one is computed transposed, because OpenBLAS runs it faster that way round:

    * A Bᵀ with few rows in A, a long inner dimension and B stored row-major (a convolution's
      weight gradient G colsᵀ: 64 × 3675 by 3675 × 576 per Omniglot task) is (B Aᵀ)ᵀ, copied
      back to row-major. Measured on one core of the 2-core CI machine, float32: 72 → 81
      GFLOP/s at the Omniglot shape, 54 → 67 for mini-ImageNet's 32 × 132300 by 132300 × 288;
      slower for a result only 9 columns wide (25 → 23), so those stay as they are. Inner
      dimensions from 240 on gain too (two tasks of 64 × K by K × 576, alone: 76 → 84 at
      K = 245, 77 → 87 at 300, 77 → 92 at 980; inside the Omniglot MAML step, the support
      set's 245: 56 → 66), shorter ones lose (72 → 10 at 20, 74 → 30 at 80). In float64 the
      flip loses at every size measured (47 → 39 GFLOP/s at K = 1200, 44 → 39 at 3675, 48 →
      27 at 245), so float64 products are never flipped.
    """
    if _flip(a, b):
        bt_at = backend.xp.matmul(b.swapaxes(-1, -2), a.swapaxes(-1, -2))   # bᵀ aᵀ = (a b)ᵀ
        return backend.xp.ascontiguousarray(bt_at.swapaxes(-1, -2))
    if a.shape[-1] == 1:
        return backend.xp.multiply(a, b)                        # (…, N, 1) · (…, 1, M)
    if a.ndim == 3 and b.ndim == 3 and b.strides[0] == 0 and a.shape[0] == b.shape[0]:
        rows = a.reshape(-1, a.shape[-1])                       # (T·N, K)
        return backend.xp.matmul(rows, b[0]).reshape(a.shape[:-1] + b.shape[-1:])
    return backend.xp.matmul(a, b)


def _flip(a, b):
    """Whether matmul_arrays computes a b as (bᵀ aᵀ)ᵀ (its docstring): a row-major with at most
    64 rows, b a transposed view of a row-major matrix with at least 16 columns, an inner
    dimension of at least 240, float32, on NumPy."""
    it = a.itemsize
    return (a.ndim >= 2 and a.shape[-1] >= 240 and a.dtype.char == "f" and a.ndim == b.ndim
            and backend.name == "numpy"
            and a.shape[-2] <= 64 and b.shape[-1] >= 16
            and a.strides[-1] == it and b.strides[-2] == it and b.strides[-1] != it)


class MatMul(Function):
    def __init__(self, transpose_a=False, transpose_b=False):
        self.ta, self.tb = transpose_a, transpose_b

    def forward(self, a, b):
        return matmul_arrays(_t(a, self.ta), _t(b, self.tb))

    def backward(self, gy):
        a, b = self.inputs
        ta, tb = self.ta, self.tb
        ga = gb = None
        if a.requires_grad:
            if ta:
                ga = matmul(b, gy, tb, True)            # Y = AᵀB: ∂L/∂A = B Gᵀ (Y = AᵀBᵀ: Bᵀ Gᵀ)
            else:
                ga = matmul(gy, b, False, not tb)       # Y = AB: ∂L/∂A = G Bᵀ (Y = ABᵀ: G B)
            ga = sum_to(ga, a.shape)
        if b.requires_grad:
            if tb:
                gb = matmul(gy, a, True, ta)            # Y = ABᵀ: ∂L/∂B = Gᵀ A (Y = AᵀBᵀ: Gᵀ Aᵀ)
            else:
                gb = matmul(a, gy, not ta, False)       # Y = AB: ∂L/∂B = Aᵀ G (Y = AᵀB: A G)
            gb = sum_to(gb, b.shape)
        return ga, gb


def matmul(a, b, transpose_a=False, transpose_b=False):
    """op(a) @ op(b), where op transposes the last two axes when its flag is set."""
    a, b = binary_operands("matmul", a, b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul: both operands need at least 2 dimensions, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)} (reshape vectors to (n, 1) or (1, n))")
    ka = a.shape[-2] if transpose_a else a.shape[-1]
    kb = b.shape[-1] if transpose_b else b.shape[-2]
    if ka != kb:
        left = f"{tuple(a.shape)}{'ᵀ' if transpose_a else ''}"
        right = f"{tuple(b.shape)}{'ᵀ' if transpose_b else ''}"
        raise ValueError(f"matmul: inner dimensions differ, {left} @ {right} ({ka} != {kb})")
    try:
        return MatMul(bool(transpose_a), bool(transpose_b))(a, b)
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of {tuple(a.shape)} and {tuple(b.shape)} "
                         "cannot be broadcast together") from None


class GroupMatMul(Function):
    """A B for stacks of matrices a (G, m, k), b (G, k, n), computed on contiguous copies.

    NumPy multiplies a stack of transposed views (the backward products of a grouped
    convolution, Gᵀ·cols and W·Gᵀ) without BLAS, about ten times slower; this node hands
    the BLAS contiguous operands in its forward pass and writes its backward with itself on
    swapped axes (∂A = G Bᵀ, ∂B = Aᵀ G), so every derivative is again this node."""

    def forward(self, a, b):
        xp = backend.xp
        return matmul_arrays(xp.ascontiguousarray(a), xp.ascontiguousarray(b))

    def backward(self, gy):
        a, b = self.inputs
        ga = group_matmul(gy, swapaxes(b, -1, -2)) if a.requires_grad else None   # ∂L/∂A = G Bᵀ
        gb = group_matmul(swapaxes(a, -1, -2), gy) if b.requires_grad else None   # ∂L/∂B = Aᵀ G
        return ga, gb


def group_matmul(a, b):
    """A B of a (G, m, k) and b (G, k, n) (``GroupMatMul``)."""
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ValueError(f"group_matmul: expected a (G, m, k) and b (G, k, n), got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    return GroupMatMul()(a, b)
