"""The settings home, ``autograd.settings``: set/using and their restoring, current() as
checkpoint metadata, the errors (from set/using and from the environment at import), the
BLAS limit as threadpoolctl sees it, the Numba-threads rule, and the per-thread grad flag.

Tolerances: none; every check is an exact comparison of values, types or message text.
"""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

import autograd as ag
from autograd import kernels, settings
from autograd.settings import SettingsError

REPO = Path(__file__).resolve().parents[1]
KEYS = {"grad", "backend", "kernels", "numba_threads", "blas_threads", "workers"}


def blas_threads_seen():
    """The thread counts of every BLAS pool threadpoolctl finds in this process."""
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter, with no TINYMETA_ or BLAS variables but ``env``."""
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("TINYMETA_") and k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                            "MKL_NUM_THREADS")}
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=300)


# ----------------------------------------------------------------------------- set, using, current
def test_current_has_every_setting_and_is_json_serialisable():
    now = settings.current()
    assert set(now) == KEYS
    assert json.loads(json.dumps(now)) == now
    assert isinstance(now["grad"], bool) and isinstance(now["numba_threads"], int)
    assert now["backend"] in ("numpy", "cupy") and now["kernels"] in ("numpy", "numba")
    assert now["blas_threads"] is None or isinstance(now["blas_threads"], int)
    assert isinstance(now["workers"], int) and now["workers"] >= 1


def test_set_returns_the_previous_values_and_they_restore_everything():
    before = settings.current()
    previous = settings.set(kernels="numpy", grad=False, numba_threads=1)
    try:
        assert set(previous) == {"kernels", "grad", "numba_threads"}
        assert previous["kernels"] == before["kernels"] and previous["grad"] is True
        now = settings.current()
        assert (now["kernels"], now["grad"], now["numba_threads"]) == ("numpy", False, 1)
        assert not ag.is_grad_enabled() and kernels.kernels_name() == "numpy"
    finally:
        settings.set(**previous)
    assert settings.current() == before


def test_using_restores_on_exit_and_when_an_exception_leaves_the_block():
    before = settings.current()
    with settings.using(kernels="numpy", grad=False):
        assert settings.current()["kernels"] == "numpy" and not ag.is_grad_enabled()
    assert settings.current() == before
    with pytest.raises(RuntimeError, match="boom"):
        with settings.using(kernels="numpy", grad=False, numba_threads=1):
            raise RuntimeError("boom")
    assert settings.current() == before


def test_no_grad_is_the_grad_setting():
    with ag.no_grad():
        assert settings.current()["grad"] is False
        with settings.using(grad=True):
            assert ag.is_grad_enabled()
    with settings.using(grad=False):
        x = ag.Tensor([1.0, 2.0], requires_grad=True)
        assert (x * x).creator is None                  # nothing recorded
    assert ag.is_grad_enabled()


@pytest.mark.parametrize("key,value,choices", [
    ("kernels", "bogus", "numpy or numba"),
    ("backend", "tpu", "numpy or cupy"),
    ("backend", None, "numpy or cupy"),
    ("grad", 1, "True or False"),
    ("numba_threads", 0, "a positive integer or None"),
    ("numba_threads", 2.0, "a positive integer or None"),
    ("blas_threads", -1, "a positive integer or None"),
    ("blas_threads", True, "a positive integer or None"),
    ("workers", 0, "a positive integer or None"),
    ("workers", "2", "a positive integer or None"),
])
def test_a_bad_value_is_one_sentence_naming_the_key_and_the_choices(key, value, choices):
    before = settings.current()
    with pytest.raises(SettingsError) as info:
        good = {"kernels": "numpy"} if key != "kernels" else {"grad": False}
        settings.set(**good, **{key: value})            # the good value beside it is not applied either
    message = str(info.value)
    assert message.startswith(f"{key}={value!r} is not ") and f": choose {choices}" in message
    assert message.endswith(".") and "\n" not in message
    assert isinstance(info.value, ValueError)
    assert settings.current() == before
    with pytest.raises(SettingsError, match=f"^{key}="):
        with settings.using(**{key: value}):
            pass                                        # pragma: no cover


def test_an_unknown_key_lists_the_settings():
    with pytest.raises(SettingsError, match=r"^'threads' is not a setting: choose backend, kernels, "
                                            r"grad, blas_threads, numba_threads or workers\.$"):
        settings.set(threads=2)


# ----------------------------------------------------------------------------- the environment
@pytest.mark.parametrize("variable,value,message", [
    ("TINYMETA_KERNELS", "bogus", "TINYMETA_KERNELS='bogus' is not a kernel set: choose numpy or numba."),
    ("TINYMETA_BACKEND", "tpu", "TINYMETA_BACKEND='tpu' is not a backend: choose numpy or cupy."),
    ("TINYMETA_NUMBA_THREADS", "0", "TINYMETA_NUMBA_THREADS='0' is not a thread count: choose a "
                                    "positive integer."),
    ("TINYMETA_BLAS_THREADS", "two", "TINYMETA_BLAS_THREADS='two' is not a thread count: choose a "
                                     "positive integer."),
    ("TINYMETA_WORKERS", "-1", "TINYMETA_WORKERS='-1' is not a thread count: choose a positive integer."),
])
def test_a_bad_environment_value_stops_the_import_with_one_sentence(variable, value, message):
    r = run_python("import autograd", **{variable: value})
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == "autograd.settings.SettingsError: " + message
    assert "During handling" not in r.stderr and "direct cause" not in r.stderr   # not wrapped
    # what a script sees: the class by name and the sentence alone
    caught = run_python("try:\n    import autograd\nexcept Exception as e:\n"
                        "    print(type(e).__name__, e.__cause__, e.__context__)\n    print(e)",
                        **{variable: value})
    assert caught.stdout.splitlines() == ["SettingsError None None", message], caught.stderr


def test_the_environment_is_read_at_import():
    code = "import json, autograd; print(json.dumps(autograd.settings.current()))"
    r = run_python(code, TINYMETA_KERNELS="numpy", TINYMETA_NUMBA_THREADS="1",
                   TINYMETA_BLAS_THREADS="1", TINYMETA_WORKERS="3")
    assert r.returncode == 0, r.stderr
    now = json.loads(r.stdout)
    assert (now["kernels"], now["numba_threads"], now["blas_threads"], now["grad"], now["workers"]) == \
        ("numpy", 1, 1, True, 3)
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["blas_threads"] is None      # untouched unless asked


# ----------------------------------------------------------------------------- threads
def test_blas_threads_limit_what_threadpoolctl_sees():
    assert blas_threads_seen(), "threadpoolctl finds no BLAS in this process"
    with settings.using(blas_threads=1):
        assert set(blas_threads_seen()) == {1}
        if kernels.numba_pool_size() >= 2:
            with settings.using(blas_threads=2):
                assert set(blas_threads_seen()) == {2}
            assert set(blas_threads_seen()) == {1}


def test_blas_threads_work_after_numpy_and_none_restores_the_original():
    code = ("import numpy, json\nfrom threadpoolctl import threadpool_info\n"
            "seen = lambda: sorted(p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas')\n"
            "import autograd\nfirst = seen()\n"
            "autograd.settings.set(blas_threads=1); limited = seen()\n"
            "autograd.settings.set(blas_threads=None); restored = seen()\n"
            "print(json.dumps([first, limited, restored]))")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    first, limited, restored = json.loads(r.stdout)
    assert set(limited) == {1} and restored == first


def test_numba_threads_follow_the_blas_unless_set():
    pool = kernels.numba_pool_size()
    with settings.using(numba_threads=None, blas_threads=1):
        assert settings.current()["numba_threads"] == pool           # BLAS on one thread: every core
        if pool >= 2:
            with settings.using(blas_threads=2):
                assert settings.current()["numba_threads"] == 1      # two pools would fight
            assert settings.current()["numba_threads"] == pool
        with settings.using(numba_threads=1):
            assert settings.current()["numba_threads"] == 1          # a number wins over the rule
            settings.set(blas_threads=1)
            assert settings.current()["numba_threads"] == 1
    if "numba" in sys.modules and kernels._numba_impl is not None:
        import numba
        assert numba.get_num_threads() == settings.current()["numba_threads"]


def test_workers_follow_the_blas_unless_set():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with settings.using(workers=None, blas_threads=1):
        assert settings.current()["workers"] == cores                # BLAS on one thread: every core
        with settings.using(blas_threads=2):
            assert settings.current()["workers"] == 1                # the BLAS threads are the parallelism
        with settings.using(workers=3):
            assert settings.current()["workers"] == 3                # a number wins over the rule
            settings.set(blas_threads=2)
            assert settings.current()["workers"] == 3
    from autograd import parallel
    assert parallel.workers() == settings.current()["workers"]


# ----------------------------------------------------------------------------- grad per thread
def test_the_grad_flag_is_per_thread():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def worker():
        seen["fresh"] = ag.is_grad_enabled()                          # a new thread records
        with ag.no_grad():
            seen["worker"] = ag.is_grad_enabled()
            inside.set()
            done.wait(30)

    t = threading.Thread(target=worker)
    t.start()
    assert inside.wait(30)
    try:
        assert ag.is_grad_enabled() and settings.current()["grad"] is True   # main thread untouched
        x = ag.Tensor([1.0, 2.0], requires_grad=True)
        assert (x * x).creator is not None
    finally:
        done.set()
        t.join(30)
    assert seen == {"fresh": True, "worker": False}
