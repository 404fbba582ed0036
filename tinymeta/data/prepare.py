"""Prepare and check datasets from the command line.

``python -m tinymeta.data.prepare omniglot ZIP_DIR --out DATA_DIR``
    Reads the official ``images_background.zip`` and ``images_evaluation.zip`` from
    ``ZIP_DIR``, checks every member (:mod:`tinymeta.data.omniglot_zips`), and writes
    ``DATA_DIR/omniglot/omniglot_{background,evaluation}.npz``, the files
    :func:`tinymeta.data.load_omniglot` reads, each atomically. It prints the sha256 of
    each written file and of its arrays (the latter does not depend on the compressor).

``python -m tinymeta.data.prepare check DATASET [--data-dir DIR] [--image-size N]``
    Loads a dataset as the experiments will (:func:`tinymeta.data.load_splits`) and
    prints its classes, image shape and fingerprint: a quick test that the files are
    where and what they should be.

Bad input ends with one ``error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import List, Optional

from tinymeta.data.files import arrays_sha256, file_sha256, write_npz_atomically
from tinymeta.data.omniglot import SOURCE_FILES, _read_source_npz
from tinymeta.data.omniglot_zips import OFFICIAL_CHARACTERS, OFFICIAL_ZIPS, read_official_zip
from tinymeta.data.paths import DataError

_PROGRESS_STEPS = 4  # progress lines per zip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tinymeta.data.prepare",
        description="Prepare a dataset from the files you downloaded, or check a prepared one. "
                    "See docs/data.md for where to get each dataset.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    omniglot = commands.add_parser(
        "omniglot", help="official Omniglot zips -> DATA_DIR/omniglot/omniglot_{background,evaluation}.npz",
        description="Read images_background.zip and images_evaluation.zip (the python/ folder of "
                    "github.com/brendenlake/omniglot), check every drawing, and write the arrays "
                    "the loader reads to OUT/omniglot/.")
    omniglot.add_argument("zip_dir", metavar="ZIP_DIR", help="folder holding the two official zips")
    omniglot.add_argument("--out", required=True, metavar="DATA_DIR",
                          help="data folder to write omniglot/ into (then use it as --data-dir or TINYMETA_DATA)")

    from tinymeta.data.splits import DATASETS

    check = commands.add_parser(
        "check", help="load a dataset as training would and print its classes and fingerprint",
        description="Load DATASET with tinymeta.data.load_splits and print what was found.")
    check.add_argument("dataset", choices=DATASETS, metavar="DATASET", help=f"one of {', '.join(DATASETS)}")
    check.add_argument("--data-dir", help="folder containing the dataset folder (for 'folder': the image "
                       "tree itself); default $TINYMETA_DATA")
    check.add_argument("--image-size", type=int, help="side of the square images (default: the dataset's)")
    return parser


def prepare_omniglot(zip_dir: pathlib.Path, out: pathlib.Path, say=print) -> List[pathlib.Path]:
    """Convert the two official zips in ``zip_dir`` into ``out/omniglot/*.npz``; return the files."""
    if not zip_dir.is_dir():
        raise DataError(f"ZIP_DIR {zip_dir} is not a folder; pass the folder that holds "
                        f"{' and '.join(OFFICIAL_ZIPS.values())}.")
    missing = [name for name in OFFICIAL_ZIPS.values() if not (zip_dir / name).is_file()]
    if missing:
        raise DataError(f"{' and '.join(missing)} not found in {zip_dir}; download them from the python/ "
                        "folder of github.com/brendenlake/omniglot.")
    folder = out / "omniglot"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"Cannot create the output folder {folder} ({err}).") from err

    written = []
    for set_name, zip_name in OFFICIAL_ZIPS.items():
        zip_path = zip_dir / zip_name
        say(f"reading {zip_path}")
        arrays = read_official_zip(zip_path, set_name, progress=_progress_printer(zip_name, say))
        n = len(arrays["images"])
        if n != OFFICIAL_CHARACTERS[set_name]:
            say(f"  note: {zip_name} has {n} characters; the official one has {OFFICIAL_CHARACTERS[set_name]}")
        target = folder / SOURCE_FILES[set_name]
        try:
            write_npz_atomically(target, arrays, compress=True)
        except OSError as err:
            raise DataError(f"Cannot write {target} ({err}).") from err
        _read_source_npz(target)  # the loader's own checks, on what was written
        say(f"wrote {target}: {n} characters, {n * arrays['images'].shape[1]} drawings, "
            f"{len(set(arrays['alphabet'].tolist()))} alphabets")
        say(f"  sha256 of the file:   {file_sha256(target)}")
        say(f"  sha256 of the arrays: {arrays_sha256(arrays)}")
        written.append(target)
    say(f"done: use --data-dir {out} (or TINYMETA_DATA={out})")
    return written


def _progress_printer(zip_name: str, say):
    def progress(done: int, total: int) -> None:
        step = max(1, -(-total // _PROGRESS_STEPS))
        if done % step == 0 or done == total:
            say(f"  {zip_name}: {done}/{total} characters")
    return progress


def check_dataset(dataset: str, data_dir: Optional[str], image_size: Optional[int], say=print) -> None:
    """Load ``dataset`` with :func:`tinymeta.data.load_splits` and print a summary."""
    from tinymeta.data.splits import load_splits

    splits = load_splits(dataset, data_dir=data_dir, image_size=image_size)
    info = {key: value for key, value in splits.info.items() if key != "class_names"}
    say(json.dumps(info, indent=2))
    say(f"fingerprint: {splits.fingerprint}")


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "omniglot":
            prepare_omniglot(pathlib.Path(args.zip_dir).expanduser(), pathlib.Path(args.out).expanduser())
        else:
            check_dataset(args.dataset, args.data_dir, args.image_size)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
