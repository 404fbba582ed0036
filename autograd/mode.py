"""Whether operations are being recorded into the graph.

Recording is on by default. ``no_grad()`` turns it off (evaluation, optimizer updates), and
the engine itself turns it off while it runs a backward pass with ``create_graph=False``:
then the backward ops compute plain numbers. With ``create_graph=True`` it stays on, so the
backward pass is recorded like any other computation and can be differentiated again.

The flag is the ``grad`` setting of ``autograd.settings``, one per thread: ``no_grad()`` in
one thread leaves recording in every other thread as it was.
"""
import contextlib

from .settings import recording


def is_grad_enabled():
    """True when ops are recorded into the graph (in this thread)."""
    return recording.enabled


@contextlib.contextmanager
def set_grad_enabled(enabled):
    """Context manager: recording on or off inside the block (this thread), restored after."""
    previous = recording.enabled
    recording.enabled = bool(enabled)
    try:
        yield
    finally:
        recording.enabled = previous


def no_grad():
    """Context manager: operations inside are not recorded (no graph, no memory kept)."""
    return set_grad_enabled(False)


def enable_grad():
    """Context manager: operations inside are recorded, even inside ``no_grad()``."""
    return set_grad_enabled(True)
