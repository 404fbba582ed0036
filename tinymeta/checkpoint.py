"""Checkpoints: one ``.npz`` file holding named arrays plus a JSON document, written
atomically (a temporary file in the same folder, flushed to disk, then ``os.replace``), so a
run killed at any moment leaves either the previous checkpoint or the new one, never half
of one. No pickle: loading a checkpoint runs no code.

Arrays are stored as NumPy (copied off the GPU if needed), so a checkpoint written on a GPU
loads on a CPU-only machine and the other way round.
"""
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from autograd import backend

_META = "__meta__"


class CheckpointError(ValueError):
    pass


def save(path, arrays, meta):
    """Write ``arrays`` (name → array) and ``meta`` (JSON-serialisable) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: backend.to_numpy(v) for k, v in arrays.items()}
    if _META in payload:
        raise CheckpointError(f"checkpoint.save: the array name {_META!r} is reserved")
    payload[_META] = np.array(json.dumps(meta))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)                  # mkstemp makes 0600; a checkpoint is a normal file
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)                      # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path):
    """(arrays, meta) from a checkpoint written by ``save``; arrays stay NumPy."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: not a readable tinymeta checkpoint ({e})") from None
    if _META not in arrays:
        raise CheckpointError(f"checkpoint {path}: missing its {_META!r} record; not a tinymeta checkpoint")
    meta = json.loads(str(arrays.pop(_META)))
    return arrays, meta


def split(arrays, prefix):
    """The arrays whose names start with ``prefix/``, with the prefix removed."""
    start = prefix + "/"
    return {k[len(start):]: v for k, v in arrays.items() if k.startswith(start)}


def join(prefix, arrays):
    return {f"{prefix}/{k}": v for k, v in arrays.items()}
