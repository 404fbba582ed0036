"""The one place that decides which array library the engine runs on.

Every op reaches arrays through ``backend.xp`` (NumPy by default, CuPy after
``set_backend("cupy")`` or ``TINYMETA_BACKEND=cupy``), so moving the engine to a GPU changes
this module and nothing else.
"""
import os

import numpy

xp = numpy          # the active array module: numpy or cupy
name = "numpy"      # "numpy" or "cupy"


class BackendUnavailable(RuntimeError):
    """Raised when the requested backend cannot run on this machine."""


def _load_cupy():
    try:
        import cupy
    except ImportError as e:
        raise BackendUnavailable(
            "set_backend('cupy'): CuPy is not installed; install it with "
            "`pip install -e .[gpu]` (CuPy wheel for CUDA 12) or pick the numpy backend") from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        raise BackendUnavailable(
            f"set_backend('cupy'): CuPy is installed but no NVIDIA GPU is visible ({e})") from e
    if count == 0:
        raise BackendUnavailable("set_backend('cupy'): CuPy is installed but no NVIDIA GPU is visible")
    return cupy


def set_backend(backend_name):
    """Switch every array operation to ``"numpy"`` or ``"cupy"``."""
    global xp, name
    if backend_name == "numpy":
        xp, name = numpy, "numpy"
    elif backend_name == "cupy":
        xp, name = _load_cupy(), "cupy"
    else:
        raise ValueError(f"set_backend: unknown backend {backend_name!r}; choose 'numpy' or 'cupy'")
    return xp


def to_numpy(array):
    """``array`` as a NumPy array whichever backend made it (copied off the GPU; a NumPy
    array is returned as it is, not copied)."""
    if isinstance(array, numpy.ndarray):
        return array
    if hasattr(array, "get"):  # cupy.ndarray
        return array.get()
    return numpy.asarray(array)


def from_numpy(array):
    """``array`` moved onto the active backend."""
    return xp.asarray(array)


if os.environ.get("TINYMETA_BACKEND", "numpy") != "numpy":
    set_backend(os.environ["TINYMETA_BACKEND"])
