"""The engine's process-wide settings, in one place, and the only place that reads the
environment.

=============  ==================================  ========================  ==============
setting        values                              environment variable      default
=============  ==================================  ========================  ==============
grad           True / False (per thread)           --                        True
backend        "numpy" / "cupy"                    TINYMETA_BACKEND          "numpy"
kernels        "numpy" / "numba"                   TINYMETA_KERNELS          "numba"
numba_threads  int >= 1, or None: the rule below   TINYMETA_NUMBA_THREADS    None
blas_threads   int >= 1, or None: left untouched   TINYMETA_BLAS_THREADS     None
workers        int >= 1, or None: the rule below   TINYMETA_WORKERS          None
=============  ==================================  ========================  ==============

``current()`` reads them all (a JSON-serialisable dict: checkpoints store it),
``set(**kw)`` changes some for the whole process and returns their previous values, and
``with using(**kw):`` changes them for one block, restoring them on the way out, also when
an exception leaves it. The environment is read once, when ``autograd`` is imported; a bad
value there, or an unknown key or a bad value given to ``set``/``using``, is a
``SettingsError`` that says which key and which values are valid.

This module decides; the mechanisms stay where the work is done: ``backend.set_backend``,
``kernels.set_kernels`` and ``kernels.set_numba_threads``, threadpoolctl for the BLAS,
``parallel.set_workers``.

* ``grad`` is whether ops are recorded into the graph (``no_grad()`` and friends in
  ``mode.py`` switch it). It is one flag per thread, so two threads can each run their own
  part of a meta-batch; a new thread starts with True.
* ``kernels="numba"`` falls back to "numpy" (with a one-line notice) where Numba cannot be
  imported; ``current()`` then says "numpy".
* ``blas_threads`` limits the BLAS thread pool through threadpoolctl, which works after
  NumPy is loaded (``OPENBLAS_NUM_THREADS`` only works before). None leaves the BLAS as it
  was found (``set(blas_threads=None)`` puts back what it was before the first limit).
* ``numba_threads=None`` is the rule below; ``current()`` gives the number in effect.
  Numba's count applies to the thread that sets it (Numba keeps one per thread).

* ``workers`` is how many threads ``autograd.parallel.map_workers`` shares independent work
  among (``tinymeta`` gives them the parts of a meta-batch). ``None`` is the rule: every
  core this process may run on when the BLAS runs on one thread, else one; ``current()``
  gives the number in effect. Workers run only on the NumPy backend (on the GPU one stream
  does the work), and in a worker the Numba kernels run on one thread.

The rule for Numba's threads. NumPy's BLAS keeps its own threads spinning for a while after
every matrix product, and Numba's threads do the same after every parallel kernel. When
both pools span the cores they steal each other's time: on the 2-core CI machine a
second-order MAML step on the Omniglot network took 1.9 s with one Numba thread and 18-21 s
with two, BLAS threaded. So Numba gets every core only when the BLAS runs on one thread
(``blas_threads=1``, or, left untouched, a BLAS that threadpoolctl finds single-threaded),
and one thread otherwise. The rule is applied again whenever ``blas_threads`` changes,
unless ``numba_threads`` was set to a number. ``experiments/bench.py`` measures 1 against 2.
"""
import contextlib
import operator
import os
import threading
from typing import Callable, NamedTuple, Optional

from . import backend, kernels, parallel


class SettingsError(ValueError):
    """An unknown setting, or a value it cannot take (given to set/using or in the environment)."""


class _Recording(threading.local):
    """Whether ops are recorded into the graph: one flag per thread, True in a new thread."""
    enabled = True


recording = _Recording()        # every op reads ``recording.enabled`` (see function.py)

_chosen = {"numba_threads": None, "blas_threads": None, "workers": None}   # what set() was asked for
_blas_first_limit = None        # threadpoolctl's first limiter: it remembers the original limits


# ----------------------------------------------------------------------------- the switches
def _name(*names):
    """Valid values: one of ``names``."""
    return lambda value: value if isinstance(value, str) and value in names else None


def _flag(value):
    return value if isinstance(value, bool) else None


def _count(value):
    """A thread count: an integer >= 1 (None has its own meaning for each count)."""
    if isinstance(value, bool):
        return None
    try:
        n = operator.index(value)
    except TypeError:
        return None
    return n if n >= 1 else None


def _count_text(text):
    return _count(int(text)) if text.isdigit() else None


def _apply_grad(on):
    recording.enabled = on


def _apply_numba_threads(n):
    _chosen["numba_threads"] = n
    _update_numba_threads()


def _apply_workers(n):
    _chosen["workers"] = n
    _update_workers()


def _apply_blas_threads(n):
    global _blas_first_limit
    from threadpoolctl import threadpool_limits
    if n is not None:
        limiter = threadpool_limits(limits=n, user_api="blas")
        _blas_first_limit = _blas_first_limit or limiter
    elif _blas_first_limit is not None:
        _blas_first_limit.restore_original_limits()
    _chosen["blas_threads"] = n
    _update_numba_threads()
    _update_workers()


class _Switch(NamedTuple):
    env: Optional[str]          # the environment variable read at import, or None
    noun: str                   # for messages: "'bogus' is not <noun>"
    choices: str                # for messages: "choose <choices>"
    none: Optional[str]         # what None means, or None where None is not a value
    check: Callable             # value -> the value, or None when it is not valid
    apply: Callable             # value -> None: make it so
    read: Callable              # () -> the value set() returns, to restore the present state


# One line per switch, applied in this order (backend first: it is the one that can fail).
_SWITCHES = {
    "backend": _Switch("TINYMETA_BACKEND", "a backend", "numpy or cupy", None,
                       _name("numpy", "cupy"), backend.set_backend, lambda: backend.name),
    "kernels": _Switch("TINYMETA_KERNELS", "a kernel set", "numpy or numba", None,
                       _name("numpy", "numba"), kernels.set_kernels, kernels.kernels_name),
    "grad": _Switch(None, "a flag", "True or False", None,
                    _flag, _apply_grad, lambda: recording.enabled),
    "blas_threads": _Switch("TINYMETA_BLAS_THREADS", "a thread count", "a positive integer",
                            "leave the BLAS untouched", _count, _apply_blas_threads,
                            lambda: _chosen["blas_threads"]),
    "numba_threads": _Switch("TINYMETA_NUMBA_THREADS", "a thread count", "a positive integer",
                             "the rule in autograd/settings.py", _count, _apply_numba_threads,
                             lambda: _chosen["numba_threads"]),
    "workers": _Switch("TINYMETA_WORKERS", "a thread count", "a positive integer",
                       "the rule in autograd/settings.py", _count, _apply_workers,
                       lambda: _chosen["workers"]),
}


# ----------------------------------------------------------------------------- the front door
def current():
    """Every setting as it is now (numba_threads: the number in effect), JSON-serialisable."""
    return {"grad": recording.enabled, "backend": backend.name, "kernels": kernels.kernels_name(),
            "numba_threads": kernels.numba_threads(), "blas_threads": _chosen["blas_threads"],
            "workers": parallel.workers()}


def _checked(key, value):
    switch = _SWITCHES.get(key)
    if switch is None:
        raise SettingsError(f"{key!r} is not a setting: choose {_listing(list(_SWITCHES))}.")
    if value is None and switch.none is not None:
        return None
    checked = switch.check(value)
    if checked is None:
        none = f" or None ({switch.none})" if switch.none else ""
        raise SettingsError(f"{key}={value!r} is not {switch.noun}: choose {switch.choices}{none}.")
    return checked


def set(**kw):
    """Change the given settings for the whole process (``grad``: for this thread); returns
    their previous values, so that ``set(**previous)`` puts them back. Every value is checked
    before anything changes."""
    wanted = {key: _checked(key, value) for key, value in kw.items()}
    previous = {}
    for key, switch in _SWITCHES.items():
        if key in wanted:
            previous[key] = switch.read()
            switch.apply(wanted[key])
    return previous


@contextlib.contextmanager
def using(**kw):
    """``with using(kernels="numpy"):`` -- the settings inside the block, restored after it."""
    previous = set(**kw)
    try:
        yield
    finally:
        set(**previous)


# ----------------------------------------------------------------------------- helpers
def _listing(names):
    return ", ".join(names[:-1]) + " or " + names[-1]


def _blas_single_threaded():
    if _chosen["blas_threads"] is not None:
        return _chosen["blas_threads"] == 1
    from threadpoolctl import threadpool_info
    return all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")


def _update_numba_threads():
    """Numba's threads: the number asked for, else the rule of the module docstring."""
    n = _chosen["numba_threads"]
    if n is None:
        n = kernels.numba_pool_size() if _blas_single_threaded() else 1
    kernels.set_numba_threads(n)


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _update_workers():
    """The worker threads: the number asked for, else the rule of the module docstring."""
    n = _chosen["workers"]
    if n is None:
        n = _cores() if _blas_single_threaded() else 1
    parallel.set_workers(n)


def _from_environment():
    """The settings the environment asks for; a bad value is a SettingsError naming it."""
    wanted = {}
    for key, switch in _SWITCHES.items():
        text = os.environ.get(switch.env, "") if switch.env else ""
        if not text.strip():
            continue
        value = _count_text(text.strip()) if switch.check is _count else switch.check(text.strip())
        if value is None:
            raise SettingsError(f"{switch.env}={text!r} is not {switch.noun}: choose {switch.choices}.")
        wanted[key] = value
    return wanted


set(**{"kernels": "numba", **_from_environment()})      # the environment, read once
_update_numba_threads()
_update_workers()
