"""Tests for CIFAR-FS loading (tinymeta.data.cifarfs) from a CIFAR-100-format archive.

A tiny ``cifar-100-python.tar.gz`` is written to ``tmp_path`` with the real member names
(``cifar-100-python/{train,test,meta}``, pickled dicts), six fine classes, 3 training and
2 test images per class; each image is constant with value ``40 * class + 10 * part + index``
(part 0 = train, 1 = test), so the order of the loaded images can be read back.
"""

import io
import os
import pickle
import tarfile
import warnings

import numpy as np
import pytest

from tinymeta.data import DataError, load_splits

NAMES = ["apple", "aquarium_fish", "bed", "bee", "cup", "maple_tree"]
TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 2
SPLIT = {"train": ["maple_tree", "apple", "bee"], "val": ["cup"], "test": ["bed", "aquarium_fish"]}


@pytest.fixture(autouse=True)
def no_split_size_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".* lists .* classes; Bertinetto")
        yield


def table(part, per_class, bytes_keys):
    """One CIFAR-100 pickle dict; images interleaved by class, as the real files are shuffled."""
    labels = [c for _ in range(per_class) for c in range(len(NAMES))]
    seen = {c: 0 for c in range(len(NAMES))}
    data = np.zeros((len(labels), 3072), dtype=np.uint8)
    for k, c in enumerate(labels):
        data[k] = 40 * c + 10 * part + seen[c]
        seen[c] += 1
    result = {"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels), "filenames": ["x.png"] * len(labels)}
    return {key.encode(): value for key, value in result.items()} if bytes_keys else result


def members(edit=None):
    tables = {
        "train": table(0, TRAIN_PER_CLASS, bytes_keys=True),  # as Python 2 bytes keys
        "test": table(1, TEST_PER_CLASS, bytes_keys=False),
        "meta": {"fine_label_names": NAMES, "coarse_label_names": ["all"]},
    }
    if edit is not None:
        edit(tables)
    return {name: pickle.dumps(value, protocol=2) for name, value in tables.items()}


def write_archive(root, edit=None, split=SPLIT, split_dir="splits/bertinetto"):
    folder = root / "cifarfs"
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "cifar-100-python.tar.gz", "w:gz") as tar:
        for name, data in members(edit).items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    write_split_files(folder / split_dir, split)
    return root


def write_split_files(folder, split):
    folder.mkdir(parents=True, exist_ok=True)
    for name, classes in split.items():
        (folder / f"{name}.txt").write_text("\n".join(classes) + "\n")


def expected_codes(name):
    c = NAMES.index(name)
    return [40 * c + i for i in range(TRAIN_PER_CLASS)] + [40 * c + 10 + i for i in range(TEST_PER_CLASS)]


# ------------------------------------------------------------------------ valid input


def test_classes_follow_the_split_files_and_images_train_then_test(tmp_path):
    splits = load_splits("cifarfs", write_archive(tmp_path))
    for split, names in SPLIT.items():
        images = getattr(splits, split)
        assert images.shape == (len(names), 5, 3, 32, 32) and images.dtype == np.float32
        assert splits.info["class_names"][split] == names
        for c, name in enumerate(names):
            got = np.rint(images[c].reshape(5, -1) * 255)
            np.testing.assert_array_equal(got, np.array(expected_codes(name))[:, None] + np.zeros((1, 3072)))
    assert splits.info["image_shape"] == [3, 32, 32] and splits.info["images_per_class"]["val"] == 5


def test_channels_are_the_red_green_blue_planes(tmp_path):
    def colour(tables):
        data = tables["train"][b"data"]
        data[:, :1024], data[:, 1024:2048], data[:, 2048:] = 255, 0, 51

    splits = load_splits("cifarfs", write_archive(tmp_path, edit=colour), image_size=16)
    first = splits.train[0, 0]  # a training image: its planes were overwritten
    np.testing.assert_allclose(first[0], 1.0)
    np.testing.assert_allclose(first[1], 0.0)
    np.testing.assert_allclose(first[2], 0.2, atol=1e-6)
    assert splits.train.shape[-2:] == (16, 16)


def test_unpacked_folder_and_split_dir_option(tmp_path):
    from_archive = load_splits("cifarfs", write_archive(tmp_path / "a"))
    folder = tmp_path / "b" / "cifarfs" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, data in members().items():
        (folder / name).write_bytes(data)
    write_split_files(tmp_path / "elsewhere", SPLIT)
    unpacked = load_splits("cifarfs", tmp_path / "b", split_dir=tmp_path / "elsewhere")
    for split in SPLIT:
        np.testing.assert_array_equal(getattr(from_archive, split), getattr(unpacked, split))
    assert str(tmp_path / "elsewhere" / "test.txt") in unpacked.info["source_files"]


def test_split_files_directly_in_cifarfs(tmp_path):
    splits = load_splits("cifarfs", write_archive(tmp_path, split_dir="."))
    assert splits.info["classes"] == {"train": 3, "val": 1, "test": 2}


def test_fingerprint_follows_the_split_files(tmp_path):
    first = load_splits("cifarfs", write_archive(tmp_path)).fingerprint
    assert load_splits("cifarfs", tmp_path).fingerprint == first
    write_split_files(tmp_path / "cifarfs" / "splits" / "bertinetto", {**SPLIT, "val": ["cup"], "test": ["aquarium_fish", "bed"]})
    assert load_splits("cifarfs", tmp_path).fingerprint != first


# ------------------------------------------------------------------------ bad input


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(DataError, match=r"No cifarfs/ folder in the data folder"):
        load_splits("cifarfs", tmp_path)
    (tmp_path / "cifarfs").mkdir()
    with pytest.raises(DataError, match=r"Neither .*cifar-100-python\.tar\.gz nor .*cifar-100-python/ exists; download "
                                        r"https://www\.cs\.toronto\.edu/~kriz/cifar-100-python\.tar\.gz"):
        load_splits("cifarfs", tmp_path)
    write_archive(tmp_path)
    for name in ("train", "val", "test"):
        (tmp_path / "cifarfs" / "splits" / "bertinetto" / f"{name}.txt").unlink()
    with pytest.raises(DataError, match=r"CIFAR-FS split files train\.txt, val\.txt, test\.txt not found in .*bertinetto, "
                                        r".*splits, .*; they come with the CIFAR-FS download of github\.com/bertinetto/r2d2"):
        load_splits("cifarfs", tmp_path)


def test_corrupt_archive(tmp_path):
    write_archive(tmp_path)
    path = tmp_path / "cifarfs" / "cifar-100-python.tar.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"cifar-100-python\.tar\.gz is not a readable \.tar\.gz"):
        load_splits("cifarfs", tmp_path)


def test_archive_without_a_member(tmp_path):
    write_archive(tmp_path)
    with tarfile.open(tmp_path / "cifarfs" / "cifar-100-python.tar.gz", "w:gz") as tar:
        data = members()["train"]
        info = tarfile.TarInfo("cifar-100-python/train")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"has no file cifar-100-python/test; is it the CIFAR-100 python archive"):
        load_splits("cifarfs", tmp_path)


def test_unknown_class_name_suggests_the_close_one(tmp_path):
    write_archive(tmp_path, split={**SPLIT, "test": ["bed", "aquarium fish"]})
    with pytest.raises(DataError, match=r"test\.txt line 2: 'aquarium fish' is not a CIFAR-100 fine class name "
                                        r"\(did you mean 'aquarium_fish'\?\)"):
        load_splits("cifarfs", tmp_path)


def test_a_class_in_two_split_files(tmp_path):
    write_archive(tmp_path, split={**SPLIT, "val": ["cup", "apple"]})
    with pytest.raises(DataError, match=r"val\.txt: class 'apple' is also in train\.txt; the splits must not share classes"):
        load_splits("cifarfs", tmp_path)


def test_wrong_arrays(tmp_path):
    def wrong(tables):
        tables["test"]["data"] = tables["test"]["data"][:, :100]

    write_archive(tmp_path, edit=wrong)
    with pytest.raises(DataError, match=r"cifar-100-python\.tar\.gz: test: 'data' is ndarray uint8 \(12, 100\); "
                                        r"expected uint8 \[N, 3072\]"):
        load_splits("cifarfs", tmp_path)


def test_a_pickle_that_would_run_a_command_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "it-ran"

    class RunsACommand:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    write_archive(tmp_path, edit=lambda tables: tables["meta"].update(payload=RunsACommand()))
    with pytest.raises(DataError, match=r"cifar-100-python\.tar\.gz: cifar-100-python/meta refers to (posix|nt|os)\.system"):
        load_splits("cifarfs", tmp_path)
    assert not marker.exists()
