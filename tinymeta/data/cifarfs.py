"""CIFAR-FS (Bertinetto et al., 2019): the 100 classes of CIFAR-100 split 64 / 16 / 20.

Each class has CIFAR-100's 500 training and 100 test images (600 in all, in that order),
32x32 colour. Put in ``<data dir>/cifarfs/``:

``cifar-100-python.tar.gz``
    The CIFAR-100 python archive from https://www.cs.toronto.edu/~kriz/cifar.html, as
    downloaded (or already unpacked as ``cifar-100-python/``). Its ``train`` and ``test``
    pickles hold ``data`` uint8 ``[N, 3072]`` (the red, green and blue 32x32 planes) and
    ``fine_labels``; ``meta`` holds ``fine_label_names``. They are read straight from the
    archive with :func:`tinymeta.data.safe_pickle.load_pickle`, which runs no code.
``train.txt``, ``val.txt``, ``test.txt``
    Bertinetto et al.'s split: one CIFAR-100 fine class name per line (``aquarium_fish``,
    ``maple_tree``, ...). They are not part of CIFAR-100: they come with the CIFAR-FS
    download linked from github.com/bertinetto/r2d2, where they sit in
    ``cifarfs/splits/bertinetto/``. Looked for in ``cifarfs/splits/bertinetto/``,
    ``cifarfs/splits/`` and ``cifarfs/``, in that order, unless ``split_dir`` is given.

Classes keep the order of their split file; images are float32 ``[3, size, size]`` in
``[0, 1]``, area-resized (unchanged at the default ``size=32``).
"""

from __future__ import annotations

import difflib
import pathlib
import tarfile
import warnings
import zlib
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from tinymeta.data.classes import ImageClasses
from tinymeta.data.files import file_sha256, fingerprint
from tinymeta.data.images import check_size, resize_area
from tinymeta.data.paths import DataError, PathLike, resolve_data_dir
from tinymeta.data.safe_pickle import load_pickle

SPLITS = ("train", "val", "test")
ARCHIVE = "cifar-100-python.tar.gz"
UNPACKED = "cifar-100-python"
MEMBERS = ("train", "test", "meta")
SPLIT_FILES = {split: f"{split}.txt" for split in SPLITS}
SPLIT_DIRS = ("splits/bertinetto", "splits", ".")
STANDARD_CLASSES = {"train": 64, "val": 16, "test": 20}
RAW_SIZE = 32
DOWNLOAD = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


def cifarfs_dir(data_dir: Optional[PathLike] = None) -> pathlib.Path:
    """Return ``<data dir>/cifarfs``, checking that it exists."""
    folder = resolve_data_dir(data_dir) / "cifarfs"
    if not folder.is_dir():
        raise DataError(f"No cifarfs/ folder in the data folder {folder.parent}; expected one holding {ARCHIVE} "
                        f"and the split files {', '.join(SPLIT_FILES.values())}.")
    return folder


def load_cifarfs(data_dir: Optional[PathLike] = None, size: int = RAW_SIZE,
                 split_dir: Optional[PathLike] = None) -> Tuple[Dict[str, ImageClasses], str, List[str]]:
    """Load the three CIFAR-FS splits.

    Returns:
        ``(splits, fingerprint, source files)``: ``splits[name]`` is an :class:`ImageClasses`
        for ``'train'``, ``'val'`` and ``'test'``, 600 images per class.
    """
    check_size(size)
    folder = cifarfs_dir(data_dir)
    tables, sources = _read_cifar100(folder)
    split_paths = _split_files(folder, split_dir)
    class_names = _names(tables["meta"].get("fine_label_names"), sources[0], "meta: fine_label_names")

    pixels, labels = [], []
    for part in ("train", "test"):
        data, fine = _images_and_labels(tables[part], f"{sources[0]}: {part}", len(class_names))
        pixels.append(data)
        labels.append(fine)
    pixels, labels = np.concatenate(pixels), np.concatenate(labels)  # train images first, then test

    splits, owner = {}, {}
    for split, path in split_paths.items():
        names = _read_split_file(path, class_names)
        for name in names:
            if name in owner:
                raise DataError(f"{path}: class {name!r} is also in {owner[name]}; the splits must not share classes.")
            owner[name] = path.name
        splits[split] = _gather(names, class_names, pixels, labels, size)
        if len(names) != STANDARD_CLASSES[split]:
            warnings.warn(f"{path} lists {len(names)} classes; Bertinetto et al.'s {split} split "
                          f"has {STANDARD_CLASSES[split]}.")

    files = [pathlib.Path(s) for s in sources] + list(split_paths.values())
    digest = fingerprint("cifarfs", [(f"{p.parent.name}/{p.name}", file_sha256(p)) for p in files])
    return splits, digest, [str(p) for p in files]


def _read_cifar100(folder: pathlib.Path) -> Tuple[Dict[str, Any], List[str]]:
    """The three pickles, from the archive or the unpacked folder; and the files read."""
    archive = folder / ARCHIVE
    if archive.is_file():
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tables = {}
                for member in MEMBERS:
                    name = f"{UNPACKED}/{member}"
                    try:
                        handle = tar.extractfile(name)
                    except KeyError:
                        handle = None
                    if handle is None:
                        raise DataError(f"{archive} has no file {name}; is it the CIFAR-100 python "
                                        f"archive ({DOWNLOAD})?")
                    tables[member] = _as_dict(load_pickle(handle, f"{archive}: {name}"), f"{archive}: {name}")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise DataError(f"{archive} is not a readable .tar.gz ({err}); download it again from {DOWNLOAD}.") from err
        return tables, [str(archive)]
    unpacked = folder / UNPACKED
    if unpacked.is_dir():
        tables = {}
        for member in MEMBERS:
            path = unpacked / member
            if not path.is_file():
                raise DataError(f"CIFAR-100 file not found: {path} (expected {', '.join(MEMBERS)} in {unpacked}).")
            with open(path, "rb") as f:
                tables[member] = _as_dict(load_pickle(f, str(path)), str(path))
        return tables, [str(unpacked / member) for member in MEMBERS]
    raise DataError(f"Neither {archive} nor {unpacked}/ exists; download {DOWNLOAD} into {folder}.")


def _as_dict(table: Any, where: str) -> Dict[str, Any]:
    """CIFAR pickles are dicts; Python 2 wrote their keys as byte strings."""
    if not isinstance(table, dict):
        raise DataError(f"{where} holds a {type(table).__name__}; expected a dict as in the CIFAR-100 python archive.")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in table.items()}


def _names(names: Any, where: str, what: str) -> List[str]:
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{where}: {what} is missing or empty; expected CIFAR-100's 100 class names.")
    return [name.decode("latin1") if isinstance(name, bytes) else str(name) for name in names]


def _images_and_labels(table: Dict[str, Any], where: str, n_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 ``[N, 3, 32, 32]`` and int64 fine labels ``[N]``."""
    data, fine = table.get("data"), table.get("fine_labels")
    row = 3 * RAW_SIZE * RAW_SIZE  # red, green and blue planes, one after another
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        raise DataError(f"{where}: 'data' is {type(data).__name__} {getattr(data, 'dtype', '')} "
                        f"{getattr(data, 'shape', '')}; expected uint8 [N, {row}].")
    fine = np.asarray(fine) if fine is not None else np.zeros(0)
    well_formed = len(data) > 0 and fine.shape == (len(data),) and fine.dtype.kind in "iu"
    if not well_formed or fine.min() < 0 or fine.max() >= n_classes:
        raise DataError(f"{where}: 'fine_labels' must hold {len(data)} class numbers in [0, {n_classes}).")
    return data.reshape(len(data), 3, RAW_SIZE, RAW_SIZE), fine.astype(np.int64)


def _split_files(folder: pathlib.Path, split_dir: Optional[PathLike]) -> Dict[str, pathlib.Path]:
    candidates = [pathlib.Path(split_dir).expanduser()] if split_dir is not None else [folder / d for d in SPLIT_DIRS]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in SPLIT_FILES.values()):
            return {split: candidate / name for split, name in SPLIT_FILES.items()}
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(f"CIFAR-FS split files {', '.join(SPLIT_FILES.values())} not found in {looked}; they come with "
                    "the CIFAR-FS download of github.com/bertinetto/r2d2 (see docs/data.md).")


def _read_split_file(path: pathlib.Path, class_names: List[str]) -> List[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"Cannot read the split file {path} ({err}).") from err
    names = []
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            continue
        if name not in class_names:
            close = difflib.get_close_matches(name, class_names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"{path} line {number}: {name!r} is not a CIFAR-100 fine class name{hint}.")
        if name in names:
            raise DataError(f"{path} line {number}: {name!r} is listed twice.")
        names.append(name)
    if not names:
        raise DataError(f"{path} lists no classes; expected one CIFAR-100 fine class name per line.")
    return names


def _gather(names: List[str], class_names: List[str], pixels: np.ndarray, labels: np.ndarray,
            size: int) -> ImageClasses:
    """The images of the classes ``names``, class after class, resized."""
    rows = [np.flatnonzero(labels == class_names.index(name)) for name in names]
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    if not counts.all():
        missing = names[int(np.argmin(counts))]
        raise DataError(f"CIFAR-100 has no images of class {missing!r}; the archive looks incomplete.")
    images = resize_area(np.ascontiguousarray(pixels[np.concatenate(rows)]), size)
    return ImageClasses(tuple(names), counts, images)
