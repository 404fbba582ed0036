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


def _engine_or_exit():
    """Import the engine; a bad TINYMETA_* environment setting becomes one ``error:`` line
    and exit status 2 instead of a traceback (the engine reads the environment on import)."""
    import sys
    try:
        import autograd  # noqa: F401
    except Exception as e:
        if type(e).__name__ in ("SettingsError", "BackendUnavailable") or str(e).startswith("TINYMETA_"):
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise


_engine_or_exit()
