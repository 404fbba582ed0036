"""Running the tests on each array backend.

* The ``backend`` fixture is parametrised over ``"numpy"`` and ``"cupy"``: a test that takes
  it runs once per backend, with that backend active (the previous one is restored after
  the test). Where CuPy cannot run, the cupy case is skipped and ``-rs`` shows why, e.g.
  ``CuPy backend: set_backend('cupy'): CuPy is not installed, so ...``. The ``cupy``
  fixture gives the ``cupy`` module to tests that only make sense with it (same skip).
* ``TINYMETA_BACKEND=cupy python -m pytest`` runs the whole suite with CuPy active:
  ``autograd.backend`` reads the variable when it is imported, and a fixture puts that
  session backend back before every test (a test that switches backends cannot leak its
  choice into the next one). If CuPy cannot run there, the session stops at once with the
  one-sentence reason instead of failing test by test.

Nothing here imports ``autograd`` at module level: importing it reads TINYMETA_BACKEND,
and a failure there must become the clean stop above rather than a conftest import error.
"""
import os
import sys

# One BLAS thread for the tests (before NumPy loads, as the experiment scripts do): their
# matrices are tiny, and a threaded BLAS on a busy 2-core machine made the suite several
# times slower, its threads spinning against other processes. An explicit setting wins.
if "numpy" not in sys.modules:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

_BACKENDS = ("numpy", "cupy")
_cupy_reason = []          # [reason or None], computed once per session


def _session_backend():
    return os.environ.get("TINYMETA_BACKEND", "").strip() or "numpy"


def cupy_reason():
    """None when the CuPy backend can run here, else why not (one sentence)."""
    if not _cupy_reason:
        from autograd import backend
        _cupy_reason.append(backend.cupy_unavailable_reason())
    return _cupy_reason[0]


def pytest_sessionstart(session):
    try:
        import autograd  # noqa: F401  (applies TINYMETA_BACKEND)
    except Exception as e:
        if type(e).__name__ in ("BackendUnavailable", "ValueError"):
            pytest.exit(f"TINYMETA_BACKEND={_session_backend()!r}: {e}",
                        returncode=pytest.ExitCode.USAGE_ERROR)
        raise


def pytest_report_header(config):
    try:
        reason = cupy_reason()
    except Exception:                   # autograd itself failed to import: sessionstart says why
        return None
    return (f"tinymeta backend: {_session_backend()} (TINYMETA_BACKEND); cupy cases: "
            f"{'run' if reason is None else 'skipped: ' + reason}")


@pytest.fixture(autouse=True)
def _restore_session_backend():
    """Every test starts on the session backend (numpy, or TINYMETA_BACKEND)."""
    from autograd import backend
    wanted = _session_backend()
    if backend.name != wanted:
        backend.set_backend(wanted)
    yield


@pytest.fixture(params=_BACKENDS)
def backend(request):
    """The name of the active backend, once per backend; the cupy case is skipped (with the
    reason) where CuPy cannot run."""
    from autograd import backend as B
    if request.param == "cupy":
        reason = cupy_reason()
        if reason is not None:
            pytest.skip(f"CuPy backend: {reason}")
    previous = B.name
    B.set_backend(request.param)
    try:
        yield request.param
    finally:
        B.set_backend(previous)


@pytest.fixture
def cupy():
    """The ``cupy`` module, for tests that need CuPy itself (skipped with the reason elsewhere)."""
    reason = cupy_reason()
    if reason is not None:
        pytest.skip(f"CuPy backend: {reason}")
    import cupy as cp
    return cp


@pytest.fixture(scope="session")
def omniglot_data_dir():
    """The folder holding omniglot/ (TINYMETA_DATA, else ../shared/data beside the
    repository, the CI layout), or skip the test saying how to provide it."""
    from pathlib import Path
    from_env = os.environ.get("TINYMETA_DATA")
    folder = Path(from_env) if from_env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (folder / "omniglot" / "omniglot_background.npz").is_file():
        pytest.skip("Omniglot data not found: set TINYMETA_DATA to the folder holding omniglot/ "
                    f"(looked in {folder})")
    return folder


@pytest.fixture(scope="module")
def numpy_kernels():
    """The NumPy kernels for a whole test module (``pytestmark = usefixtures(...)``): on the
    tiny images of the algorithm tests Numba's thread start-up dominates, and the kernels
    themselves are tested in test_kernels.py."""
    import autograd.kernels as K
    previous = K.kernels_name()
    K.set_kernels("numpy")
    yield
    K.set_kernels(previous)
