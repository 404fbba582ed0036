"""What several test modules share: ``host``, the one way a test brings a result back to
NumPy before comparing it.

Under ``TINYMETA_BACKEND=cupy`` every Tensor holds a device array, and NumPy refuses those
(``np.testing``, ``np.asarray``, host-minus-device arithmetic all raise, as CuPy does). So a
test never compares ``t.data`` directly: it compares ``host(t)``, which is the same NumPy
array on the numpy backend and a copy off the device on CuPy.
"""
import numpy as np

from autograd import Tensor, backend


def host(x):
    """``x`` as a NumPy array: a Tensor's data, a NumPy or CuPy array (a 0-d device array
    too), or a number; a tuple or list of those gives a list of arrays."""
    if isinstance(x, (list, tuple)):
        return [host(v) for v in x]
    if isinstance(x, Tensor):
        x = x.data
    return np.asarray(backend.to_numpy(x))
