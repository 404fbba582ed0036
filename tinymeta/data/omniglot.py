"""Omniglot: loading, preprocessing, the standard class splits, and Lake's one-shot runs.

Omniglot (Lake et al., 2015) has 1623 handwritten characters from 50 alphabets, each
drawn once by 20 different people. It ships in two sets: *background* (30 alphabets,
964 characters) and *evaluation* (20 alphabets, 659 characters). This module reads them
from ``<data dir>/omniglot/`` (see :mod:`tinymeta.data.paths`):

``omniglot_background.npz``, ``omniglot_evaluation.npz``
    ``images`` uint8 ``[N, 20, 105, 105]`` (0 = ink, 255 = paper), ``alphabet`` and
    ``character`` string arrays ``[N]``.
``all_runs.zip``
    Lake's 20 runs of 20-way one-shot classification, as PNGs.

Preprocessing (identical for both sources)
------------------------------------------
1. *Invert*: ``x = 1 - pixel / 255``, so ink is bright (1.0) and paper is 0.0. Most
   pixels then are exactly zero, which suits networks that start from zero inputs.
2. *Resize* from 105x105 to ``size x size`` by **area averaging** (a box filter): each
   output pixel is the mean of the input area it covers, with fractional pixels at the
   borders weighted by their overlap. Written as two matrix products,
   ``out = R @ image @ R.T`` with ``R`` the ``[size, 105]`` matrix of overlaps
   (:mod:`tinymeta.data.images`, shared by every dataset), the whole dataset resizes in
   about a second. We chose it over Pillow's LANCZOS, the filter used
   by the original MAML code, because it is linear with non-negative weights that sum
   to one: inversion and resizing commute, results stay inside ``[0, 1]`` with no
   ringing, and nothing is rounded back to 8 bits. Values therefore differ slightly
   (not in any way that matters for learning) from LANCZOS-resized uint8 images.
3. Store as float32 in ``[0, 1]``.

The preprocessed arrays are cached as an ``.npz`` in :func:`tinymeta.data.paths.cache_dir`,
keyed by the sha256 of the source files and by ``size``, so a second call only reads
the cache (compressed, about 8 MB and 0.3 s at size 28). An unreadable cache is rebuilt.

Splits
------
:func:`maml_split`
    The protocol of Santoro et al. (2016) and Finn et al. (2017): all 1623 characters
    shuffled with a fixed seed, 1200 for meta-training (optionally with a held-out
    validation tail) and the remaining 423 for meta-testing. Training classes are
    usually multiplied by four with :func:`augment_rotations`.
:func:`lake_split`
    Lake et al.'s protocol: background alphabets for training, evaluation alphabets
    for testing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re
import warnings
import zipfile
import zlib
from typing import Dict, List, Optional

import numpy as np

from tinymeta.data.files import file_sha256, write_npz_atomically
from tinymeta.data.images import area_resize_matrix, check_size, decode_image, resize_area  # noqa: F401
from tinymeta.data.paths import DataError, PathLike, cache_dir, resolve_data_dir

#: File name of each Omniglot set, keyed by the value stored in ``data["source"]``.
SOURCE_FILES = {
    "background": "omniglot_background.npz",
    "evaluation": "omniglot_evaluation.npz",
}
LAKE_RUNS_FILE = "all_runs.zip"
DRAWINGS_PER_CHARACTER = 20
RAW_SIZE = 105
REQUIRED_KEYS = ("images", "alphabet", "character")

# Bump when the preprocessing changes, so stale caches are not reused.
_CACHE_VERSION = 1


# --------------------------------------------------------------------------- locating


def omniglot_dir(data_dir: Optional[PathLike] = None) -> pathlib.Path:
    """Return ``<data dir>/omniglot``, checking that it exists."""
    root = resolve_data_dir(data_dir)
    folder = root / "omniglot"
    if not folder.is_dir():
        hint = ""
        if (root / SOURCE_FILES["background"]).exists():
            hint = f" The Omniglot files are directly in {root}: pass its parent instead."
        raise DataError(
            f"No omniglot/ folder in the data folder {root}. The data folder (--data-dir or "
            f"TINYMETA_DATA) must be the folder that CONTAINS omniglot/.{hint}"
        )
    return folder


# ------------------------------------------------------------------------ preprocessing


def preprocess_drawings(images: np.ndarray, size: int) -> np.ndarray:
    """Invert and area-resize uint8 drawings ``[..., H, W]`` to float32 ``[..., size, size]``.

    Input follows the file convention (0 = ink, 255 = paper); output has ink = 1.0,
    paper = 0.0, values in ``[0, 1]``. See the module docstring for the choice of filter.
    """
    if images.dtype != np.uint8 or images.ndim < 2:
        raise DataError(
            f"preprocess_drawings expects uint8 images [..., H, W], got {images.dtype} "
            f"with shape {images.shape}"
        )
    return resize_area(images, size, invert=True)



def _check_paper_is_white(images: np.ndarray, where: str) -> None:
    """Catch already-inverted input: in raw Omniglot most pixels are paper (255)."""
    first_drawings = images.reshape(-1, *images.shape[-2:])[:: max(1, images.shape[1])]
    mean = float(first_drawings.mean()) if first_drawings.size else 255.0
    if mean < 127.5:
        raise DataError(
            f"{where}: mean pixel is {mean:.1f}, expected mostly paper (255) with ink 0; "
            "the images look inverted already."
        )


# ---------------------------------------------------------------------- reading sources


def _read_source_npz(path: pathlib.Path) -> Dict[str, np.ndarray]:
    """Read and validate one raw Omniglot ``.npz`` (images, alphabet, character)."""
    expected = (
        f"an .npz with keys {', '.join(REQUIRED_KEYS)}: images uint8 "
        f"[N, {DRAWINGS_PER_CHARACTER}, {RAW_SIZE}, {RAW_SIZE}], alphabet and character str [N]"
    )
    if not path.is_file():
        raise DataError(f"Omniglot file not found: {path} (expected {expected}).")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(f"{path} holds a single array, expected {expected}.")
        with loaded:
            missing = [key for key in REQUIRED_KEYS if key not in loaded.files]
            if missing:
                raise DataError(
                    f"{path} is missing key(s) {missing} (has {sorted(loaded.files)}); "
                    f"expected {expected}."
                )
            arrays = {key: loaded[key] for key in REQUIRED_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(
            f"{path} could not be read ({type(err).__name__}: {err}); the file is probably "
            f"truncated or corrupt. Expected {expected}."
        ) from err

    images, alphabet, character = (arrays[key] for key in REQUIRED_KEYS)
    shape_ok = images.ndim == 4 and images.shape[1:] == (DRAWINGS_PER_CHARACTER, RAW_SIZE, RAW_SIZE)
    if images.dtype != np.uint8 or not shape_ok or len(images) == 0:
        raise DataError(
            f"{path}: 'images' is {images.dtype} with shape {images.shape}; expected uint8 "
            f"[N, {DRAWINGS_PER_CHARACTER}, {RAW_SIZE}, {RAW_SIZE}] with N >= 1."
        )
    for key, names in (("alphabet", alphabet), ("character", character)):
        if names.dtype.kind != "U" or names.shape != (len(images),):
            raise DataError(
                f"{path}: '{key}' is {names.dtype} with shape {names.shape}; expected a "
                f"str array of shape ({len(images)},), one name per character."
            )
    _check_paper_is_white(images, str(path))
    return arrays


# ------------------------------------------------------------------------------ caching


def _cache_file(source_paths: List[pathlib.Path], size: int) -> pathlib.Path:
    key = hashlib.sha256(f"omniglot-v{_CACHE_VERSION}-size{size}".encode())
    for path in source_paths:
        key.update(file_sha256(path).encode())
    return cache_dir() / f"omniglot_{size}px_{key.hexdigest()[:16]}.npz"


def _read_cache(path: pathlib.Path, size: int) -> Optional[Dict[str, np.ndarray]]:
    """Return the cached arrays, or None if the cache is absent or unusable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as loaded:
            data = {key: loaded[key] for key in ("images", "alphabet", "character", "source")}
        images = data["images"]
        n = len(images)
        if images.dtype != np.float32 or images.shape[1:] != (DRAWINGS_PER_CHARACTER, size, size):
            raise DataError(f"images are {images.dtype} {images.shape}")
        if any(data[key].shape != (n,) for key in ("alphabet", "character", "source")):
            raise DataError("name arrays do not match the number of characters")
        return data
    except Exception as err:  # any failure just means: rebuild
        warnings.warn(f"Ignoring unusable Omniglot cache {path} ({err}); rebuilding it.")
        return None


def _write_cache_atomically(path: pathlib.Path, data: Dict[str, np.ndarray]) -> None:
    """Write the cache (compressed: about 8 MB instead of 100 MB at size 28, most pixels
    are 0) atomically. Failing to write it only warns: it is an optimisation."""
    try:
        write_npz_atomically(path, data, compress=True)
    except OSError as err:
        warnings.warn(f"Could not write the Omniglot cache {path} ({err}); continuing without it.")


# ------------------------------------------------------------------------------ loading


def load_omniglot(data_dir: Optional[PathLike] = None, size: int = 28, cache: bool = True) -> Dict[str, np.ndarray]:
    """Load both Omniglot sets, inverted and resized (see the module docstring).

    Args:
        data_dir: folder containing ``omniglot/``; default ``$TINYMETA_DATA``.
        size: side length of the resized square images.
        cache: read and write the preprocessed arrays in the cache folder.

    Returns:
        A dict of arrays, background characters first, then evaluation ones, each set
        sorted by (alphabet, character):

        - ``images``: float32 ``[N, 20, size, size]``, ink 1.0, paper 0.0;
        - ``alphabet``, ``character``: str ``[N]``;
        - ``source``: str ``[N]``, ``'background'`` or ``'evaluation'``.

        For the full data ``N = 964 + 659 = 1623``.

    Raises:
        DataError: a file is missing, truncated, corrupt or has the wrong keys, dtype or
            shape, or a character (alphabet, character) appears twice.
    """
    check_size(size)
    folder = omniglot_dir(data_dir)
    source_paths = [folder / name for name in SOURCE_FILES.values()]
    for path in source_paths:
        if not path.is_file():
            raise DataError(
                f"Omniglot file not found: {path} (expected {', '.join(SOURCE_FILES.values())} "
                f"in {folder}; make them from the official zips with: python -m tinymeta.data.prepare "
                f"omniglot ZIP_DIR --out {folder.parent})."
            )

    cache_path = _cache_file(source_paths, size) if cache else None
    if cache_path is not None:
        cached = _read_cache(cache_path, size)
        if cached is not None:
            return cached

    parts = []
    for source, path in zip(SOURCE_FILES, source_paths):
        raw = _read_source_npz(path)
        n = len(raw["images"])
        parts.append(
            {
                "images": preprocess_drawings(raw["images"], size),
                "alphabet": raw["alphabet"],
                "character": raw["character"],
                "source": np.full(n, source),
            }
        )
    data = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    ids = character_ids(data)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(
            f"Characters appear more than once across {', '.join(map(str, source_paths))}: "
            f"{list(unique[counts > 1][:5])}; each (alphabet, character) must be unique."
        )

    if cache_path is not None:
        _write_cache_atomically(cache_path, data)
    return data


def character_ids(data: Dict[str, np.ndarray]) -> np.ndarray:
    """Return one identity string ``'alphabet/character'`` per character in ``data``."""
    _require_keys(data, ("alphabet", "character"))
    return np.char.add(np.char.add(data["alphabet"].astype(str), "/"), data["character"].astype(str))


def _require_keys(data: Dict[str, np.ndarray], keys) -> None:
    missing = [key for key in keys if key not in data]
    if missing:
        raise ValueError(f"Omniglot data dict is missing {missing}; expected the output of load_omniglot().")


# ------------------------------------------------------------------------------- splits


@dataclasses.dataclass(frozen=True)
class OmniglotSplit:
    """Class images of a train/validation/test split, with each class's identity.

    ``train``, ``val`` and ``test`` are class-major arrays ``[n_classes, 20, size, size]``
    (``val`` may have zero classes); ``*_ids`` hold the matching ``'alphabet/character'``
    strings, so that disjointness can be checked.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_ids: np.ndarray
    val_ids: np.ndarray
    test_ids: np.ndarray


def maml_split(data: Dict[str, np.ndarray], seed: int = 0, n_train: int = 1200, n_val: int = 100) -> OmniglotSplit:
    """Split all characters as in MAML: shuffle, first ``n_train`` train, the rest test.

    The characters of both sets are shuffled with ``np.random.default_rng(seed)``. The
    first ``n_train`` are for meta-training, of which the *last* ``n_val`` are held out
    as validation (``n_val=0`` for none): ``train`` gets ``n_train - n_val`` classes,
    ``val`` gets ``n_val``, ``test`` the remaining ``N - n_train`` (423 for full Omniglot).
    """
    _require_keys(data, ("images", "alphabet", "character"))
    n = len(data["images"])
    if not 0 <= n_val <= n_train <= n:
        raise ValueError(
            f"maml_split needs 0 <= n_val <= n_train <= number of characters, got "
            f"n_val={n_val}, n_train={n_train}, characters={n}"
        )
    order = np.random.default_rng(seed).permutation(n)
    parts = {
        "train": order[: n_train - n_val],
        "val": order[n_train - n_val : n_train],
        "test": order[n_train:],
    }
    return _split_from_indices(data, parts)


def lake_split(data: Dict[str, np.ndarray]) -> OmniglotSplit:
    """Split as Lake et al.: background alphabets train (964), evaluation alphabets test (659).

    ``val`` is empty; carve a validation set out of ``train`` if one is needed.
    """
    _require_keys(data, ("images", "alphabet", "character", "source"))
    source = data["source"]
    parts = {
        "train": np.flatnonzero(source == "background"),
        "val": np.array([], dtype=np.int64),
        "test": np.flatnonzero(source == "evaluation"),
    }
    return _split_from_indices(data, parts)


def _split_from_indices(data: Dict[str, np.ndarray], parts: Dict[str, np.ndarray]) -> OmniglotSplit:
    ids = character_ids(data)
    fields = {}
    for name, index in parts.items():
        fields[name] = data["images"][index]
        fields[name + "_ids"] = ids[index]
    return OmniglotSplit(**fields)


def augment_rotations(images: np.ndarray) -> np.ndarray:
    """Turn each class into four: rotated by 0, 90, 180 and 270 degrees.

    Args:
        images: class-major ``[n, examples, s, s]`` (any leading shape; the last two
            axes must be square).

    Returns:
        ``[4n, examples, s, s]``, rotation-major: entry ``k * n + i`` is class ``i``
        rotated counter-clockwise by ``k * 90`` degrees, i.e.
        ``np.rot90(images[i], k, axes=(-2, -1))``. A rotated character counts as a new
        class, as in Santoro et al. (2016) and Finn et al. (2017).
    """
    images = np.asarray(images)
    if images.ndim < 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(
            f"augment_rotations expects class-major square images [n, ..., s, s], got shape {images.shape}"
        )
    return np.concatenate([np.rot90(images, k, axes=(-2, -1)) for k in range(4)], axis=0)


# ---------------------------------------------------------------------------- Lake runs


@dataclasses.dataclass(frozen=True)
class LakeRun:
    """One run of Lake et al.'s 20-way one-shot classification.

    ``train[j]`` is the single example of class ``j``; test image ``test[i]`` belongs to
    the class of ``train[labels[i]]``. Images are preprocessed as in :func:`load_omniglot`.
    """

    name: str
    train: np.ndarray  # float32 [n_classes, size, size]
    test: np.ndarray  # float32 [n_test, size, size]
    labels: np.ndarray  # int64 [n_test], indices into train


def load_lake_runs(data_dir: Optional[PathLike] = None, size: int = 28) -> List[LakeRun]:
    """Parse ``omniglot/all_runs.zip`` into its runs (20 for the real file), in order.

    The zip holds folders ``runNN/`` with ``training/classMM.png`` (one drawing per
    class), ``test/itemMM.png`` and ``class_labels.txt``, whose lines read
    ``runNN/test/itemMM.png runNN/training/classKK.png``. Labels index the training
    images sorted by file name (``class01.png`` -> 0).

    Raises:
        DataError: the zip is missing or corrupt, or a run lacks files, has a malformed
            ``class_labels.txt``, or holds an image that is not 105x105.
    """
    check_size(size)
    path = omniglot_dir(data_dir) / LAKE_RUNS_FILE
    if not path.is_file():
        raise DataError(f"Lake runs file not found: {path} (expected Lake's {LAKE_RUNS_FILE}).")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{path} could not be opened as a zip ({err}); it may be truncated or corrupt.") from err
    with archive:
        names = set(archive.namelist())
        run_names = sorted({name.split("/")[0] for name in names if re.fullmatch(r"run\d+/.*", name)})
        if not run_names:
            raise DataError(f"{path} contains no runNN/ folders; expected Lake's all_runs.zip layout.")
        return [_read_lake_run(archive, path, run, names, size) for run in run_names]


def _read_lake_run(archive: zipfile.ZipFile, path: pathlib.Path, run: str, names: set, size: int) -> LakeRun:
    train_files = sorted(n for n in names if re.fullmatch(rf"{run}/training/[^/]+\.png", n))
    test_files = sorted(n for n in names if re.fullmatch(rf"{run}/test/[^/]+\.png", n))
    labels_file = f"{run}/class_labels.txt"
    if not train_files or not test_files or labels_file not in names:
        raise DataError(
            f"{path}: run {run} needs {run}/training/*.png, {run}/test/*.png and {labels_file}; "
            f"found {len(train_files)} training PNGs, {len(test_files)} test PNGs, "
            f"labels file {'present' if labels_file in names else 'missing'}."
        )

    answer = {}
    text = _read_member(archive, path, labels_file).decode("utf-8", errors="replace")
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in test_files or fields[1] not in train_files:
            raise DataError(
                f"{path}: {labels_file} line {line_no} is {line!r}; expected "
                f"'{run}/test/<item>.png {run}/training/<class>.png' naming files in the zip."
            )
        answer[fields[0]] = fields[1]
    if set(answer) != set(test_files):
        unlabelled = sorted(set(test_files) - set(answer))
        raise DataError(f"{path}: {labels_file} gives no answer for {unlabelled}.")

    train_index = {name: j for j, name in enumerate(train_files)}
    labels = np.array([train_index[answer[name]] for name in test_files], dtype=np.int64)
    train_raw = np.stack([_read_png(archive, path, name) for name in train_files])
    test_raw = np.stack([_read_png(archive, path, name) for name in test_files])
    _check_paper_is_white(train_raw[:, None], f"{path}: {run}/training")
    return LakeRun(
        name=run,
        train=preprocess_drawings(train_raw, size),
        test=preprocess_drawings(test_raw, size),
        labels=labels,
    )


def _read_member(archive: zipfile.ZipFile, path: pathlib.Path, member: str) -> bytes:
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read {member} ({err}); the zip may be corrupt.") from err


def _read_png(archive: zipfile.ZipFile, path: pathlib.Path, member: str) -> np.ndarray:
    """Decode one PNG from the zip to uint8 [105, 105] with 0 = ink, 255 = paper."""
    pixels = decode_image(_read_member(archive, path, member), f"{path}: {member}", "L")
    if pixels.shape != (RAW_SIZE, RAW_SIZE):
        raise DataError(f"{path}: {member} is {pixels.shape[1]}x{pixels.shape[0]}; expected {RAW_SIZE}x{RAW_SIZE}.")
    return pixels
