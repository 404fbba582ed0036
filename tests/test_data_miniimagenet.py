"""Tests for mini-ImageNet loading (tinymeta.data.miniimagenet) in both layouts, and for the
restricted unpickler (tinymeta.data.safe_pickle).

Small files in the official layouts are written to ``tmp_path``: pickles with a few 84x84
images per class, and ``images/`` + CSVs. Every image is constant, with value
``split_offset + 10 * class + index``, so grouping and order can be read back.
"""

import os
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from tinymeta.data import DataError, load_splits
from tinymeta.data.miniimagenet import load_miniimagenet
from tinymeta.data.safe_pickle import load_pickle

SPLITS = ("train", "val", "test")
CLASSES = {"train": ["n02", "n01", "n03"], "val": ["n10"], "test": ["n21", "n20"]}  # not in name order
PER_CLASS = 4
OFFSET = {"train": 0, "val": 100, "test": 150}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMETA_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def no_split_size_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="mini-ImageNet .* split has")
        yield


def value(split, name, i):
    """The constant pixel value of image i of class ``name``: classes counted in sorted order."""
    return OFFSET[split] + 10 * sorted(CLASSES[split]).index(name) + i


def write_pickles(root, protocol=4, edit=None):
    """mini-imagenet-cache-<split>.pkl files; class_dict indices are interleaved, not blocks."""
    folder = root / "miniimagenet"
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        names = CLASSES[split]
        n = len(names) * PER_CLASS
        image_data = np.zeros((n, 84, 84, 3), dtype=np.uint8)
        class_dict = {name: [] for name in names}
        for k in range(n):  # image k belongs to class k % n_classes, as its (k // n_classes)-th image
            name, i = names[k % len(names)], k // len(names)
            image_data[k] = value(split, name, i)
            class_dict[name].append(k)
        data = {"image_data": image_data, "class_dict": class_dict}
        if edit is not None:
            data = edit(split, data)
        with open(folder / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump(data, f, protocol=protocol)
    return root


def write_csv_layout(root, header="filename,label"):
    folder = root / "miniimagenet"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines = [header]
        for name in CLASSES[split]:
            for i in range(PER_CLASS):
                filename = f"{name}{i:08d}.png"
                Image.new("RGB", (84, 84), (value(split, name, i),) * 3).save(folder / "images" / filename)
                lines.append(f"{filename},{name}")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def check_splits(splits, size):
    for split in SPLITS:
        images = getattr(splits, split)
        assert images.shape == (len(CLASSES[split]), PER_CLASS, 3, size, size) and images.dtype == np.float32
        assert splits.info["class_names"][split] == sorted(CLASSES[split])
        for c, name in enumerate(sorted(CLASSES[split])):
            for i in range(PER_CLASS):
                np.testing.assert_allclose(images[c, i], value(split, name, i) / 255, rtol=0, atol=1e-6)
    assert splits.info["dataset"] == "miniimagenet" and splits.info["image_shape"] == [3, size, size]


# ------------------------------------------------------------------------ both layouts


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_layout(tmp_path, protocol):
    splits = load_splits("miniimagenet", write_pickles(tmp_path, protocol), image_size=84)
    check_splits(splits, 84)
    assert [p.rsplit("/", 1)[1] for p in splits.info["source_files"]] == [
        "mini-imagenet-cache-train.pkl", "mini-imagenet-cache-val.pkl", "mini-imagenet-cache-test.pkl"]


def test_csv_layout_gives_the_same_arrays(tmp_path):
    from_csv = load_splits("miniimagenet", write_csv_layout(tmp_path / "a"), image_size=42)
    check_splits(from_csv, 42)
    from_pickle = load_splits("miniimagenet", write_pickles(tmp_path / "b"), image_size=42)
    for split in SPLITS:
        np.testing.assert_array_equal(getattr(from_csv, split), getattr(from_pickle, split))


def test_layout_can_be_forced_and_pickles_win_otherwise(tmp_path):
    write_pickles(tmp_path)
    write_csv_layout(tmp_path)
    assert load_splits("miniimagenet", tmp_path).info["source_files"][0].endswith(".pkl")
    assert load_splits("miniimagenet", tmp_path, layout="csv").info["source_files"][0].endswith("train.csv")


def test_fingerprint_changes_with_the_data(tmp_path):
    first = load_splits("miniimagenet", write_pickles(tmp_path)).fingerprint
    assert load_splits("miniimagenet", tmp_path).fingerprint == first
    write_pickles(tmp_path, edit=lambda split, d: {**d, "image_data": d["image_data"] // 2} if split == "val" else d)
    assert load_splits("miniimagenet", tmp_path).fingerprint != first


def test_standard_split_sizes_are_checked(tmp_path):
    write_pickles(tmp_path)
    with pytest.warns(UserWarning) as record:
        load_miniimagenet(tmp_path)
    assert [str(w.message) for w in record] == [
        "mini-ImageNet train split has 3 classes; Ravi & Larochelle's has 64.",
        "mini-ImageNet val split has 1 classes; Ravi & Larochelle's has 16.",
        "mini-ImageNet test split has 2 classes; Ravi & Larochelle's has 20.",
    ]


# ------------------------------------------------------------------------ bad input


def test_missing_folder_and_missing_layout(tmp_path):
    with pytest.raises(DataError, match=r"No miniimagenet/ folder in the data folder .*; expected one holding \(pickle: "
                                        r"mini-imagenet-cache-train\.pkl.*or csv: images/"):
        load_splits("miniimagenet", tmp_path)
    write_pickles(tmp_path)
    (tmp_path / "miniimagenet" / "mini-imagenet-cache-val.pkl").unlink()
    with pytest.raises(DataError, match=r"miniimagenet holds neither mini-ImageNet layout .* it has \["):
        load_splits("miniimagenet", tmp_path)
    with pytest.raises(DataError, match=r"mini-ImageNet file not found: .*mini-imagenet-cache-val\.pkl"):
        load_splits("miniimagenet", tmp_path, layout="pickle")


@pytest.mark.parametrize("edit, message", [
    (lambda d: [d], r"holds list; expected a dict with image_data uint8"),
    (lambda d: {"images": d["image_data"]}, r"holds \['images'\]; expected a dict with image_data"),
    (lambda d: {**d, "image_data": d["image_data"].astype(np.float32)}, r"image_data is ndarray float32"),
    (lambda d: {**d, "image_data": d["image_data"][..., 0]}, r"image_data is ndarray uint8 \(12, 84, 84\)"),
    (lambda d: {**d, "class_dict": {**d["class_dict"], "n04": []}}, r"class_dict\['n04'\] is not a non-empty list"),
    (lambda d: {**d, "class_dict": {**d["class_dict"], "n04": [12]}}, r"class_dict\['n04'\] has index 12 outside "
                                                                      r"image_data's 12 images"),
    (lambda d: {**d, "class_dict": {**d["class_dict"], "n04": [3]}}, r"image 3 belongs to more than one class"),
])
def test_malformed_pickles_are_named(tmp_path, edit, message):
    write_pickles(tmp_path, edit=lambda split, d: edit(d) if split == "train" else d)
    with pytest.raises(DataError, match=r"mini-imagenet-cache-train\.pkl:? .*" + message):
        load_splits("miniimagenet", tmp_path)


def test_truncated_pickle(tmp_path):
    write_pickles(tmp_path)
    path = tmp_path / "miniimagenet" / "mini-imagenet-cache-test.pkl"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"mini-imagenet-cache-test\.pkl is not a readable pickle"):
        load_splits("miniimagenet", tmp_path)


class RunsACommand:
    """Unpickling this calls os.system: what a tampered dataset file could do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_pickle_that_would_run_a_command_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "it-ran"
    write_pickles(tmp_path, edit=lambda split, d: {**d, "payload": RunsACommand(f"touch {marker}")}
                  if split == "val" else d)
    with pytest.raises(DataError, match=r"mini-imagenet-cache-val\.pkl refers to (posix|nt|os)\.system, which a data "
                                        r"pickle has no reason to call; refused"):
        load_splits("miniimagenet", tmp_path)
    assert not marker.exists()
    # The payload is live: the standard unpickler would have run it.
    with open(tmp_path / "miniimagenet" / "mini-imagenet-cache-val.pkl", "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_restricted_unpickler_reads_data_and_refuses_other_globals():
    import io
    data = {"a": [np.arange(3, dtype=np.int16), "text", 1.5, np.float32(2)], "b": (None, True)}
    for protocol in (2, 5):
        loaded = load_pickle(io.BytesIO(pickle.dumps(data, protocol=protocol)), "x.pkl")
        np.testing.assert_array_equal(loaded["a"][0], data["a"][0])
        assert loaded["a"][1:] == data["a"][1:] and loaded["b"] == data["b"]
    with pytest.raises(DataError, match=r"^x\.pkl refers to builtins\.eval, which a data pickle has no reason to call"):
        load_pickle(io.BytesIO(pickle.dumps(eval)), "x.pkl")
    with pytest.raises(DataError, match=r"^x\.pkl refers to numpy\.random\._pickle\.__\w+, which"):
        load_pickle(io.BytesIO(pickle.dumps(np.random.default_rng(0))), "x.pkl")


def test_csv_errors_name_the_file_and_line(tmp_path):
    write_csv_layout(tmp_path, header="image,class")
    with pytest.raises(DataError, match=r"train\.csv: the first line is \['image', 'class'\]; expected the header "
                                        r"filename,label"):
        load_splits("miniimagenet", tmp_path)
    write_csv_layout(tmp_path)
    (tmp_path / "miniimagenet" / "images" / "n2000000002.png").unlink()
    with pytest.raises(DataError, match=r"test\.csv line 8 names n2000000002\.png, which is not in .*images"):
        load_splits("miniimagenet", tmp_path)
    write_csv_layout(tmp_path)
    with open(tmp_path / "miniimagenet" / "val.csv", "a") as f:
        f.write("n0100000000.png,n01\n")
    with pytest.raises(DataError, match=r"class 'n01' is in both the train and the val split"):
        load_splits("miniimagenet", tmp_path)
    write_csv_layout(tmp_path)
    with open(tmp_path / "miniimagenet" / "val.csv", "a") as f:
        f.write("a,b,c\n")
    with pytest.raises(DataError, match=r"val\.csv line 6 is \['a', 'b', 'c'\]; expected filename,label"):
        load_splits("miniimagenet", tmp_path)


def test_unreadable_image_in_csv_layout(tmp_path):
    write_csv_layout(tmp_path)
    (tmp_path / "miniimagenet" / "images" / "n1000000001.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"images/n1000000001\.png is not a readable image"):
        load_splits("miniimagenet", tmp_path)
