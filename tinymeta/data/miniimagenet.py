"""mini-ImageNet (Vinyals et al., 2016) with Ravi & Larochelle's (2017) class split.

100 ImageNet classes of 600 colour images each, 84x84: 64 classes for meta-training, 16
for validation, 20 for meta-testing. Two layouts are in common use; put either in
``<data dir>/miniimagenet/``:

*pickle*: ``mini-imagenet-cache-{train,val,test}.pkl``
    Each a pickled dict: ``image_data`` uint8 ``[N, 84, 84, 3]`` and ``class_dict``
    ``{class name: [indices into image_data]}``. Read with
    :func:`tinymeta.data.safe_pickle.load_pickle`, which refuses anything but arrays,
    dicts, lists, strings and numbers, so a tampered file cannot run code.
*csv*: ``images/`` and ``{train,val,test}.csv``
    Ravi & Larochelle's split files, header ``filename,label``, one image of ``images/``
    per line. The images are decoded and cached as in :mod:`tinymeta.data.folder`.

Both give, per split, the classes sorted by name, each class's images in file order
(its ``class_dict`` list, or its CSV lines), as float32 ``[3, size, size]`` in ``[0, 1]``,
resized from 84 (or whatever the files hold) by area averaging; at ``size=84`` the
84x84 pixels are kept as they are.
"""

from __future__ import annotations

import csv
import pathlib
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np

from tinymeta.data.classes import ImageClasses
from tinymeta.data.files import file_sha256, fingerprint
from tinymeta.data.folder import load_image_files
from tinymeta.data.images import check_size, resize_area
from tinymeta.data.paths import DataError, PathLike, resolve_data_dir
from tinymeta.data.safe_pickle import load_pickle

SPLITS = ("train", "val", "test")
PICKLE_FILES = {split: f"mini-imagenet-cache-{split}.pkl" for split in SPLITS}
CSV_FILES = {split: f"{split}.csv" for split in SPLITS}
IMAGES_FOLDER = "images"
#: Ravi & Larochelle's split (other counts load with a warning).
STANDARD_CLASSES = {"train": 64, "val": 16, "test": 20}
RAW_SIZE = 84
_PICKLE_CONTENT = "a dict with image_data uint8 [N, H, W, 3] and class_dict {class name: [indices]}"
_LAYOUTS = (
    f"pickle: {', '.join(PICKLE_FILES.values())}; or csv: {IMAGES_FOLDER}/ with {', '.join(CSV_FILES.values())}"
)


def miniimagenet_dir(data_dir: Optional[PathLike] = None) -> pathlib.Path:
    """Return ``<data dir>/miniimagenet``, checking that it exists."""
    folder = resolve_data_dir(data_dir) / "miniimagenet"
    if not folder.is_dir():
        raise DataError(f"No miniimagenet/ folder in the data folder {folder.parent}; "
                        f"expected one holding ({_LAYOUTS}).")
    return folder


def detect_layout(folder: pathlib.Path) -> str:
    """``'pickle'`` if the three .pkl files are there, else ``'csv'`` if images/ and the CSVs are."""
    if all((folder / name).is_file() for name in PICKLE_FILES.values()):
        return "pickle"
    if (folder / IMAGES_FOLDER).is_dir() and all((folder / name).is_file() for name in CSV_FILES.values()):
        return "csv"
    present = sorted(p.name for p in folder.iterdir())[:8]
    raise DataError(f"{folder} holds neither mini-ImageNet layout ({_LAYOUTS}); it has {present}.")


def load_miniimagenet(data_dir: Optional[PathLike] = None, size: int = RAW_SIZE, layout: Optional[str] = None,
                      cache: bool = True) -> Tuple[Dict[str, ImageClasses], str, List[str]]:
    """Load the three splits.

    Args:
        data_dir: folder containing ``miniimagenet/``; default ``$TINYMETA_DATA``.
        size: side of the square images (default 84).
        layout: ``'pickle'``, ``'csv'`` or None (the pickles if present, else the CSVs).
        cache: cache the decoded images of the csv layout (the pickles need none).

    Returns:
        ``(splits, fingerprint, source files)``: ``splits[name]`` is an :class:`ImageClasses`
        for ``'train'``, ``'val'`` and ``'test'``.
    """
    check_size(size)
    folder = miniimagenet_dir(data_dir)
    if layout is None:
        layout = detect_layout(folder)
    if layout == "pickle":
        paths = [folder / PICKLE_FILES[split] for split in SPLITS]
        for path in paths:
            if not path.is_file():
                raise DataError(f"mini-ImageNet file not found: {path} "
                                f"(the pickle layout needs {', '.join(PICKLE_FILES.values())}).")
        splits = {split: _read_pickle_split(path, size) for split, path in zip(SPLITS, paths)}
        digest = fingerprint("miniimagenet", [(path.name, file_sha256(path)) for path in paths])
        sources = [str(path) for path in paths]
    elif layout == "csv":
        splits, digest, sources = _load_csv_layout(folder, size, cache)
    else:
        raise ValueError(f"layout must be 'pickle', 'csv' or None, got {layout!r}")
    _check_split(splits, folder)
    return splits, digest, sources


# ----------------------------------------------------------------------------- pickles


def _read_pickle_split(path: pathlib.Path, size: int) -> ImageClasses:
    """One ``mini-imagenet-cache-<split>.pkl``: classes sorted by name, images in ``class_dict`` order."""
    data = _load_checked_pickle(path)
    pixels, class_dict = data["image_data"], data["class_dict"]
    names = sorted(class_dict)
    indices = []
    for name in names:
        index = np.asarray(class_dict[name])
        if index.ndim != 1 or index.size == 0 or index.dtype.kind not in "iu":
            raise DataError(f"{path}: class_dict[{name!r}] is not a non-empty list of image indices; "
                            f"expected {_PICKLE_CONTENT}.")
        if index.min() < 0 or index.max() >= len(pixels):
            raise DataError(f"{path}: class_dict[{name!r}] has index {int(index.max())} outside "
                            f"image_data's {len(pixels)} images.")
        indices.append(index)
    used = np.bincount(np.concatenate(indices), minlength=len(pixels))
    if (used > 1).any():
        raise DataError(f"{path}: image {int(np.argmax(used))} belongs to more than one class of class_dict.")

    images = np.empty((int(sum(map(len, indices))), 3, size, size), dtype=np.float32)
    start = 0
    for index in indices:
        chunk = np.ascontiguousarray(pixels[index].transpose(0, 3, 1, 2))  # [n, H, W, 3] -> [n, 3, H, W]
        images[start : start + len(index)] = resize_area(chunk, size)
        start += len(index)
    return ImageClasses(tuple(names), np.array([len(i) for i in indices], dtype=np.int64), images)


def _load_checked_pickle(path: pathlib.Path) -> dict:
    """The pickle's dict, with ``image_data`` uint8 ``[N, H, W, 3]`` and a non-empty ``class_dict``."""
    try:
        with open(path, "rb") as f:
            data = load_pickle(f, str(path))
    except OSError as err:
        raise DataError(f"Cannot read {path} ({err}).") from err
    if not isinstance(data, dict) or "image_data" not in data or "class_dict" not in data:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path} holds {found}; expected {_PICKLE_CONTENT}.")
    pixels, class_dict = data["image_data"], data["class_dict"]
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
        found = f"{type(pixels).__name__} {getattr(pixels, 'dtype', '')} {getattr(pixels, 'shape', '')}"
        raise DataError(f"{path}: image_data is {found}; expected {_PICKLE_CONTENT}.")
    if not isinstance(class_dict, dict) or not class_dict or not all(isinstance(k, str) for k in class_dict):
        raise DataError(f"{path}: class_dict is an empty or non-dict {type(class_dict).__name__} or has non-string keys; "
                        f"expected {_PICKLE_CONTENT}.")
    return data


# -------------------------------------------------------------------------------- CSVs


def _load_csv_layout(folder: pathlib.Path, size: int, cache: bool):
    images_dir = folder / IMAGES_FOLDER
    if not images_dir.is_dir():
        raise DataError(f"mini-ImageNet folder not found: {images_dir} "
                        f"(the csv layout needs {IMAGES_FOLDER}/ and {', '.join(CSV_FILES.values())}).")
    splits, digests, sources = {}, [], []
    for split in SPLITS:
        path = folder / CSV_FILES[split]
        groups = _read_csv(path, images_dir)
        csv_digest = (path.name, file_sha256(path))
        splits[split], digest = load_image_files(groups, folder, size, channels=3, cache=cache,
                                                 kind="miniimagenet", extra_digests=[csv_digest])
        digests.append((split, digest))
        sources.append(str(path))
    sources.append(str(images_dir))
    return splits, fingerprint("miniimagenet", digests), sources


def _read_csv(path: pathlib.Path, images_dir: pathlib.Path):
    """``[(label, [image paths])]`` from one split file, labels sorted, files in line order."""
    if not path.is_file():
        raise DataError(f"mini-ImageNet split file not found: {path} (expected a CSV with header filename,label).")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"Cannot read {path} as CSV ({err}).") from err
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
        first = rows[0] if rows else "missing"
        raise DataError(f"{path}: the first line is {first}; expected the header filename,label.")
    groups: Dict[str, List[pathlib.Path]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path} line {line} is {row}; expected filename,label.")
        image = images_dir / row[0].strip()
        if not image.is_file():
            raise DataError(f"{path} line {line} names {row[0].strip()}, which is not in {images_dir}.")
        groups.setdefault(row[1].strip(), []).append(image)
    if not groups:
        raise DataError(f"{path} lists no images; expected lines filename,label after the header.")
    return sorted(groups.items())


def _check_split(splits: Dict[str, ImageClasses], folder: pathlib.Path) -> None:
    owner: Dict[str, str] = {}
    for split, classes in splits.items():
        for name in classes.names:
            if name in owner:
                raise DataError(f"{folder}: class {name!r} is in both the {owner[name]} and the {split} split; "
                                "the splits must not share classes.")
            owner[name] = split
    for split, classes in splits.items():
        if len(classes.names) != STANDARD_CLASSES[split]:
            warnings.warn(f"mini-ImageNet {split} split has {len(classes.names)} classes; Ravi & Larochelle's "
                          f"has {STANDARD_CLASSES[split]}.")
