"""Tests for ``python -m tinymeta.data.prepare omniglot``: the official Omniglot zips -> arrays.

The official zips are built here from arrays, in their layout
(``images_<set>/<alphabet>/<character>/<id>_<drawer>.png``, 1-bit PNGs): tiny ones for the
error cases, and the full dataset from the shared arrays for the round trip, which must give
back exactly the arrays it started from.
"""

import io
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from tinymeta.data import DataError, load_omniglot, load_splits
from tinymeta.data.files import file_sha256
from tinymeta.data.omniglot_zips import read_official_zip
from tinymeta.data.prepare import main, prepare_omniglot

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMETA_CACHE", str(tmp_path / "cache"))


def png_bytes(drawing):
    """A 1-bit PNG of a uint8 drawing whose pixels are 0 (ink) or 255 (paper)."""
    buffer = io.BytesIO()
    Image.fromarray(drawing == 255).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def write_official_zip(path, set_name, arrays, first_id=1, edit=None):
    """Write arrays (images [N, 20, H, W], alphabet, character) as an official Omniglot zip.

    Drawers are numbered 01..20 in the arrays' order. ``edit(members)`` may change the
    ``{member name: bytes}`` dict before it is written.
    """
    members = {}
    for i, (alphabet, character) in enumerate(zip(arrays["alphabet"], arrays["character"])):
        for j, drawing in enumerate(arrays["images"][i]):
            name = f"images_{set_name}/{alphabet}/{character}/{first_id + i:04d}_{j + 1:02d}.png"
            members[name] = png_bytes(drawing)
    if edit is not None:
        edit(members)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def tiny_set(alphabets, n_characters=2, seed=0):
    """Valid raw arrays: paper 255 with random ink dots, characters sorted by (alphabet, character)."""
    rng = np.random.default_rng(seed)
    keys = sorted((a, f"character{c + 1:02d}") for a in alphabets for c in range(n_characters))
    images = np.where(rng.random((len(keys), 20, 105, 105)) < 0.05, 0, 255).astype(np.uint8)
    return {"images": images, "alphabet": np.array([a for a, _ in keys]), "character": np.array([c for _, c in keys])}


@pytest.fixture
def tiny_zips(tmp_path):
    """(folder with both tiny official zips, {set: arrays})."""
    folder = tmp_path / "zips"
    folder.mkdir()
    sets = {"background": tiny_set(["Beta", "Alpha_(old)"], seed=1), "evaluation": tiny_set(["Omega"], seed=2)}
    write_official_zip(folder / "images_background.zip", "background", sets["background"])
    write_official_zip(folder / "images_evaluation.zip", "evaluation", sets["evaluation"], first_id=100)
    return folder, sets


# ------------------------------------------------------------------------ valid input


def test_tiny_zips_become_the_arrays_the_loader_reads(tiny_zips, tmp_path, capsys):
    folder, sets = tiny_zips
    assert main(["omniglot", str(folder), "--out", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    for set_name, arrays in sets.items():
        path = tmp_path / "data" / "omniglot" / f"omniglot_{set_name}.npz"
        with np.load(path, allow_pickle=False) as written:
            assert sorted(written.files) == ["alphabet", "character", "images"]
            for key in arrays:
                np.testing.assert_array_equal(written[key], arrays[key])
                assert written[key].dtype == arrays[key].dtype
        assert f"sha256 of the file:   {file_sha256(path)}" in out
    assert "images_background.zip: 4/4 characters" in out
    data = load_omniglot(tmp_path / "data", size=15, cache=False)
    assert data["images"].shape == (6, 20, 15, 15)


def test_writing_twice_gives_the_same_bytes(tiny_zips, tmp_path):
    folder, _ = tiny_zips
    first = prepare_omniglot(folder, tmp_path / "one", say=lambda *_: None)
    second = prepare_omniglot(folder, tmp_path / "two", say=lambda *_: None)
    assert [file_sha256(p) for p in first] == [file_sha256(p) for p in second]
    assert not list((tmp_path / "one" / "omniglot").glob("*.tmp"))  # no temporary file left behind


def test_macos_metadata_and_folder_entries_are_ignored(tmp_path):
    arrays = tiny_set(["Alpha"], n_characters=1)

    def add_noise(members):
        members["__MACOSX/images_background/Alpha/._x.png"] = b"junk"
        members["images_background/Alpha/.DS_Store"] = b"junk"
        members["images_background/Alpha/"] = b""

    write_official_zip(tmp_path / "z.zip", "background", arrays, edit=add_noise)
    np.testing.assert_array_equal(read_official_zip(tmp_path / "z.zip", "background")["images"], arrays["images"])


def test_real_omniglot_round_trip_is_exact(omniglot_data_dir, tmp_path):
    """Every one of the 32,460 drawings goes PNG -> zip -> prepare -> identical arrays."""
    zips = tmp_path / "zips"
    zips.mkdir()
    originals, first_id = {}, 1
    for set_name in ("background", "evaluation"):
        with np.load(omniglot_data_dir / "omniglot" / f"omniglot_{set_name}.npz", allow_pickle=False) as f:
            originals[set_name] = {key: f[key] for key in f.files}
        write_official_zip(zips / f"images_{set_name}.zip", set_name, originals[set_name], first_id)
        first_id += len(originals[set_name]["images"])
    lines = []
    written = prepare_omniglot(zips, tmp_path / "data", say=lines.append)
    assert len(written) == 2
    for set_name, path in zip(("background", "evaluation"), written):
        with np.load(path, allow_pickle=False) as f:
            for key, original in originals[set_name].items():
                assert f[key].dtype == original.dtype
                np.testing.assert_array_equal(f[key], original)
    assert originals["background"]["images"].shape[0] + originals["evaluation"]["images"].shape[0] == 1623
    assert not any("note:" in line for line in lines)  # 964 and 659 characters, as the official zips


# ------------------------------------------------------------------------ bad input


def test_missing_zip_is_named(tiny_zips, tmp_path):
    folder, _ = tiny_zips
    (folder / "images_evaluation.zip").unlink()
    with pytest.raises(DataError, match=r"^images_evaluation\.zip not found in .*zips; download"):
        prepare_omniglot(folder, tmp_path / "data")


def test_not_a_zip(tiny_zips, tmp_path):
    folder, _ = tiny_zips
    (folder / "images_background.zip").write_bytes(b"<html>404</html>")
    with pytest.raises(DataError, match=r"images_background\.zip is not a readable zip file"):
        prepare_omniglot(folder, tmp_path / "data")


def test_wrong_top_folder_says_which_zip_it_looks_like(tmp_path):
    write_official_zip(tmp_path / "images_background.zip", "evaluation", tiny_set(["Alpha"], 1))
    with pytest.raises(DataError, match=r"images_background\.zip: member 'images_evaluation/Alpha/character01/"
                                        r"0001_01\.png' is not inside images_background/ \(this looks like "
                                        r"images_evaluation\.zip\)"):
        read_official_zip(tmp_path / "images_background.zip", "background")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("images_background/Alpha/character01/0001_07.png"),
     r"images_background/Alpha/character01/ has 19 drawings; every Omniglot character has 20"),
    (lambda m: m.update({"images_background/Alpha/character01/0001_21.png": m["images_background/Alpha/character01/0001_01.png"]}),
     r"images_background/Alpha/character01/ has 21 drawings"),
    (lambda m: m.update({"images_background/Alpha/character01/0001_03.png": png_bytes(np.full((105, 104), 255, np.uint8))}),
     r"images_background\.zip: images_background/Alpha/character01/0001_03\.png is 104x105; Omniglot drawings are 105x105"),
    (lambda m: m.update({"images_background/Alpha/character02/0002_05.png": b"\x89PNG\r\n\x1a\n broken"}),
     r"images_background/Alpha/character02/0002_05\.png is not a readable image"),
    (lambda m: m.update({"images_background/Alpha/character02/notes.txt": b"hi"}),
     r"member 'images_background/Alpha/character02/notes\.txt' does not fit the layout "
     r"images_background/<alphabet>/<character>/<id>_<drawer>\.png"),
    (lambda m: m.update({"images_background/Alpha/0001_01.png": b""}),
     r"member 'images_background/Alpha/0001_01\.png' does not fit the layout"),
    (lambda m: m.update({"images_background/Alpha/character01/0009_01.png": m.pop("images_background/Alpha/character01/0001_01.png")}),
     r"images_background/Alpha/character01/ mixes the character ids \['0001', '0009'\]"),
])
def test_malformed_members_are_named(tmp_path, edit, message):
    write_official_zip(tmp_path / "images_background.zip", "background", tiny_set(["Alpha"], 2), edit=edit)
    with pytest.raises(DataError, match=message):
        read_official_zip(tmp_path / "images_background.zip", "background")


def test_empty_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w"):
        pass
    with pytest.raises(DataError, match=r"holds no drawings; expected images_background/<alphabet>"):
        read_official_zip(tmp_path / "images_background.zip", "background")


# ------------------------------------------------------------------ the command line


def run_prepare(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tinymeta.data.prepare", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def test_help():
    result = run_prepare("--help")
    assert result.returncode == 0
    assert "omniglot" in result.stdout and "check" in result.stdout
    sub = run_prepare("omniglot", "--help")
    assert sub.returncode == 0 and "ZIP_DIR" in sub.stdout and "--out" in sub.stdout


def test_user_errors_are_one_line_with_status_2(tmp_path):
    result = run_prepare("omniglot", str(tmp_path / "nowhere"), "--out", str(tmp_path / "data"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ZIP_DIR ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    (tmp_path / "images_background.zip").write_bytes(b"junk")
    (tmp_path / "images_evaluation.zip").write_bytes(b"junk")
    result = run_prepare("omniglot", str(tmp_path), "--out", str(tmp_path / "data"))
    assert result.returncode == 2 and "is not a readable zip file" in result.stderr and "Traceback" not in result.stderr
    result = run_prepare("omniglot", str(tmp_path))  # --out missing: argparse's own error
    assert result.returncode == 2 and "--out" in result.stderr


def test_check_command_prints_what_load_splits_finds(omniglot_data_dir, capsys):
    assert main(["check", "omniglot", "--data-dir", str(omniglot_data_dir)]) == 0
    out = capsys.readouterr().out
    assert '"train": 4400' in out and '"test": 423' in out and '"image_shape": [\n    28,\n    28\n  ]' in out
    assert f"fingerprint: {load_splits('omniglot', omniglot_data_dir).fingerprint}" in out


def test_check_command_reports_bad_data_in_one_line(tiny_zips, tmp_path, capsys):
    folder, _ = tiny_zips
    prepare_omniglot(folder, tmp_path / "data", say=lambda *_: None)
    assert main(["check", "omniglot", "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: maml_split needs 0 <= n_val <= n_train <= number of characters") and err.count("\n") == 1
