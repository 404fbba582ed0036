"""Where data lives on disk: the (read-only) data folder and the (writable) cache folder.

Two environment variables steer this module:

``TINYMETA_DATA``
    The folder that *contains* the dataset folders, e.g. ``/x/shared/data`` when the
    Omniglot files are in ``/x/shared/data/omniglot/``. Scripts accept ``--data-dir``
    with the same meaning; an explicit argument always wins over the variable.

``TINYMETA_CACHE``
    Where preprocessed arrays are kept between runs. Defaults to ``~/.cache/tinymeta``.

The module also defines :class:`DataError`, the single error type raised when data
is missing, unreadable or has an unexpected layout. It subclasses ``ValueError`` so
callers that only care about "bad input" can catch that instead.
"""

from __future__ import annotations

import os
import pathlib
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

DATA_ENV_VAR = "TINYMETA_DATA"
CACHE_ENV_VAR = "TINYMETA_CACHE"
DEFAULT_CACHE_DIR = pathlib.Path("~/.cache/tinymeta")


class DataError(ValueError):
    """A data file or folder is missing, unreadable, or not laid out as expected.

    The message always names the file (or folder) at fault and what was expected.
    """


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> pathlib.Path:
    """Return the data folder: ``data_dir`` if given, else ``$TINYMETA_DATA``.

    The returned folder is the one that *contains* dataset folders such as
    ``omniglot/``. It must exist.

    Raises:
        DataError: if neither the argument nor the environment variable is set,
            or if the folder they name does not exist.
    """
    if data_dir is not None and str(data_dir) != "":
        origin = "the data_dir argument (--data-dir)"
        chosen = data_dir
    elif os.environ.get(DATA_ENV_VAR):
        origin = f"the {DATA_ENV_VAR} environment variable"
        chosen = os.environ[DATA_ENV_VAR]
    else:
        raise DataError(
            "No data folder given: pass --data-dir (data_dir=...) or set the "
            f"{DATA_ENV_VAR} environment variable to the folder that contains "
            "omniglot/ (for example TINYMETA_DATA=../shared/data)."
        )
    path = pathlib.Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise DataError(
            f"Data folder {path} (from {origin}) does not exist or is not a folder; "
            "it should be the folder that contains omniglot/."
        )
    return path


def cache_dir() -> pathlib.Path:
    """Return the cache folder (``$TINYMETA_CACHE`` or ``~/.cache/tinymeta``), creating it if needed."""
    chosen = os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR
    path = pathlib.Path(chosen).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"Cannot create the cache folder {path} ({err}); set {CACHE_ENV_VAR} "
            "to a writable folder."
        ) from err
    return path
