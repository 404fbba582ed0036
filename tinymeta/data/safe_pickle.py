"""Reading the pickles that datasets ship in, without running code from them.

``pickle.load`` calls whatever function a file names, so a downloaded pickle can run any
command on your machine. mini-ImageNet's ``mini-imagenet-cache-*.pkl`` and the CIFAR-100
``cifar-100-python/{train,test,meta}`` files only hold dicts, lists, strings, numbers and
NumPy arrays. :func:`load_pickle` reads them with an unpickler whose ``find_class``
(the one place a pickle can name a function) accepts only what rebuilding a NumPy array
needs and refuses everything else, before anything from the file is called.
"""

from __future__ import annotations

import pickle
from typing import Any, BinaryIO

from tinymeta.data.paths import DataError

#: (module, name) pairs a pickle may refer to: how NumPy rebuilds arrays, dtypes and scalars,
#: under the NumPy 1 (numpy.core) and NumPy 2 (numpy._core) module names.
ALLOWED_GLOBALS = frozenset(
    [(core + suffix, name)
     for core in ("numpy.core", "numpy._core")
     for suffix, name in ((".multiarray", "_reconstruct"), (".multiarray", "scalar"), (".numeric", "_frombuffer"))]
    + [("numpy", "ndarray"), ("numpy", "dtype"),
       # Python 3 writes bytes as _codecs.encode(text, 'latin1') in pickle protocols <= 2.
       ("_codecs", "encode")]
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str):
        super().__init__(file, encoding="latin1")  # latin1: Python 2 pickles of NumPy arrays
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(
                f"{self.where} refers to {module}.{name}, which a data pickle has no reason to "
                "call; refused (only NumPy arrays, dicts, lists, strings and numbers are read)."
            )
        return super().find_class(module, name)


def load_pickle(file: BinaryIO, where: str) -> Any:
    """Unpickle from the binary ``file`` (named by ``where`` in errors), allowing only NumPy
    arrays, dicts, lists, strings and numbers.

    Raises:
        DataError: the pickle names any other function or class (nothing is called), or it
            is truncated or not a pickle at all.
    """
    try:
        return _NumpyOnlyUnpickler(file, where).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, OSError) as err:
        raise DataError(f"{where} is not a readable pickle ({type(err).__name__}: {err}).") from err
