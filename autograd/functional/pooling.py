"""Max-pooling as a gather at the arg-max positions.

The positions depend on x only through comparisons, so they are constants (away from
ties): the gradient is a scatter-add to those positions, and the scatter's own backward is
the matching gather. Both are linear, so every higher derivative is exact.
"""
from .. import kernels
from ..function import Function
from ..ops import reshape
from ..ops._operands import as_tensor


class GatherPlane(Function):
    def __init__(self, idx, hw):
        self.idx, self.hw = idx, hw

    def forward(self, x):
        return kernels.gather_plane(x, self.idx)

    def backward(self, gy):
        return (ScatterAddPlane(self.idx, self.hw)(gy),)


class ScatterAddPlane(Function):
    def __init__(self, idx, hw):
        self.idx, self.hw = idx, hw

    def forward(self, g):
        return kernels.scatter_add_plane(g, self.idx, *self.hw)

    def backward(self, gy):
        return (GatherPlane(self.idx, self.hw)(gy),)


def max_pool2d(x, kernel, stride=None):
    """x (..., C, H, W) -> (..., C, OH, OW), the max of each kernel window (no padding)."""
    x = as_tensor("max_pool2d", x)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    stride = (kh, kw) if stride is None else stride
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    if x.ndim < 3:
        raise ValueError(f"max_pool2d: expected x (..., C, H, W), got {tuple(x.shape)}")
    C, H, W = x.shape[-3:]
    if kh > H or kw > W:
        raise ValueError(f"max_pool2d: kernel {kh}x{kw} is larger than the input {H}x{W} "
                         f"(x {tuple(x.shape)})")
    OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
    lead = x.shape[:-3]
    B = 1
    for n in lead:
        B *= n
    planes = reshape(x, (B, C, H, W))
    idx = kernels.maxpool_argmax(planes.data, kh, kw, sh, sw)     # constant positions
    y = GatherPlane(idx, (H, W))(planes)                          # y = x[argmax]
    return reshape(y, lead + (C, OH, OW))
