"""Worker threads for independent pieces of one computation.

A meta-batch's tasks are independent: each task's loss, and its share of the meta-gradient,
depends on its own data only. ``map_workers(fn, items)`` runs ``fn`` on the items in a pool
of worker threads and returns the results in the order of the items, which is how
``tinymeta`` spreads the parts of a meta-batch over the cores.

Threads, not processes, because the work lives where Python lets go of the GIL: NumPy's
matrix products and large element-wise ops, and the Numba kernels (compiled ``nogil``). The
graph bookkeeping that holds the GIL is a few percent of a Conv4 step. Each worker builds
and walks its own graph from the shared parameters (leaves, never written during a
backward pass), and the grad-recording flag is one per thread (``autograd.settings``), so
nothing is shared that a worker writes.

The workers are the parallelism: in a worker thread the Numba kernels run on one thread
(Numba keeps a count per thread), so two workers on two cores do not start two more Numba
threads each, and the BLAS runs one thread per call (``autograd.settings`` gives workers
only when the BLAS is single-threaded). How many workers there are is a setting
(``autograd.settings``, ``workers``); with one, ``map_workers`` is a plain loop in the
calling thread.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

from . import backend, kernels

_workers = 1            # the count in effect (settings decides it)
_pool = None            # a ThreadPoolExecutor of _workers threads, made on first use
_lock = threading.Lock()


def set_workers(n):
    """Use ``n`` worker threads (>= 1) from now on; the pool is remade on its next use."""
    global _workers, _pool
    n = max(1, int(n))
    with _lock:
        if n != _workers and _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _workers = n
    return n


def workers():
    """How many worker threads ``map_workers`` uses."""
    return _workers


def _get_pool():
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_workers, thread_name_prefix="tinymeta-worker")
        return _pool


def map_workers(fn, items):
    """``[fn(item) for item in items]``, the items shared among the worker threads.

    Each call runs with the caller's grad-recording flag and its Numba kernels on one
    thread. An exception in any call is raised here, after every call has finished (none
    is left running on shared state)."""
    items = list(items)
    if (_workers == 1 or len(items) < 2 or backend.name != "numpy"
            or threading.current_thread().name.startswith("tinymeta-worker")):   # no nesting
        return [fn(item) for item in items]
    from .settings import recording
    enabled = recording.enabled

    def call(item):
        recording.enabled = enabled
        kernels.use_one_numba_thread_here()       # ~1 us: also right after a kernel switch
        return fn(item)
    futures = [_get_pool().submit(call, item) for item in items]
    errors = [f.exception() for f in futures]            # waits for every one of them
    for e in errors:
        if e is not None:
            raise e
    return [f.result() for f in futures]
