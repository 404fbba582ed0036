"""The papers' experiments: configurations and figures on top of ``tinymeta.training``.

Importing this package limits BLAS to one thread (``one_blas_thread``) unless the user set a
thread count: the matrices here are modest, and on the 2-core machines this was written on a
threaded OpenBLAS beside Numba's threads made a step up to 10x slower (see README, Speed).
"""
import os


def one_blas_thread():
    """One BLAS thread unless the user chose otherwise (set before NumPy loads)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


one_blas_thread()
