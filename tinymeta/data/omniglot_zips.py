"""Omniglot from the official zips: ``images_background.zip`` and ``images_evaluation.zip``.

These are the files in the ``python/`` folder of github.com/brendenlake/omniglot (the same
ones torchvision downloads). Inside each zip::

    images_background/<alphabet>/<character>/<id>_<drawer>.png

``<character>`` is ``character01``, ``character02``, ...; ``<id>`` is the character's
4-digit number and ``<drawer>`` the 2-digit number of the person who drew it, 20 drawings
per character. The PNGs are 1-bit, 105x105, black ink on white paper.

:func:`read_official_zip` checks every member against that layout and returns the
arrays that :mod:`tinymeta.data.omniglot` reads from ``omniglot_<set>.npz`` (``images``
uint8 ``[N, 20, 105, 105]`` with 0 = ink and 255 = paper, ``alphabet`` and ``character``
str ``[N]``): characters sorted by (alphabet, character), drawings in file-name order.
``python -m tinymeta.data.prepare omniglot`` writes those files.
"""

from __future__ import annotations

import pathlib
import re
import zipfile
import zlib
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from tinymeta.data.images import decode_image
from tinymeta.data.omniglot import DRAWINGS_PER_CHARACTER, RAW_SIZE
from tinymeta.data.paths import DataError

#: The official zip of each Omniglot set.
OFFICIAL_ZIPS = {"background": "images_background.zip", "evaluation": "images_evaluation.zip"}
#: Characters in the official sets (a different count is reported, not refused).
OFFICIAL_CHARACTERS = {"background": 964, "evaluation": 659}
DOWNLOAD_HINT = "download it from the python/ folder of github.com/brendenlake/omniglot"
_DRAWING_NAME = re.compile(r"(\d{4})_(\d{2})\.png")

Progress = Callable[[int, int], None]


def read_official_zip(path: pathlib.Path, set_name: str, progress: Optional[Progress] = None) -> Dict[str, np.ndarray]:
    """Read one official Omniglot zip (``set_name`` ``'background'`` or ``'evaluation'``).

    Args:
        path: the zip file.
        set_name: which set it must hold; its members must sit under ``images_<set_name>/``.
        progress: called as ``progress(characters_done, characters_total)`` while decoding.

    Returns:
        ``images`` uint8 ``[N, 20, 105, 105]`` (0 = ink, 255 = paper), ``alphabet`` and
        ``character`` str ``[N]``, sorted by (alphabet, character).

    Raises:
        DataError: naming the zip (and member) at fault: the zip is missing or not a zip,
            a member lies outside ``images_<set_name>/<alphabet>/<character>/`` or is not
            named ``<id>_<drawer>.png``, a character does not have exactly 20 drawings or
            mixes two ids, or an image is unreadable or not 105x105.
    """
    path = pathlib.Path(path)
    if set_name not in OFFICIAL_ZIPS:
        raise ValueError(f"set_name must be one of {sorted(OFFICIAL_ZIPS)}, got {set_name!r}")
    if not path.is_file():
        raise DataError(f"Omniglot zip not found: {path} ({DOWNLOAD_HINT}).")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{path} is not a readable zip file ({err}); {DOWNLOAD_HINT} again.") from err
    with archive:
        characters = _characters(archive, path, set_name)
        keys = sorted(characters)
        images = np.empty((len(keys), DRAWINGS_PER_CHARACTER, RAW_SIZE, RAW_SIZE), dtype=np.uint8)
        for i, key in enumerate(keys):
            for j, member in enumerate(characters[key]):
                images[i, j] = _read_drawing(archive, path, member)
            if progress is not None:
                progress(i + 1, len(keys))
    return {
        "images": images,
        "alphabet": np.array([alphabet for alphabet, _ in keys]),
        "character": np.array([character for _, character in keys]),
    }


def _characters(archive: zipfile.ZipFile, path: pathlib.Path, set_name: str) -> Dict[Tuple[str, str], List[str]]:
    """Check the layout; return {(alphabet, character): its 20 members in file-name order}."""
    top = f"images_{set_name}"
    layout = f"{top}/<alphabet>/<character>/<id>_<drawer>.png"
    groups: Dict[Tuple[str, str], List[str]] = {}
    for info in archive.infolist():
        name = info.filename
        parts = name.split("/")
        if info.is_dir() or parts[0] == "__MACOSX" or parts[-1].startswith("."):
            continue  # folders, and the metadata macOS adds to zips it makes
        if parts[0] != top:
            other = "evaluation" if set_name == "background" else "background"
            hint = f" (this looks like {OFFICIAL_ZIPS[other]})" if parts[0] == f"images_{other}" else ""
            raise DataError(f"{path}: member {name!r} is not inside {top}/{hint}; expected {layout}.")
        if len(parts) != 4 or not _DRAWING_NAME.fullmatch(parts[3]):
            raise DataError(f"{path}: member {name!r} does not fit the layout {layout}.")
        groups.setdefault((parts[1], parts[2]), []).append(name)
    if not groups:
        raise DataError(f"{path} holds no drawings; expected {layout}.")

    for (alphabet, character), members in groups.items():
        members.sort()
        folder = f"{top}/{alphabet}/{character}/"
        if len(members) != DRAWINGS_PER_CHARACTER:
            raise DataError(
                f"{path}: {folder} has {len(members)} drawings; every Omniglot character has "
                f"{DRAWINGS_PER_CHARACTER}."
            )
        ids = sorted({_DRAWING_NAME.fullmatch(m.rsplit("/", 1)[1]).group(1) for m in members})
        if len(ids) != 1:
            raise DataError(f"{path}: {folder} mixes the character ids {ids}; its drawings must share one id.")
    return groups


def _read_drawing(archive: zipfile.ZipFile, path: pathlib.Path, member: str) -> np.ndarray:
    where = f"{path}: {member}"
    try:
        data = archive.read(member)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{where} cannot be read from the zip ({err}); the zip may be corrupt.") from err
    pixels = decode_image(data, where, "L")
    if pixels.shape != (RAW_SIZE, RAW_SIZE):
        raise DataError(f"{where} is {pixels.shape[1]}x{pixels.shape[0]}; Omniglot drawings are {RAW_SIZE}x{RAW_SIZE}.")
    return pixels
