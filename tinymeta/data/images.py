"""Images: decoding files with Pillow, and resizing by area averaging.

Every dataset here turns 8-bit pixels into float32 in ``[0, 1]`` the same way:
``x = pixel / 255`` (Omniglot then inverts, ``x = 1 - pixel / 255``, so ink is bright),
followed by an **area-averaging** resize (a box filter): each output pixel is the mean
of the input area it covers, with fractional pixels at the borders weighted by their
overlap. It is written as two matrix products, ``out = R_h @ image @ R_w.T``, with
``R`` the matrix of overlaps from :func:`area_resize_matrix`. The filter is linear with
non-negative weights that sum to one, so results stay in ``[0, 1]`` without ringing,
inversion and resizing commute, and an image already at the target size comes back
unchanged. Non-square images are stretched to a square (each axis resized on its own).
"""

from __future__ import annotations

import functools
import io
from typing import Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from tinymeta.data.paths import DataError

#: Pillow modes that hold no colour: decoded as one channel when channels are chosen automatically.
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# Images converted to float at a time while resizing (about 45 MB of float32 at 105x105).
_RESIZE_CHUNK = 1024
# What Pillow raises for files that are not images or are damaged (PNG chunk errors are SyntaxError).
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def area_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Return the ``[n_out, n_in]`` area-averaging (box filter) matrix.

    Output pixel ``i`` covers the input interval ``[i * n_in / n_out, (i + 1) * n_in / n_out)``;
    entry ``(i, j)`` is the length of its overlap with input pixel ``[j, j + 1)``, divided
    by the interval's length. Every row is non-negative and sums to one.
    """
    scale = n_in / n_out
    edges = np.arange(n_out + 1) * scale
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    return overlap / scale


@functools.lru_cache(maxsize=64)
def _resize_matrix_f32(n_in: int, n_out: int) -> np.ndarray:
    return area_resize_matrix(n_in, n_out).astype(np.float32)


def resize_area(images: np.ndarray, size: int, invert: bool = False) -> np.ndarray:
    """uint8 images ``[..., H, W]`` -> float32 ``[..., size, size]`` in ``[0, 1]``.

    ``x = pixel / 255`` (``1 - pixel / 255`` with ``invert``), then the area-averaging
    resize of the module docstring, in chunks so that the float copy stays small.
    """
    check_size(size)
    if images.dtype != np.uint8 or images.ndim < 2:
        raise DataError(f"resize_area expects uint8 images [..., H, W], got {images.dtype} with shape {images.shape}.")
    *lead, height, width = images.shape
    flat = images.reshape(-1, height, width)
    rows = _resize_matrix_f32(height, size)  # [size, H]
    cols = _resize_matrix_f32(width, size)  # [size, W]
    out = np.empty((len(flat), size, size), dtype=np.float32)
    for start in range(0, len(flat), _RESIZE_CHUNK):
        chunk = flat[start : start + _RESIZE_CHUNK]
        n = len(chunk)
        x = chunk.astype(np.float32) * np.float32(1.0 / 255.0)  # x = pixel / 255
        if invert:
            x = 1.0 - x  # ink bright: x = 1 - pixel / 255
        if height == width == size:
            out[start : start + n] = x  # R is the identity
            continue
        # Along the width: one big GEMM, [n*H, W] @ [W, size] -> [n, H, size].
        half = (x.reshape(n * height, width) @ cols.T).reshape(n, height, size)
        # Along the height on the transposed stack: [n*size, H] @ [H, size], then transpose back.
        half_t = np.ascontiguousarray(half.transpose(0, 2, 1)).reshape(n * size, height)
        out[start : start + n] = (half_t @ rows.T).reshape(n, size, size).transpose(0, 2, 1)
    np.clip(out, 0.0, 1.0, out=out)  # only rounding error can leave [0, 1]
    return out.reshape(*lead, size, size)


def check_size(size: int) -> None:
    """Image sizes are positive ints."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")


def decode_image(data: bytes, where: str, mode: str) -> np.ndarray:
    """Decode image bytes with Pillow to uint8 ``[H, W]`` (``mode='L'``) or ``[H, W, 3]`` (``'RGB'``).

    ``where`` names the file (and archive member) in the error raised for a file that
    is not a readable image. Transparency is dropped, not composited.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert(mode), dtype=np.uint8)
    except _DECODE_ERRORS as err:
        raise DataError(f"{where} is not a readable image ({type(err).__name__}: {err}).") from err


def image_mode(data: bytes, where: str) -> str:
    """Pillow's mode of the image (``'L'``, ``'RGB'``, ``'P'``, ...), reading only its header."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.mode
    except _DECODE_ERRORS as err:
        raise DataError(f"{where} is not a readable image ({type(err).__name__}: {err}).") from err


def to_channels_first(pixels: np.ndarray) -> np.ndarray:
    """uint8 ``[..., H, W, 3]`` -> ``[..., 3, H, W]`` (grey ``[..., H, W]`` stays as it is)."""
    return np.moveaxis(pixels, -1, -3) if pixels.ndim >= 3 and pixels.shape[-1] == 3 else pixels


def image_shape(channels: int, size: int) -> Tuple[int, ...]:
    """Shape of one preprocessed image: ``(size, size)`` for grey, ``(3, size, size)`` for colour."""
    return (size, size) if channels == 1 else (channels, size, size)
