"""Tests for ``tinymeta.data.load_splits`` (Omniglot, and what all datasets share) and
``DATASET_DEFAULTS``. mini-ImageNet, CIFAR-FS and image folders have their own files.
"""

import json

import numpy as np
import pytest

from tinymeta.data import (DATASET_DEFAULTS, DATASETS, DataError, augment_rotations, dataset_defaults, lake_split,
                           load_omniglot, load_splits, maml_split)
from tinymeta.models import Conv4
from tinymeta.tasks import EpisodeSampler


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINYMETA_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def reference_load_split(cfg, data_dir):
    """The experiment script's ``load_split`` as it was when load_splits took over its job,
    kept verbatim: a shipped checkpoint was trained and evaluated on exactly these arrays."""
    data = load_omniglot(data_dir, size=cfg["image_size"])
    if cfg["split"] == "maml":
        split = maml_split(data, seed=cfg["split_seed"], n_val=cfg["n_val"])
        train, val, test = split.train, split.val, split.test
    else:
        split = lake_split(data)
        order = np.random.default_rng(cfg["split_seed"]).permutation(len(split.train))
        n_val = min(cfg["n_val"], len(order))
        train, val = split.train[np.sort(order[n_val:])], split.train[np.sort(order[:n_val])]
        test = split.test
    return augment_rotations(train), val, test


# ------------------------------------------------------------------- Omniglot, real data


@pytest.mark.parametrize("split", ["maml", "lake"])
def test_omniglot_splits_are_the_experiment_arrays(omniglot_data_dir, split):
    splits = load_splits("omniglot", omniglot_data_dir, split=split)
    expected = reference_load_split({"image_size": 28, "split": split, "split_seed": 0, "n_val": 100}, omniglot_data_dir)
    for got, want in zip((splits.train, splits.val, splits.test), expected):
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_omniglot_info_and_names(omniglot_data_dir):
    splits = load_splits("omniglot", omniglot_data_dir)
    info = splits.info
    assert info["classes"] == {"train": 4400, "val": 100, "test": 423}
    assert info["images_per_class"] == {"train": 20, "val": 20, "test": 20} and info["image_shape"] == [28, 28]
    names = info["class_names"]
    assert names["train"][1100] == names["train"][0].replace("@rot0", "@rot90")
    plain = [n.split("@")[0] for n in names["train"][:1100]]
    assert len(set(plain + names["val"] + names["test"])) == 1623  # every character exactly once
    json.dumps(info)  # JSON-ready, for checkpoints and logs
    assert len(splits.fingerprint) == 16 and int(splits.fingerprint, 16) >= 0
    sampler = EpisodeSampler(splits.train, ways=5, shots=1, queries=15, rng=0)
    assert sampler.sample().support_x.shape == (5, 1, 28, 28)


def test_omniglot_options(omniglot_data_dir):
    plain = load_splits("omniglot", omniglot_data_dir, rotations=False, n_val=0)
    assert plain.info["classes"] == {"train": 1200, "val": 0, "test": 423} and plain.val.shape == (0, 20, 28, 28)
    assert plain.info["options"] == {"image_size": 28, "split": "maml", "split_seed": 0, "n_val": 0, "n_train": None,
                                     "rotations": False, "cache": True}
    small = load_splits("omniglot", omniglot_data_dir, image_size=14, split="lake", n_val=10)
    assert small.train.shape == (4 * 954, 20, 14, 14) and small.test.shape == (659, 20, 14, 14)


# --------------------------------------------------------------- Omniglot, fake files


def write_fake_omniglot(root, ink_row=0):
    folder = root / "omniglot"
    folder.mkdir(parents=True, exist_ok=True)
    for name, alphabet, n in (("background", "Alpha", 3), ("evaluation", "Omega", 2)):
        images = np.full((n, 20, 105, 105), 255, dtype=np.uint8)
        images[:, :, ink_row, :] = 0
        np.savez(folder / f"omniglot_{name}.npz", images=images, alphabet=np.array([alphabet] * n),
                 character=np.array([f"character{i + 1:02d}" for i in range(n)]))


def test_fingerprint_changes_with_the_omniglot_files(tmp_path):
    write_fake_omniglot(tmp_path)
    first = load_splits("omniglot", tmp_path, split="lake", n_val=1)
    assert first.info["classes"] == {"train": 8, "val": 1, "test": 2}
    assert load_splits("omniglot", tmp_path, split="lake", n_val=1).fingerprint == first.fingerprint
    write_fake_omniglot(tmp_path, ink_row=50)
    assert load_splits("omniglot", tmp_path, split="lake", n_val=1).fingerprint != first.fingerprint


# ------------------------------------------------------------------------- errors


def test_unknown_dataset_and_options_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"load_splits: unknown dataset 'imagenet'; choose one of omniglot, "
                                         r"miniimagenet, cifarfs, folder"):
        load_splits("imagenet", tmp_path)
    with pytest.raises(ValueError, match=r"load_splits\('omniglot'\): unknown option\(s\) \['rotation'\]; it takes "
                                         r"\['cache', 'n_train', 'n_val', 'rotations', 'split', 'split_seed'\]"):
        load_splits("omniglot", tmp_path, rotation=False)
    write_fake_omniglot(tmp_path)
    with pytest.raises(ValueError, match=r"split must be 'maml' or 'lake', got 'random'"):
        load_splits("omniglot", tmp_path, split="random")
    with pytest.raises(ValueError, match=r"n_train applies to split='maml' only"):
        load_splits("omniglot", tmp_path, split="lake", n_train=2)


@pytest.mark.parametrize("dataset, folder", [("omniglot", "omniglot"), ("miniimagenet", "miniimagenet"),
                                             ("cifarfs", "cifarfs")])
def test_a_missing_dataset_folder_is_one_sentence(tmp_path, dataset, folder):
    with pytest.raises(DataError, match=rf"^No {folder}/ folder in the data folder {tmp_path}[;.]"):
        load_splits(dataset, tmp_path)


def test_no_data_dir_at_all(monkeypatch):
    monkeypatch.delenv("TINYMETA_DATA", raising=False)
    with pytest.raises(DataError, match=r"No data folder given: pass --data-dir"):
        load_splits("miniimagenet")


# ----------------------------------------------------------------------- defaults


def test_every_dataset_has_defaults_that_build_its_model():
    assert set(DATASET_DEFAULTS) == set(DATASETS)
    for dataset in DATASETS:
        for ways, shots in ((5, 1), (5, 5), (20, 1)):
            d = dataset_defaults(dataset, ways, shots)
            assert not any(key.startswith("by_") for key in d)
            assert d["model"]["image_size"] == d["image_size"]
            Conv4(ways, **d["model"])  # the model the defaults describe can be built


def test_paper_settings():
    mini = dataset_defaults("miniimagenet", 5, 1)
    assert mini["model"] == {"in_channels": 3, "filters": 32, "image_size": 84, "max_pool": True}
    assert (mini["inner_lr"], mini["inner_steps"], mini["eval_steps"], mini["meta_batch"], mini["query"]) == (
        0.01, 5, 10, 4, 15)
    assert dataset_defaults("miniimagenet", 5, 5)["meta_batch"] == 2
    assert Conv4(5, **mini["model"]).features == 32 * 5 * 5
    omni5, omni20 = dataset_defaults("omniglot", 5, 1), dataset_defaults("omniglot", 20, 1)
    assert (omni5["inner_lr"], omni5["inner_steps"], omni5["eval_steps"], omni5["meta_batch"]) == (0.4, 1, 3, 32)
    assert (omni20["inner_lr"], omni20["inner_steps"], omni20["eval_steps"], omni20["meta_batch"]) == (0.1, 5, 5, 16)
    assert omni5["model"] == {"in_channels": 1, "filters": 64, "image_size": 28, "max_pool": False}
    omni5["model"]["filters"] = 1  # a copy: the table itself is untouched
    assert DATASET_DEFAULTS["omniglot"]["model"]["filters"] == 64
    with pytest.raises(ValueError, match="dataset_defaults: unknown dataset 'mnist'"):
        dataset_defaults("mnist")
