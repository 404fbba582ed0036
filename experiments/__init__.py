"""The papers' experiments: configurations and figures on top of ``tinymeta.training``.

Importing this package imports the engine (a bad ``TINYMETA_*`` environment setting becomes
one ``error:`` line and exit status 2) and limits BLAS to one thread through the settings
home, ``autograd.settings``, unless ``TINYMETA_BLAS_THREADS`` says otherwise: the matrices
here are modest, and on the 2-core machines this was written on a threaded OpenBLAS beside
Numba's threads made a step up to 10x slower (see README, Speed).
"""
import os
import sys


def _engine_or_exit():
    try:
        from autograd import settings
    except Exception as e:
        if type(e).__name__ in ("SettingsError", "BackendUnavailable"):
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise
    return settings


def one_blas_thread():
    """BLAS on one thread unless TINYMETA_BLAS_THREADS chose a count (works after NumPy loads)."""
    if not os.environ.get("TINYMETA_BLAS_THREADS"):
        _engine_or_exit().set(blas_threads=1)


one_blas_thread()
