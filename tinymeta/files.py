"""Files a run writes, and the folder it writes them in.

Every file is written *atomically*: into a temporary file beside it (``.NAME.XXXX.tmp``),
flushed to disk, then renamed over the target with ``os.replace``. A run killed at any
moment leaves the old file or the new one, never half of one; a killed write leaves only a
temporary file, which the next run in that folder removes.

``RunFolder`` is the output folder of one run. Opening it checks, before any work is done,
that it can be written; takes an exclusive lock (``fcntl.flock``, released by the operating
system when the process dies), so two runs cannot write into one folder; refuses a folder
that already holds a run unless it is being resumed; and removes stale temporary files.
"""
import csv
import fcntl
import io
import json
import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"


class RunFolderError(Exception):
    """The output folder cannot be used (not writable, in use, or holding another run)."""


def atomic_write(path, write, binary=True):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)                  # mkstemp makes 0600; these are normal files
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)                      # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path, text):
    return atomic_write(path, lambda f: f.write(text), binary=False)


def write_json(path, obj):
    return write_text(path, json.dumps(obj, indent=1, allow_nan=True) + "\n")


def write_csv(path, header, rows):
    def write(f):
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return atomic_write(path, write, binary=False)


def save_figure(fig, path, dpi=110):
    """A matplotlib figure as a PNG, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def stale_temporaries(folder):
    """Temporary files left by killed writes in ``folder`` and the folders inside it."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob(f".*{TMP_SUFFIX}") if p.is_file())


class RunFolder:
    """The output folder of one run (a context manager that holds its lock).

    ``marker`` is the file that shows a folder holds a run (its checkpoint): opening such a
    folder without ``resume=True`` is refused, so no run overwrites another's results.
    """

    def __init__(self, path, resume=False, marker="checkpoint.npz", say=print):
        self.path, self.resume, self.marker, self.say = Path(path), resume, marker, say
        self._lock = None

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self):
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunFolderError(f"output folder {p} is a file")
        if (p / self.marker).exists() and not self.resume:
            raise RunFolderError(f"{p} already holds a run ({self.marker}): pass --resume to "
                                 f"continue it, or choose another --out")
        try:
            p.mkdir(parents=True, exist_ok=True)
            write_text(p / ".write-test", "ok\n")          # fail now, not at the first checkpoint
            (p / ".write-test").unlink()
        except OSError as e:
            raise RunFolderError(f"cannot write to the output folder {p} ({e.strerror or e}): "
                                 f"choose another --out") from None
        fd = os.open(p / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 100).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderError(f"{p} is in use by {holder}: wait for that run to end, or "
                                 f"choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()}".encode())
        self._lock = fd
        stale = stale_temporaries(p)
        for f in stale:
            f.unlink()
        if stale:
            self.say(f"removed {len(stale)} temporary file(s) left by an interrupted write in {p}")
        return self

    def close(self):
        if self._lock is not None:
            os.close(self._lock)                            # releases the flock
            self._lock = None

    def __truediv__(self, name):
        return self.path / name
