"""Checkpoints: one ``.npz`` file holding named arrays plus a JSON document, written
atomically (``tinymeta.files.atomic_write``), so a run killed at any moment leaves either the
previous checkpoint or the new one, never half of one. No pickle: loading a checkpoint runs
no code.

Arrays are stored as NumPy (copied off the GPU if needed), so a checkpoint written on a GPU
loads on a CPU-only machine and the other way round.

``pack``/``unpack`` turn a learner's state (sections such as ``params``, ``optimizer``,
``model``, each a flat dict of arrays and numbers) into arrays named ``section/name`` plus a
JSON document of the numbers, and back.
"""
import json
from pathlib import Path

import numpy as np

from autograd import backend

from .files import atomic_write

_META = "__meta__"


class CheckpointError(ValueError):
    pass


def save(path, arrays, meta):
    """Write ``arrays`` (name → array) and ``meta`` (JSON-serialisable) to ``path`` atomically."""
    payload = {k: backend.to_numpy(v) for k, v in arrays.items()}
    if _META in payload:
        raise CheckpointError(f"checkpoint.save: the array name {_META!r} is reserved")
    payload[_META] = np.array(json.dumps(meta))
    return atomic_write(path, lambda f: np.savez(f, **payload))


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
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: its {_META!r} record is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: its {_META!r} record is not a JSON object")
    return arrays, meta


def require(meta, path, *keys):
    """``meta[k]`` for each key, or CheckpointError naming the first one missing."""
    missing = [k for k in keys if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {path}: its metadata lacks {missing[0]!r}; the file is "
                              f"damaged or was not written by this version of tinymeta")
    return [meta[k] for k in keys]


def pack(state):
    """{section: {name: array or number}} → (arrays named 'section/name', {section: {name: number}})."""
    arrays, numbers = {}, {}
    for section, entries in state.items():
        numbers[section] = {}
        for name, v in entries.items():
            if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
                arrays[f"{section}/{name}"] = np.array(backend.to_numpy(v))
            else:
                numbers[section][name] = v.item() if hasattr(v, "item") else v
    return arrays, numbers


def unpack(arrays, numbers):
    """The inverse of ``pack``."""
    state = {section: dict(entries) for section, entries in numbers.items()}
    for key, a in arrays.items():
        section, _, name = key.partition("/")
        if section in state:
            state[section][name] = a
    return state


def split(arrays, prefix):
    """The arrays whose names start with ``prefix/``, with the prefix removed."""
    start = prefix + "/"
    return {k[len(start):]: v for k, v in arrays.items() if k.startswith(start)}


def join(prefix, arrays):
    return {f"{prefix}/{k}": v for k, v in arrays.items()}
