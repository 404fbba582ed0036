"""Tests for tinymeta.data.folder and ``load_splits('folder', ...)``: your own ``ROOT/<class>/<image>``.

Images are written with Pillow into ``tmp_path``. Most are constant images whose value
``10 * class + index`` says which class and file they are, so order and grouping can be
read back from the loaded arrays.
"""

import warnings

import numpy as np
import pytest
from PIL import Image

from tinymeta.data import DataError, load_splits
from tinymeta.data.folder import load_image_folder
from tinymeta.tasks import EpisodeSampler


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMETA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_tree(root, counts, mode="RGB", size=(30, 20), suffix=".png"):
    """ROOT/class<c>/<i>.png with constant images of value 10 * c + i (width x height = size)."""
    for c, n in enumerate(counts):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new(mode, size, (10 * c + i,) * (3 if mode == "RGB" else 1)).save(folder / f"{i:03d}{suffix}")
    return root


def codes(images):
    """The constant value each loaded image encodes."""
    return np.rint(images.reshape(len(images), -1)[:, 0] * 255).astype(int).tolist()


# ------------------------------------------------------------------------ loading


def test_unequal_classes_come_back_as_a_list_in_name_order(tmp_path):
    classes, digest = load_image_folder(write_tree(tmp_path / "root", [3, 5, 2, 4]), size=8)
    assert classes.names == ("class0", "class1", "class2", "class3")
    assert classes.counts.tolist() == [3, 5, 2, 4] and classes.image_shape == (3, 8, 8)
    per_class = classes.by_class()
    assert isinstance(per_class, list) and [len(c) for c in per_class] == [3, 5, 2, 4]
    for c, images in enumerate(per_class):
        assert codes(images) == [10 * c + i for i in range(len(images))]
        assert images.dtype == np.float32
    assert len(digest) == 16


def test_equal_classes_come_back_class_major(tmp_path):
    classes, _ = load_image_folder(write_tree(tmp_path / "root", [4, 4, 4]), size=6)
    assert isinstance(classes.by_class(), np.ndarray) and classes.by_class().shape == (3, 4, 3, 6, 6)


def test_area_resize_averages_each_block(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)  # H=16, W=24 -> 8x8: 2x3 blocks
    (tmp_path / "root" / "a").mkdir(parents=True)
    Image.fromarray(pixels).save(tmp_path / "root" / "a" / "x.png")
    classes, _ = load_image_folder(tmp_path / "root", size=8)
    expected = pixels.reshape(8, 2, 8, 3, 3).mean(axis=(1, 3)).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(classes.images[0], expected, rtol=0, atol=1e-6)


def test_channels_follow_the_files_unless_chosen(tmp_path):
    grey = write_tree(tmp_path / "grey", [2, 2], mode="L")
    assert load_image_folder(grey, size=5)[0].image_shape == (5, 5)
    assert load_image_folder(grey, size=5, channels=3)[0].image_shape == (3, 5, 5)
    mixed = write_tree(tmp_path / "mixed", [2, 2], mode="L")
    Image.new("RGB", (9, 9), (255, 0, 0)).save(mixed / "class1" / "red.png")
    colour = load_image_folder(mixed, size=5)[0]
    assert colour.image_shape == (3, 5, 5)
    np.testing.assert_array_equal(colour.by_class()[1][2], np.stack([np.ones((5, 5)), np.zeros((5, 5)), np.zeros((5, 5))]))
    as_grey = load_image_folder(mixed, size=5, channels=1)[0].by_class()[1][2]
    np.testing.assert_allclose(as_grey, 76 / 255, atol=1e-6)  # Pillow's luma of pure red: 299/1000 * 255 -> 76


def test_jpeg_and_upper_case_suffixes_are_read(tmp_path):
    root = write_tree(tmp_path / "root", [2], suffix=".JPG", size=(12, 12))
    Image.new("RGB", (12, 12), (200, 100, 50)).save(root / "class0" / "z.jpeg")
    classes, _ = load_image_folder(root, size=4)
    assert classes.counts.tolist() == [3]
    np.testing.assert_allclose(classes.images[2], np.array([200, 100, 50])[:, None, None] / 255 + np.zeros((3, 4, 4)),
                               atol=3 / 255)  # JPEG is lossy


def test_cache_is_reused_and_follows_the_files(tmp_path, private_cache):
    root = write_tree(tmp_path / "root", [2, 3])
    first, digest = load_image_folder(root, size=7)
    entries = sorted(private_cache.glob("folder_7px_*.npz"))
    assert len(entries) == 1
    again, same_digest = load_image_folder(root, size=7)
    np.testing.assert_array_equal(first.images, again.images)
    assert same_digest == digest and sorted(private_cache.glob("folder_7px_*.npz")) == entries

    Image.new("RGB", (30, 20), (99, 99, 99)).save(root / "class1" / "001.png")  # one image changes
    changed, new_digest = load_image_folder(root, size=7)
    assert new_digest != digest and codes(changed.by_class()[1]) == [10, 99, 12]
    assert len(list(private_cache.glob("folder_7px_*.npz"))) == 2


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, private_cache):
    root = write_tree(tmp_path / "root", [2, 2])
    expected, _ = load_image_folder(root, size=4)
    for entry in private_cache.glob("folder_*.npz"):
        entry.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="Ignoring unusable image cache"):
        rebuilt, _ = load_image_folder(root, size=4)
    np.testing.assert_array_equal(rebuilt.images, expected.images)


# --------------------------------------------------------------------- load_splits


def test_load_splits_shuffles_classes_into_three_splits(tmp_path):
    root = write_tree(tmp_path / "root", [3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    splits = load_splits("folder", root, image_size=6)
    names = splits.info["class_names"]
    assert [len(names[s]) for s in ("train", "val", "test")] == [6, 2, 2]  # 0.64, 0.16, 0.20 of 10
    assert sorted(names["train"] + names["val"] + names["test"]) == [f"class{c}" for c in range(10)]
    for split in ("train", "val", "test"):
        assert names[split] == sorted(names[split])
        for name, images in zip(names[split], getattr(splits, split)):
            c = int(name[len("class"):])
            assert codes(images) == [10 * c + i for i in range(3 + c)]
    assert splits.info["image_shape"] == [3, 6, 6] and splits.info["images_per_class"]["train"] == [
        3 + int(n[len("class"):]) for n in names["train"]]
    other = load_splits("folder", root, image_size=6, split_seed=1)
    assert other.info["class_names"] != names and other.fingerprint == splits.fingerprint


def test_a_train_val_test_tree_keeps_its_split(tmp_path):
    write_tree(tmp_path / "root" / "train", [4, 4, 4], mode="L")
    write_tree(tmp_path / "root" / "test", [4, 6], mode="L")
    splits = load_splits("folder", tmp_path / "root", image_size=5)
    assert splits.train.shape == (3, 4, 5, 5) and isinstance(splits.test, list) and splits.val == []
    assert splits.info["classes"] == {"train": 3, "val": 0, "test": 2}
    sampler = EpisodeSampler(splits.test, ways=2, shots=1, queries=3, rng=0)
    assert sampler.sample().query_x.shape == (6, 1, 5, 5)


def test_small_classes_are_refused_by_the_sampler_or_dropped_on_request(tmp_path):
    root = write_tree(tmp_path / "root", [9, 9, 2, 9, 9])
    with pytest.raises(ValueError, match=r"class 2 \('class2'\) has 2 examples, fewer than the shots \+ queries = 5"):
        EpisodeSampler(load_image_folder(root, size=4)[0].by_class(), 2, 1, 4, class_names=[f"class{c}" for c in range(5)])
    with pytest.warns(UserWarning, match=r"dropping 1 classes with fewer than 5 images: 'class2' \(2\)"):
        splits = load_splits("folder", root, image_size=4, min_images=5, fractions=(0.5, 0.0, 0.5))
    assert "class2" not in sum(splits.info["class_names"].values(), [])
    EpisodeSampler(splits.train, 2, 1, 4)


def test_folder_options_are_checked(tmp_path):
    root = write_tree(tmp_path / "root", [2, 2])
    with pytest.raises(DataError, match=r"load_splits\('folder'\) needs data_dir \(--data-dir\)"):
        load_splits("folder")
    with pytest.raises(ValueError, match=r"fractions must be three non-negative numbers .* got \(0\.5, 0\.6, 0\.1\)"):
        load_splits("folder", root, fractions=(0.5, 0.6, 0.1))
    with pytest.raises(DataError, match=r"has 2 classes, too few to split into train / val / test"):
        load_splits("folder", root, fractions=(0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"channels must be 1 \(grey\), 3 \(colour\) or None"):
        load_splits("folder", root, channels=2)


# ---------------------------------------------------------------------- bad trees


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"Image folder .*nowhere does not exist"):
        load_image_folder(tmp_path / "nowhere", size=4)


def test_images_directly_in_root(tmp_path):
    root = write_tree(tmp_path / "root", [2])
    Image.new("L", (4, 4)).save(root / "stray.png")
    with pytest.raises(DataError, match=r"root holds images directly \(such as stray\.png\); expected .*/<class>/<image>"):
        load_image_folder(root, size=4)


def test_nested_folder_in_a_class(tmp_path):
    root = write_tree(tmp_path / "root", [2])
    (root / "class0" / "more").mkdir()
    with pytest.raises(DataError, match=r"class0/more is a folder inside the class folder"):
        load_image_folder(root, size=4)


def test_class_without_images(tmp_path):
    root = write_tree(tmp_path / "root", [2])
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"Class folder .*empty holds no \.png or \.jpg images"):
        load_image_folder(root, size=4)


def test_no_classes(tmp_path):
    (tmp_path / "root").mkdir()
    with pytest.raises(DataError, match=r"root has no class folders"):
        load_image_folder(tmp_path / "root", size=4)


def test_unreadable_image_is_named(tmp_path):
    root = write_tree(tmp_path / "root", [2, 2])
    (root / "class1" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"class1/001\.png is not a readable image"):
        load_image_folder(root, size=4)


def test_other_files_are_skipped_with_a_warning_and_hidden_ones_silently(tmp_path):
    root = write_tree(tmp_path / "root", [2])
    (root / "class0" / "labels.csv").write_text("x")
    (root / "class0" / ".DS_Store").write_text("x")
    with pytest.warns(UserWarning, match=r"skipped 1 files that are not \.png or \.jpg images, such as .*labels\.csv"):
        classes, _ = load_image_folder(root, size=4)
    assert classes.counts.tolist() == [2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (root / "class0" / "labels.csv").unlink()
        load_image_folder(root, size=4)
