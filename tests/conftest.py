"""The test session: settings, backends and Hypothesis profiles.

* BLAS on one thread, through ``autograd.settings`` (``blas_threads=1``, which works even
  when NumPy was imported first): the tests' matrices are tiny, and a threaded BLAS on a
  busy 2-core machine made the suite several times slower, its threads spinning against
  other processes. ``TINYMETA_BLAS_THREADS`` set by hand wins.
* The ``backend`` fixture is parametrised over ``"numpy"`` and ``"cupy"``: a test that takes
  it runs once per backend, with that backend active (the previous one is restored after
  the test). Where CuPy cannot run, the cupy case is skipped and ``-rs`` shows why, e.g.
  ``CuPy backend: set_backend('cupy'): CuPy is not installed, so ...``. The ``cupy``
  fixture gives the ``cupy`` module to tests that only make sense with it (same skip).
* ``TINYMETA_BACKEND=cupy python -m pytest`` runs the whole suite with CuPy active:
  ``autograd.settings`` reads the variable when it is imported, and a fixture puts that
  session backend (and grad recording on) back before every test, so a test that switches
  cannot leak its choice into the next one. If CuPy cannot run there, or a TINYMETA_
  variable holds a bad value, the session stops at once with the one-sentence reason
  instead of failing test by test.
* Hypothesis profiles, chosen by ``HYPOTHESIS_PROFILE``, else ``ci`` where ``CI`` is set
  (``ci_cupy`` under ``TINYMETA_BACKEND=cupy``), else ``cupy`` under
  ``TINYMETA_BACKEND=cupy``, else ``dev``. All print a failing example
  with its reproduction blob and have no deadline (a busy machine is not a failure):

  - ``dev``: random examples, a new draw each run;
  - ``ci``: derandomized, so CI draws the same examples on every run;
  - ``cupy``: at most 10 examples and no shrinking (each example is slow on a GPU). The
    test modules of the engine ask for ``min(n, settings.default.max_examples)`` examples
    so that this cap holds for them;
  - ``ci_cupy``: ``cupy``, derandomized: what CI uses for its run on the CuPy stand-in.

Nothing here imports ``autograd`` at module level: importing it reads the environment,
and a failure there must become the clean stop above rather than a conftest import error.
"""
import os

import pytest
from hypothesis import Phase, settings as hypothesis_settings

_BACKENDS = ("numpy", "cupy")
_cupy_reason = []          # [reason or None], computed once per session


def _session_backend():
    return os.environ.get("TINYMETA_BACKEND", "").strip() or "numpy"


# ----------------------------------------------------------------------------- Hypothesis
hypothesis_settings.register_profile("dev", print_blob=True, deadline=None)
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
hypothesis_settings.register_profile("cupy", max_examples=10, print_blob=True, deadline=None,
                                     phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target])
hypothesis_settings.register_profile("ci_cupy", hypothesis_settings.get_profile("cupy"), derandomize=True)


def _hypothesis_profile():
    if os.environ.get("HYPOTHESIS_PROFILE"):
        return os.environ["HYPOTHESIS_PROFILE"]
    on_cupy = _session_backend() == "cupy"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        return "ci_cupy" if on_cupy else "ci"
    return "cupy" if on_cupy else "dev"


hypothesis_settings.load_profile(_hypothesis_profile())


# ----------------------------------------------------------------------------- the session
def cupy_reason():
    """None when the CuPy backend can run here, else why not (one sentence)."""
    if not _cupy_reason:
        from autograd import backend
        _cupy_reason.append(backend.cupy_unavailable_reason())
    return _cupy_reason[0]


def pytest_sessionstart(session):
    try:
        import autograd  # noqa: F401  (reads TINYMETA_BACKEND, TINYMETA_KERNELS, ...)
    except Exception as e:
        if type(e).__name__ == "SettingsError":
            pytest.exit(str(e), returncode=pytest.ExitCode.USAGE_ERROR)
        if type(e).__name__ == "BackendUnavailable":
            pytest.exit(f"TINYMETA_BACKEND={_session_backend()!r}: {e}",
                        returncode=pytest.ExitCode.USAGE_ERROR)
        raise
    if not os.environ.get("TINYMETA_BLAS_THREADS", "").strip():
        autograd.settings.set(blas_threads=1)


def pytest_report_header(config):
    try:
        reason = cupy_reason()
        from autograd import settings
        now = settings.current()
    except Exception:                   # autograd itself failed to import: sessionstart says why
        return None
    return (f"tinymeta backend: {_session_backend()} (TINYMETA_BACKEND); cupy cases: "
            f"{'run' if reason is None else 'skipped: ' + reason}\n"
            f"tinymeta settings: {now}; hypothesis profile: {_hypothesis_profile()}")


@pytest.fixture(autouse=True)
def _restore_session_settings():
    """Every test starts on the session backend (numpy, or TINYMETA_BACKEND), recording."""
    from autograd import backend, settings
    wanted = _session_backend()
    if backend.name != wanted or not settings.recording.enabled:
        settings.set(backend=wanted, grad=True)
    yield


@pytest.fixture(params=_BACKENDS)
def backend(request):
    """The name of the active backend, once per backend; the cupy case is skipped (with the
    reason) where CuPy cannot run."""
    from autograd import settings
    if request.param == "cupy":
        reason = cupy_reason()
        if reason is not None:
            pytest.skip(f"CuPy backend: {reason}")
    with settings.using(backend=request.param):
        yield request.param


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
    from autograd import settings
    with settings.using(kernels="numpy"):
        yield
