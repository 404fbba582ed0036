"""2-D convolution (cross-correlation, as in every framework) as im2col + matrix product.

im2col copies every receptive field into a column; col2im adds columns back into the
image. They are each other's adjoint, so each is the other's backward, and the second
derivative of conv2d is exact by construction: the products with the weights are
ordinary differentiable matmuls.
"""
from .. import kernels
from ..function import Function
from ..ops import matmul, reshape, transpose
from ..ops._operands import as_tensor, operands


def _pair(v, what):
    if isinstance(v, int):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return int(v[0]), int(v[1])
    raise ValueError(f"conv2d: {what} must be an int or a pair, got {v!r}")


class Im2Col(Function):
    def __init__(self, kh, kw, stride, padding):
        self.k, self.s, self.p = (kh, kw), stride, padding

    def forward(self, x):
        self.hw, self.n = x.shape[-2:], x.shape[2]
        return kernels.im2col(x, *self.k, *self.s, *self.p)

    def backward(self, gy):
        return (col2im(gy, self.hw, self.n, self.k, self.s, self.p),)


class Col2Im(Function):
    def __init__(self, hw, n, k, stride, padding):
        self.hw, self.n, self.k, self.s, self.p = hw, n, k, stride, padding

    def forward(self, cols):
        return kernels.col2im(cols, *self.hw, *self.k, *self.s, *self.p, N=self.n)

    def backward(self, gy):
        return (im2col(gy, self.k, self.s, self.p),)


def im2col(x, k, stride, padding):
    """(G, C, N, H, W) -> (G, C·kh·kw, N·OH·OW), differentiable: column (n, oh, ow) holds the
    receptive field of output pixel (oh, ow) of image n."""
    return Im2Col(k[0], k[1], stride, padding)(as_tensor("im2col", x))


def col2im(cols, hw, n, k, stride, padding):
    """The adjoint of im2col: (G, C·kh·kw, N·OH·OW) -> (G, C, N, H, W), differentiable."""
    return Col2Im(tuple(hw), n, tuple(k), stride, padding)(as_tensor("col2im", cols))


def conv2d(x, w, b=None, stride=1, padding=0):
    """x (N, C, H, W), w (O, C, kh, kw), b (O,) -> (N, O, OH, OW).

    Batched over tasks: x (T, N, C, H, W), w (T, O, C, kh, kw), b (T, O) -> (T, N, O, OH, OW).
    """
    x, w, b = operands("conv2d", x, w, b)
    tasks = w.ndim == 5
    if w.ndim not in (4, 5) or x.ndim != w.ndim:
        raise ValueError(f"conv2d: expected x (N, C, H, W) with w (O, C, kh, kw), or x "
                         f"(T, N, C, H, W) with w (T, O, C, kh, kw); got x {tuple(x.shape)} and "
                         f"w {tuple(w.shape)}")
    if tasks and x.shape[0] != w.shape[0]:
        raise ValueError(f"conv2d: x has {x.shape[0]} tasks but w has {w.shape[0]} "
                         f"(x {tuple(x.shape)}, w {tuple(w.shape)})")
    C, H, W = x.shape[-3:]
    O, Cw, kh, kw = w.shape[-4:]
    if C != Cw:
        raise ValueError(f"conv2d: input has {C} channels but the weight expects {Cw} "
                         f"(x {tuple(x.shape)}, w {tuple(w.shape)})")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0, got stride {stride}, padding {padding}")
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"conv2d: kernel {kh}x{kw} with padding {padding} does not fit input "
                         f"{H}x{W} (x {tuple(x.shape)})")
    lead = x.shape[:-3]                                             # (N,) or (T, N)
    G, N = (lead[0], lead[1]) if tasks else (1, lead[0])
    # channel-major groups: (G, C, N, H, W), so each group's convolution is one matrix product
    xg = transpose(reshape(x, (G, N, C, H, W)), (0, 2, 1, 3, 4))
    wg = reshape(w, (G,) + tuple(w.shape[-4:]))
    y = conv2d_grouped(xg, wg, None, (sh, sw), (ph, pw))           # (G, O, N, OH, OW)
    y = transpose(y, (0, 2, 1, 3, 4))                               # back to (G, N, O, OH, OW)
    y = reshape(y, lead + (O, OH, OW))
    if b is None:
        return y
    if b.shape != w.shape[:-3]:
        raise ValueError(f"conv2d: bias of shape {tuple(b.shape)} does not match weight "
                         f"{tuple(w.shape)} (expected {tuple(w.shape[:-3])})")
    bshape = (b.shape[0], 1, O, 1, 1) if tasks else (O, 1, 1)
    return y + reshape(b, bshape)


def conv2d_grouped(x, w, b, stride, padding):
    """Convolution in the channel-major task layout: x (G, C, N, H, W) with w (G, O, C, kh, kw)
    and b (G, O) gives (G, O, N, OH, OW). Each group g is one matrix product
    W_g (O × C·kh·kw) · cols_g (C·kh·kw × N·OH·OW), and the result is already channel-major,
    so a network kept in this layout never transposes its activations."""
    x, w, b = operands("conv2d_grouped", x, w, b)
    G, C, N, H, W = x.shape
    _, O, _, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    cols = im2col(x, (kh, kw), (sh, sw), (ph, pw))                  # (G, C·kh·kw, N·OH·OW)
    y = matmul(reshape(w, (G, O, C * kh * kw)), cols)               # y = W · cols
    y = reshape(y, (G, O, N, OH, OW))
    if b is not None:
        y = y + reshape(b, (G, O, 1, 1, 1))
    return y
