"""Your own images: a folder tree ``ROOT/<class>/<image>``, one folder per class.

Images are PNG or JPEG files of any size, grey-scale or colour, and classes may hold
different numbers of them. Each image becomes float32 in ``[0, 1]`` (``pixel / 255``),
resized to ``size x size`` by area averaging (:mod:`tinymeta.data.images`; non-square
images are stretched), channel-first: ``[size, size]`` for grey, ``[3, size, size]``
for colour. ``channels=None`` chooses one channel if every file is stored as a grey-scale
image (Pillow modes ``1``, ``L``, ``I``, ``F``, ...) and three otherwise; ``channels=1``
converts colour to grey (Pillow's ITU-R 601-2 luma), ``channels=3`` grey to colour.

Layout rules (anything else is refused, naming the path): classes are the sub-folders of
``ROOT``, sorted by name; images are the ``.png``, ``.jpg`` and ``.jpeg`` files directly
inside a class folder (any letter case), sorted by name; names starting with ``.`` are
ignored; other files are skipped with a warning; a class folder must hold at least one
image and no sub-folders; ``ROOT`` itself holds no images.

Decoding and resizing tens of thousands of images takes minutes, so the result is cached
(:func:`tinymeta.data.paths.cache_dir`), atomically, in an uncompressed ``.npz`` keyed by
the sha256 of every file's bytes, the class names, ``size`` and ``channels``: a changed,
added, removed or renamed image means a new cache entry. Each load still reads and
hashes every file (seconds for mini-ImageNet's 60,000 small JPEGs), which also gives the
data's fingerprint.
"""

from __future__ import annotations

import hashlib
import pathlib
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from tinymeta.data.classes import ImageClasses
from tinymeta.data.files import fingerprint, write_npz_atomically
from tinymeta.data.images import (GREY_MODES, check_size, decode_image, image_mode, image_shape, resize_area,
                                  to_channels_first)
from tinymeta.data.paths import DataError, PathLike, cache_dir

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Bump when the preprocessing changes, so stale caches are not reused.
_CACHE_VERSION = 1

#: A class and its image files, in order.
ClassFiles = Tuple[str, List[pathlib.Path]]


def is_image_file(path: pathlib.Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def scan_class_tree(root: PathLike) -> List[ClassFiles]:
    """List ``ROOT/<class>/<image>``: ``[(class name, [image files])]``, both sorted by name."""
    root = pathlib.Path(root)
    layout = f"{root}/<class>/<image>.png|.jpg (one folder per class)"
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a folder; expected {layout}.")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    loose = [p for p in entries if p.is_file() and is_image_file(p)]
    if loose:
        raise DataError(f"{root} holds images directly (such as {loose[0].name}); expected {layout}.")
    classes, skipped = [], []
    for folder in (p for p in entries if p.is_dir()):
        inside = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        nested = [p for p in inside if p.is_dir()]
        if nested:
            raise DataError(f"{nested[0]} is a folder inside the class folder {folder}; expected {layout}.")
        images = [p for p in inside if is_image_file(p)]
        skipped += [p for p in inside if not is_image_file(p)]
        if not images:
            raise DataError(f"Class folder {folder} holds no .png or .jpg images; expected {layout}.")
        classes.append((folder.name, images))
    if not classes:
        raise DataError(f"{root} has no class folders; expected {layout}.")
    if skipped:
        warnings.warn(f"{root}: skipped {len(skipped)} files that are not .png or .jpg images, such as {skipped[0]}.")
    return classes


def load_image_folder(root: PathLike, size: int, channels: Optional[int] = None, cache: bool = True):
    """Load ``ROOT/<class>/<image>`` (see the module docstring).

    Returns:
        ``(classes, fingerprint)``: an :class:`ImageClasses` with every class of the
        tree, and the short sha256 of all file names and contents.
    """
    root = pathlib.Path(root).expanduser().resolve()
    return load_image_files(scan_class_tree(root), root, size, channels, cache, kind="folder")


def load_image_files(groups: Sequence[ClassFiles], root: pathlib.Path, size: int, channels: Optional[int],
                     cache: bool, kind: str, extra_digests: Sequence[Tuple[str, str]] = ()):
    """Decode, resize and cache the images of ``groups``; return ``(ImageClasses, fingerprint)``.

    ``root`` is the folder the file names in the fingerprint are relative to;
    ``extra_digests`` adds ``(name, sha256)`` of other files that define the classes
    (mini-ImageNet's CSV split files) to the fingerprint and the cache key.
    """
    check_size(size)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grey), 3 (colour) or None (decided by the files), got {channels!r}")
    digests = [(_relative(path, root), _sha256(path)) for _, files in groups for path in files]
    key = hashlib.sha256(f"{kind}-v{_CACHE_VERSION}-size{size}-channels{channels}".encode())
    for name, files in groups:
        key.update(f"\0class\0{name}\0{len(files)}".encode())
    for name, digest in [*digests, *extra_digests]:
        key.update(f"\0{name}\0{digest}".encode())
    names = tuple(name for name, _ in groups)
    counts = np.array([len(files) for _, files in groups], dtype=np.int64)

    cache_path = cache_dir() / f"{kind}_{size}px_{key.hexdigest()[:16]}.npz" if cache else None
    classes = _read_cache(cache_path, names, counts) if cache_path is not None else None
    if classes is None:
        files = [path for _, group in groups for path in group]
        images = _decode_all(files, size, channels)
        classes = ImageClasses(names, counts, images)
        if cache_path is not None:
            try:
                write_npz_atomically(cache_path, {"images": images, "counts": counts, "names": np.array(names)},
                                     compress=False)
            except OSError as err:
                warnings.warn(f"Could not write the image cache {cache_path} ({err}); continuing without it.")
    return classes, fingerprint(kind, [*digests, *extra_digests])


def _decode_all(files: List[pathlib.Path], size: int, channels: Optional[int]) -> np.ndarray:
    """float32 ``[len(files), *image_shape]``, one file at a time."""
    if channels is None:
        modes = [image_mode(_read(path), str(path)) for path in files]
        channels = 1 if all(mode in GREY_MODES for mode in modes) else 3
    mode = "L" if channels == 1 else "RGB"
    images = np.empty((len(files), *image_shape(channels, size)), dtype=np.float32)
    for i, path in enumerate(files):
        pixels = to_channels_first(decode_image(_read(path), str(path), mode))
        images[i] = resize_area(np.ascontiguousarray(pixels), size)
    return images


def _read_cache(path: pathlib.Path, names: Tuple[str, ...], counts: np.ndarray) -> Optional[ImageClasses]:
    """The cached classes, or None if the cache is absent or unusable (which only warns)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as loaded:
            images, cached_counts, cached_names = loaded["images"], loaded["counts"], loaded["names"]
        if tuple(cached_names.tolist()) != names or not np.array_equal(cached_counts, counts):
            raise DataError("its classes differ from the files")
        if images.dtype != np.float32 or len(images) != int(counts.sum()):
            raise DataError(f"images are {images.dtype} {images.shape}")
        return ImageClasses(names, counts, images)
    except Exception as err:  # any failure just means: rebuild
        warnings.warn(f"Ignoring unusable image cache {path} ({err}); rebuilding it.")
        return None


def _read(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"Cannot read {path} ({err}).") from err


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(_read(path)).hexdigest()


def _relative(path: pathlib.Path, root: pathlib.Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
