"""The one place that decides which array library the engine runs on.

Every op reaches arrays through ``backend.xp`` (NumPy by default, CuPy after
``set_backend("cupy")``), so moving the engine to a GPU changes this module and nothing else.
``autograd.settings`` is the front door (``settings.set(backend="cupy")``, or
``TINYMETA_BACKEND=cupy``, which it reads at import). The array kernels (``autograd.kernels``) follow the arrays
they are given: CuPy arrays go to ``autograd.kernels.cupy_kernels``.

What the switch covers, and what it does not:

* Every array an op creates, every parameter made by ``tinymeta.parameters.leaves``, the
  optimizers' state and Conv4's batch-norm running statistics are made with ``xp``, so they
  live on the active backend. Switch *before* building models and optimizers: arrays that
  already exist are not moved (``from_numpy`` moves one explicitly).
* Random streams stay on the host on purpose: tinymeta draws tasks, episodes and initial
  weights with ``numpy.random.Generator`` objects and then moves the arrays to the device
  (``from_numpy``). The same seed therefore gives the same tasks and the same initial
  weights on both backends, and a run resumed on the other backend continues the same
  stream; only floating-point rounding (summation order, fused multiply-adds) differs.
* Moving data between host and device is explicit: ``to_numpy`` copies to the host,
  ``from_numpy`` to the active backend. Checkpoints always hold NumPy arrays, and loading
  places them on the backend active at load time, so a GPU checkpoint loads on a CPU-only
  machine and the other way round.
"""
import numpy

xp = numpy          # the active array module: numpy or cupy
name = "numpy"      # "numpy" or "cupy"


class BackendUnavailable(RuntimeError):
    """Raised when the requested backend cannot run on this machine."""


def _first_line(e):
    text = str(e).strip()
    return (text.splitlines() or [type(e).__name__])[0].strip() or type(e).__name__


def _load_cupy():
    """The ``cupy`` module, or BackendUnavailable with one sentence saying what is missing."""
    try:
        import cupy
    except ModuleNotFoundError as e:
        if e.name not in (None, "cupy"):        # CuPy is there but one of its own imports is not
            raise BackendUnavailable(
                f"set_backend('cupy'): CuPy is installed but cannot be imported "
                f"({_first_line(e)}), so use the numpy backend or repair the CuPy install.") from e
        raise BackendUnavailable(
            "set_backend('cupy'): CuPy is not installed, so install it with "
            "`pip install -e .[gpu]` (the cupy-cuda12x wheel for CUDA 12; with CUDA 13 "
            "install cupy-cuda13x by hand) or use the numpy backend.") from e
    except ImportError as e:                    # e.g. the CUDA libraries CuPy needs are missing
        raise BackendUnavailable(
            f"set_backend('cupy'): CuPy is installed but cannot be imported "
            f"({_first_line(e)}), so use the numpy backend or repair the CuPy install.") from e
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:                      # no driver, no device, driver too old
        raise BackendUnavailable(
            f"set_backend('cupy'): CuPy is installed but no NVIDIA GPU is visible "
            f"({_first_line(e)}), so use the numpy backend.") from e
    if count < 1:
        raise BackendUnavailable(
            "set_backend('cupy'): CuPy is installed but no NVIDIA GPU is visible "
            "(the CUDA runtime reports 0 devices), so use the numpy backend.")
    return cupy


def cupy_unavailable_reason():
    """None when ``set_backend("cupy")`` would succeed here, else its one-sentence error
    message. Changes nothing."""
    try:
        _load_cupy()
    except BackendUnavailable as e:
        return str(e)
    return None


def set_backend(backend_name):
    """Switch every array operation to ``"numpy"`` or ``"cupy"``; returns the array module.

    On failure (unknown name, CuPy missing, no GPU) nothing changes.
    """
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
    if type(array).__module__.split(".")[0] == "cupy" and hasattr(array, "get"):   # cupy.ndarray
        return array.get()
    return numpy.asarray(array)


def from_numpy(array, dtype=None):
    """``array`` (NumPy, CuPy, a list or a number) as an array of the active backend: copied
    to the device under CuPy, copied to the host from a CuPy array under NumPy, returned as
    it is when it is already there (and of ``dtype``, when given)."""
    if xp is numpy:
        array = to_numpy(array)
    return xp.asarray(array, dtype=dtype)
