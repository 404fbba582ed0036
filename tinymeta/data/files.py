"""Files: content hashes, data fingerprints, and atomic, reproducible ``.npz`` writes.

Every dataset module uses these three ideas:

* :func:`file_sha256` hashes a file's bytes (for cache keys and fingerprints);
* :func:`fingerprint` condenses the hashes of a dataset's source files into one short
  hex string, so a run can notice that its data changed between training and evaluation;
* :func:`write_npz_atomically` writes arrays through a temporary file in the same folder
  and ``os.replace``, so a reader sees either no file or a complete one. Unlike
  ``np.savez`` it stamps every member with the same fixed date, so the same arrays give
  the same bytes (and the same sha256) on every run with the same zlib.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import zipfile
from typing import Dict, Iterable, Tuple

import numpy as np

# The earliest date a zip entry can carry; fixed so the file bytes do not depend on the clock.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_FINGERPRINT_HEX_DIGITS = 16


def file_sha256(path: os.PathLike) -> str:
    """Return the sha256 hex digest of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(kind: str, named_digests: Iterable[Tuple[str, str]]) -> str:
    """Short sha256 over a data kind and the ``(name, sha256)`` of each source file.

    The names are sorted first, so the order in which files were hashed does not matter.
    """
    digest = hashlib.sha256(kind.encode())
    for name, file_digest in sorted(named_digests):
        digest.update(f"\0{name}\0{file_digest}".encode())
    return digest.hexdigest()[:_FINGERPRINT_HEX_DIGITS]


def arrays_sha256(arrays: Dict[str, np.ndarray]) -> str:
    """sha256 over the arrays' keys, dtypes, shapes and bytes: the same for equal arrays,
    whatever file (and compressor) they were stored in."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"\0{key}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_npz_atomically(path: os.PathLike, arrays: Dict[str, np.ndarray], compress: bool = True) -> None:
    """Write ``arrays`` as an ``.npz`` at ``path``: temporary file + ``os.replace``.

    The result is readable by ``np.load(path, allow_pickle=False)``; object arrays are
    refused. Raises ``OSError`` when the folder is not writable (callers that write a
    mere cache turn that into a warning).
    """
    path = pathlib.Path(path)
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", compression=compression) as archive:
            for key, value in arrays.items():
                member = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_EPOCH)
                member.compress_type = compression
                member.external_attr = 0o644 << 16
                with archive.open(member, "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp made it private; give it a normal file's mode
        os.replace(tmp_name, path)
        tmp_name = None
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.remove(tmp_name)
