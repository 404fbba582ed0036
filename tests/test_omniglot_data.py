"""Tests for tinymeta.data: Omniglot loading, caching, splits, Lake's runs, and errors.

Tests marked by the ``real_data`` fixture need the Omniglot files. They are found through
``TINYMETA_DATA`` (the folder that contains ``omniglot/``), else in ``../shared/data``
beside the repository (the CI layout); without either those tests are skipped. The
error tests build small fake files in ``tmp_path`` and always run.
"""

import io
import time
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from tinymeta.data import (
    DataError,
    augment_rotations,
    cache_dir,
    character_ids,
    lake_split,
    load_lake_runs,
    load_omniglot,
    maml_split,
    resolve_data_dir,
)
from tinymeta.data.omniglot import area_resize_matrix

# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def fresh_cache(tmp_path_factory):
    """Point TINYMETA_CACHE at a new folder, so the first load below is a cold one."""
    folder = tmp_path_factory.mktemp("tinymeta_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINYMETA_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def real_data_dir(omniglot_data_dir):
    return omniglot_data_dir


@pytest.fixture(scope="module")
def loaded(real_data_dir, fresh_cache):
    """(data, seconds) of the first, cold load at size 28."""
    start = time.perf_counter()
    data = load_omniglot(real_data_dir, size=28)
    return data, time.perf_counter() - start


@pytest.fixture(scope="module")
def data(loaded):
    return loaded[0]


# ------------------------------------------------------------------- the real dataset


def test_loader_shapes_dtypes_and_ink_convention(data):
    images = data["images"]
    assert images.shape == (964 + 659, 20, 28, 28)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() == 1.0  # some pixel is fully covered by ink
    assert images.mean() < 0.2  # ink is bright and sparse, the paper is 0
    border = np.concatenate([images[..., 0, :], images[..., -1, :]], axis=None)
    assert np.median(border) == 0.0
    assert np.count_nonzero(data["source"] == "background") == 964
    assert np.count_nonzero(data["source"] == "evaluation") == 659
    assert data["source"][:964].tolist() == ["background"] * 964
    assert len(np.unique(data["alphabet"])) == 50
    assert len(np.unique(character_ids(data))) == 1623


def test_second_load_comes_from_the_cache(loaded, real_data_dir, fresh_cache):
    first, cold_seconds = loaded
    assert list(fresh_cache.glob("omniglot_28px_*.npz")), "no cache file written"
    start = time.perf_counter()
    second = load_omniglot(real_data_dir, size=28)
    warm_seconds = time.perf_counter() - start
    print(f"Omniglot load: cold {cold_seconds:.2f} s, cached {warm_seconds:.2f} s")
    assert warm_seconds < min(cold_seconds, 3.0)
    for key in ("images", "alphabet", "character", "source"):
        np.testing.assert_array_equal(first[key], second[key])
    assert not list(fresh_cache.glob("*.tmp")), "temporary file left behind"


def test_corrupt_cache_is_rebuilt(data, real_data_dir, fresh_cache):
    (cache_file,) = fresh_cache.glob("omniglot_28px_*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = load_omniglot(real_data_dir, size=28)
    np.testing.assert_array_equal(rebuilt["images"], data["images"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache is fine again
        load_omniglot(real_data_dir, size=28)


def test_maml_split_sizes_and_disjointness(data):
    split = maml_split(data, seed=0)
    assert split.train.shape == (1100, 20, 28, 28)
    assert split.val.shape == (100, 20, 28, 28)
    assert split.test.shape == (423, 20, 28, 28)
    train, val, test = (set(ids.tolist()) for ids in (split.train_ids, split.val_ids, split.test_ids))
    assert len(train) == 1100 and len(val) == 100 and len(test) == 423
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(character_ids(data).tolist())

    no_val = maml_split(data, seed=0, n_val=0)
    assert no_val.train.shape[0] == 1200 and no_val.val.shape[0] == 0 and no_val.test.shape[0] == 423
    # n_val only moves the tail of the 1200 training characters into val.
    assert set(no_val.train_ids.tolist()) == train | val
    np.testing.assert_array_equal(no_val.test_ids, split.test_ids)


def test_maml_split_is_seeded_and_images_follow_ids(data):
    a, b, c = maml_split(data, seed=0), maml_split(data, seed=0), maml_split(data, seed=1)
    np.testing.assert_array_equal(a.test_ids, b.test_ids)
    assert set(a.test_ids.tolist()) != set(c.test_ids.tolist())
    index = {name: i for i, name in enumerate(character_ids(data).tolist())}
    for k in (0, 57, 422):
        np.testing.assert_array_equal(a.test[k], data["images"][index[a.test_ids[k]]])


def test_maml_split_rejects_impossible_sizes(data):
    with pytest.raises(ValueError, match="n_train=2000, characters=1623"):
        maml_split(data, n_train=2000)
    with pytest.raises(ValueError, match="n_val=1300, n_train=1200"):
        maml_split(data, n_val=1300)


def test_rotation_classes_are_exact_rot90(data):
    images = maml_split(data).train[:50]
    rotated = augment_rotations(images)
    assert rotated.shape == (200, 20, 28, 28) and rotated.dtype == np.float32
    for k in range(4):
        for i in (0, 17, 49):
            np.testing.assert_array_equal(rotated[k * 50 + i], np.rot90(images[i], k, axes=(-2, -1)))
    # 90 degrees counter-clockwise: the top row becomes the left column, reversed.
    np.testing.assert_array_equal(rotated[50 + 3, 0, :, 0], images[3, 0, 0, ::-1])
    with pytest.raises(ValueError, match=r"square images .* got shape \(2, 20, 28, 14\)"):
        augment_rotations(np.zeros((2, 20, 28, 14)))


def test_lake_split_is_background_versus_evaluation(data):
    split = lake_split(data)
    assert split.train.shape == (964, 20, 28, 28)
    assert split.test.shape == (659, 20, 28, 28)
    assert split.val.shape[0] == 0
    train_alphabets = {name.split("/")[0] for name in split.train_ids.tolist()}
    test_alphabets = {name.split("/")[0] for name in split.test_ids.tolist()}
    assert len(train_alphabets) == 30 and len(test_alphabets) == 20
    assert not train_alphabets & test_alphabets


def test_lake_runs_layout_and_labels(real_data_dir):
    runs = load_lake_runs(real_data_dir, size=28)
    assert len(runs) == 20
    assert [run.name for run in runs] == [f"run{i:02d}" for i in range(1, 21)]
    for run in runs:
        assert run.train.shape == (20, 28, 28) and run.test.shape == (20, 28, 28)
        assert run.train.dtype == np.float32 and run.test.dtype == np.float32
        assert 0.0 <= run.train.min() and run.train.max() <= 1.0 and run.train.mean() < 0.2
        assert run.labels.dtype == np.int64 and run.labels.shape == (20,)
        # In every run each class is asked about exactly once.
        assert sorted(run.labels.tolist()) == list(range(20))


def test_lake_runs_are_evaluation_drawings_preprocessed_identically(data, real_data_dir):
    """Every run image is an evaluation-set drawing, and labels pair drawings of one character."""
    runs = load_lake_runs(real_data_dir, size=28)
    evaluation = data["source"] == "evaluation"
    pool = data["images"][evaluation].reshape(-1, 28 * 28).astype(np.float64)  # [659*20, 784]
    owner = np.repeat(character_ids(data)[evaluation], 20)

    def nearest(images):
        flat = images.reshape(len(images), -1).astype(np.float64)
        dist = (flat**2).sum(1)[:, None] - 2 * flat @ pool.T + (pool**2).sum(1)[None, :]
        best = dist.argmin(axis=1)
        return dist[np.arange(len(flat)), best], owner[best]

    for run in runs:
        train_dist, train_char = nearest(run.train)
        test_dist, test_char = nearest(run.test)
        assert train_dist.max() < 1e-6 and test_dist.max() < 1e-6
        np.testing.assert_array_equal(test_char, train_char[run.labels])


# ---------------------------------------------------------------------- resizing math


@pytest.mark.parametrize("n_in, n_out", [(105, 28), (105, 15), (105, 105), (10, 25)])
def test_area_resize_matrix_rows_are_averages(n_in, n_out):
    matrix = area_resize_matrix(n_in, n_out)
    assert matrix.shape == (n_out, n_in)
    assert (matrix >= 0).all()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    np.testing.assert_allclose(matrix.sum(axis=0), n_out / n_in)  # every input pixel counted fully


# ------------------------------------------------------------- fake files and errors


def blank_drawings(n_characters):
    """Raw-format drawings: paper 255 with a 7x7 ink square at the top left."""
    images = np.full((n_characters, 20, 105, 105), 255, dtype=np.uint8)
    images[..., :7, :7] = 0
    return images


def write_fake_omniglot(root, n_background=2, n_evaluation=1, **override):
    """Write tiny valid omniglot_{background,evaluation}.npz under root/omniglot/.

    ``override`` replaces or (with value None) drops arrays in the background file.
    """
    folder = root / "omniglot"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, alphabet in (("background", n_background, "Alpha"), ("evaluation", n_evaluation, "Omega")):
        arrays = {
            "images": blank_drawings(n),
            "alphabet": np.array([alphabet] * n),
            "character": np.array([f"character{i + 1:02d}" for i in range(n)]),
        }
        if name == "background":
            arrays.update(override)
            arrays = {key: value for key, value in arrays.items() if value is not None}
        np.savez(folder / f"omniglot_{name}.npz", **arrays)
    return folder


def test_fake_data_loads_and_resizes_by_area(tmp_path):
    write_fake_omniglot(tmp_path)
    data = load_omniglot(tmp_path, size=15, cache=False)  # 105 / 15 = 7: pixel-aligned boxes
    assert data["images"].shape == (3, 20, 15, 15)
    assert data["source"].tolist() == ["background", "background", "evaluation"]
    expected = np.zeros((15, 15), dtype=np.float32)
    expected[0, 0] = 1.0  # the 7x7 ink square is exactly output pixel (0, 0)
    np.testing.assert_array_equal(data["images"][2, 5], expected)
    small = load_omniglot(tmp_path, size=4, cache=False)["images"][0, 0]
    np.testing.assert_allclose(small[0, 0], (7 * 7) / (105 / 4) ** 2, rtol=1e-5)


def test_fake_data_is_cached_per_size(tmp_path, fresh_cache):
    write_fake_omniglot(tmp_path)
    before = set(fresh_cache.glob("omniglot_*px_*.npz"))
    first = load_omniglot(tmp_path, size=9)
    second = load_omniglot(tmp_path, size=9)
    new = set(fresh_cache.glob("omniglot_*px_*.npz")) - before
    assert len(new) == 1 and next(iter(new)).name.startswith("omniglot_9px_")
    np.testing.assert_array_equal(first["images"], second["images"])


def test_no_data_dir_names_both_ways_to_give_one(monkeypatch):
    monkeypatch.delenv("TINYMETA_DATA", raising=False)
    with pytest.raises(DataError, match=r"pass --data-dir .* TINYMETA_DATA"):
        resolve_data_dir()
    with pytest.raises(DataError, match="pass --data-dir"):
        load_omniglot()


def test_data_dir_argument_wins_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMETA_DATA", str(tmp_path / "elsewhere"))
    assert resolve_data_dir(tmp_path) == tmp_path.resolve()
    with pytest.raises(DataError, match=r"elsewhere \(from the TINYMETA_DATA environment variable\) does not exist"):
        resolve_data_dir()


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMETA_CACHE", str(tmp_path / "new" / "cache"))
    assert cache_dir() == tmp_path / "new" / "cache" and cache_dir().is_dir()


def test_folder_without_omniglot_is_explained(tmp_path):
    with pytest.raises(DataError, match="must be the folder that CONTAINS omniglot/"):
        load_omniglot(tmp_path)
    folder = write_fake_omniglot(tmp_path)
    with pytest.raises(DataError, match="pass its parent instead"):
        load_omniglot(folder)


def test_missing_file(tmp_path):
    folder = write_fake_omniglot(tmp_path)
    (folder / "omniglot_evaluation.npz").unlink()
    with pytest.raises(DataError, match=r"not found: .*omniglot_evaluation\.npz .*make them from the official zips "
                                        r"with: python -m tinymeta\.data\.prepare omniglot ZIP_DIR --out "):
        load_omniglot(tmp_path, cache=False)


@pytest.mark.parametrize("keep_bytes", [1000, 0])
def test_truncated_file(tmp_path, keep_bytes):
    folder = write_fake_omniglot(tmp_path)
    path = folder / "omniglot_background.npz"
    path.write_bytes(path.read_bytes()[:keep_bytes])
    with pytest.raises(DataError, match=r"omniglot_background\.npz could not be read .* truncated or corrupt"):
        load_omniglot(tmp_path, cache=False)


def test_not_an_npz_at_all(tmp_path):
    folder = write_fake_omniglot(tmp_path)
    (folder / "omniglot_evaluation.npz").write_bytes(b"this is not numpy data" * 100)
    with pytest.raises(DataError, match=r"omniglot_evaluation\.npz could not be read"):
        load_omniglot(tmp_path, cache=False)


def test_missing_key(tmp_path):
    write_fake_omniglot(tmp_path, character=None)
    with pytest.raises(DataError, match=r"omniglot_background\.npz is missing key\(s\) \['character'\]"):
        load_omniglot(tmp_path, cache=False)


def test_wrong_image_shape(tmp_path):
    write_fake_omniglot(tmp_path, images=np.full((2, 20, 50, 50), 255, np.uint8))
    with pytest.raises(DataError, match=r"omniglot_background\.npz: 'images' is uint8 with shape \(2, 20, 50, 50\); expected uint8 \[N, 20, 105, 105\]"):
        load_omniglot(tmp_path, cache=False)


def test_wrong_image_dtype(tmp_path):
    write_fake_omniglot(tmp_path, images=blank_drawings(2).astype(np.float32))
    with pytest.raises(DataError, match=r"'images' is float32 .* expected uint8"):
        load_omniglot(tmp_path, cache=False)


def test_wrong_name_array(tmp_path):
    write_fake_omniglot(tmp_path, alphabet=np.array(["Alpha"] * 3))
    with pytest.raises(DataError, match=r"'alphabet' is <U5 with shape \(3,\); expected a str array of shape \(2,\)"):
        load_omniglot(tmp_path, cache=False)


def test_already_inverted_images(tmp_path):
    write_fake_omniglot(tmp_path, images=255 - blank_drawings(2))
    with pytest.raises(DataError, match="look inverted already"):
        load_omniglot(tmp_path, cache=False)


def test_duplicate_characters(tmp_path):
    write_fake_omniglot(tmp_path, character=np.array(["character01", "character01"]))
    with pytest.raises(DataError, match=r"more than once.*Alpha/character01"):
        load_omniglot(tmp_path, cache=False)


def test_bad_size(tmp_path):
    write_fake_omniglot(tmp_path)
    with pytest.raises(ValueError, match="size must be a positive int, got 0"):
        load_omniglot(tmp_path, size=0)


# ---------------------------------------------------------------- fake Lake runs zip


def png_bytes(ink_at):
    image = np.full((105, 105), 255, dtype=np.uint8)
    image[ink_at : ink_at + 10, ink_at : ink_at + 10] = 0
    buffer = io.BytesIO()
    Image.fromarray(image).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def write_fake_runs(root, labels_text=None, skip=()):
    """Write omniglot/all_runs.zip with one 2-way run whose test items are swapped."""
    folder = root / "omniglot"
    folder.mkdir(parents=True, exist_ok=True)
    if labels_text is None:
        labels_text = "run01/test/item01.png run01/training/class02.png\nrun01/test/item02.png run01/training/class01.png\n"
    members = {
        "run01/training/class01.png": png_bytes(0),
        "run01/training/class02.png": png_bytes(50),
        "run01/test/item01.png": png_bytes(52),
        "run01/test/item02.png": png_bytes(2),
        "run01/class_labels.txt": labels_text.encode(),
    }
    with zipfile.ZipFile(folder / "all_runs.zip", "w") as archive:
        for name, content in members.items():
            if name not in skip:
                archive.writestr(name, content)
    return folder / "all_runs.zip"


def test_fake_runs_parse(tmp_path):
    write_fake_runs(tmp_path)
    (run,) = load_lake_runs(tmp_path, size=21)  # 105 / 21 = 5
    assert run.name == "run01" and run.train.shape == (2, 21, 21)
    np.testing.assert_array_equal(run.labels, [1, 0])
    assert run.train[0, 0, 0] == 1.0 and run.train[0, 10, 10] == 0.0  # ink bright, paper 0


def test_runs_zip_missing_or_corrupt(tmp_path):
    (tmp_path / "omniglot").mkdir()
    with pytest.raises(DataError, match=r"Lake runs file not found: .*all_runs\.zip"):
        load_lake_runs(tmp_path)
    path = write_fake_runs(tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"all_runs\.zip could not be opened as a zip"):
        load_lake_runs(tmp_path)


def test_runs_missing_labels_file(tmp_path):
    write_fake_runs(tmp_path, skip=("run01/class_labels.txt",))
    with pytest.raises(DataError, match=r"run01/class_labels\.txt.* labels file missing"):
        load_lake_runs(tmp_path)


def test_runs_malformed_labels(tmp_path):
    write_fake_runs(tmp_path, labels_text="run01/test/item01.png run01/training/class09.png\n")
    with pytest.raises(DataError, match=r"class_labels\.txt line 1 is"):
        load_lake_runs(tmp_path)
    write_fake_runs(tmp_path, labels_text="run01/test/item01.png run01/training/class02.png\n")
    with pytest.raises(DataError, match=r"gives no answer for \['run01/test/item02\.png'\]"):
        load_lake_runs(tmp_path)
