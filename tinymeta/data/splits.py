"""One entry point for every dataset: :func:`load_splits`, and each dataset's paper defaults.

``load_splits(dataset, data_dir, image_size, **options)`` returns a :class:`Splits`: the
meta-training, validation and test classes, ready for
:class:`tinymeta.tasks.EpisodeSampler`, with a fingerprint of the source files and a
JSON-ready ``info`` dict. Datasets and their options:

``omniglot`` (:mod:`.omniglot`; 28x28, ink = 1)
    ``split='maml'``: all 1623 characters shuffled with ``split_seed`` (0); the first
    ``n_train`` (1200) train, of which the last ``n_val`` (100) are held out for
    validation; the other 423 test. ``split='lake'``: background alphabets train (of
    which ``n_val`` characters, drawn with ``split_seed``, validate), evaluation alphabets
    test. ``rotations=True`` multiplies the training characters by four with 90-degree
    rotations (rotation-major: class ``k * n + i`` is class ``i`` turned ``k`` times).
    ``cache`` as in :func:`.load_omniglot`.
``miniimagenet`` (:mod:`.miniimagenet`; 3x84x84)
    Ravi & Larochelle's split; ``layout`` ``'pickle'``, ``'csv'`` or None (whichever is
    there), ``cache``.
``cifarfs`` (:mod:`.cifarfs`; 3x32x32)
    Bertinetto et al.'s split of CIFAR-100; ``split_dir`` (where the split files are).
``folder`` (:mod:`.folder`; 84x84 by default, grey or colour)
    ``data_dir`` is the image tree itself. ``ROOT/{train,val,test}/<class>/<image>``
    (``val`` optional) keeps that split; a plain ``ROOT/<class>/<image>`` has its classes
    shuffled with ``split_seed`` (0) and cut by ``fractions`` (0.64, 0.16, 0.20: the
    proportions of mini-ImageNet) into train, val and test, each kept in name order.
    ``channels`` (None, 1 or 3), ``min_images`` (drop classes with fewer images, with a
    warning; by default none is dropped and :class:`EpisodeSampler` refuses a class too
    small for an episode), ``cache``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from tinymeta.data.classes import ByClass, ImageClasses, class_sizes
from tinymeta.data.files import file_sha256, fingerprint
from tinymeta.data.folder import load_image_folder
from tinymeta.data.omniglot import SOURCE_FILES, augment_rotations, lake_split, load_omniglot, maml_split, omniglot_dir
from tinymeta.data.paths import DataError, PathLike

DATASETS = ("omniglot", "miniimagenet", "cifarfs", "folder")
SPLIT_NAMES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Splits:
    """The classes of each split, and what they were made from.

    ``train``, ``val``, ``test``: a class-major float32 array ``[n_classes, n_images,
    *image_shape]`` when every class of the split has the same number of images, else a
    list of per-class arrays ``[n_images_of_class, *image_shape]``; ``image_shape`` is
    ``[H, W]`` for grey, ``[3, H, W]`` for colour, values in ``[0, 1]``.

    ``fingerprint``: a short sha256 of the source files; it changes when they do.

    ``info``: ``dataset``, ``image_shape``, ``classes`` and ``images_per_class`` per split
    (an int, or a list when classes differ), ``source_files``, ``options`` (every option's
    value, defaults included), and ``class_names`` per split.
    """

    train: ByClass
    val: ByClass
    test: ByClass
    fingerprint: str
    info: Dict[str, Any]


def load_splits(dataset: str, data_dir: Optional[PathLike] = None, image_size: Optional[int] = None,
                **options: Any) -> Splits:
    """Load ``dataset``'s train / val / test classes (see the module docstring for options).

    Args:
        dataset: ``'omniglot'``, ``'miniimagenet'``, ``'cifarfs'`` or ``'folder'``.
        data_dir: the folder that contains the dataset's folder (``omniglot/``,
            ``miniimagenet/``, ``cifarfs/``); default ``$TINYMETA_DATA``. For ``'folder'``
            the image tree itself, which must be given.
        image_size: side of the square images; default ``DATASET_DEFAULTS[dataset]['image_size']``.

    Raises:
        DataError: files missing, unreadable or laid out wrongly (the message names them).
        ValueError: an unknown dataset or option, or a bad option value.
    """
    if dataset not in _LOADERS:
        raise ValueError(f"load_splits: unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    loader, defaults = _LOADERS[dataset]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"load_splits({dataset!r}): unknown option(s) {unknown}; it takes {sorted(defaults)}")
    chosen = {**defaults, **options}
    size = DATASET_DEFAULTS[dataset]["image_size"] if image_size is None else image_size
    parts, digest, sources = loader(data_dir, size, **chosen)
    return _splits(dataset, parts, digest, sources, {"image_size": size, **chosen})


def _splits(dataset: str, parts: Dict[str, Any], digest: str, sources: List[str], options: Dict[str, Any]) -> Splits:
    """Assemble :class:`Splits`; ``parts[split]`` has ``names`` and ``by_class()``."""
    by_class = {split: parts[split].by_class() for split in SPLIT_NAMES}
    shapes = set().union(*(_image_shapes(by_class[split]) for split in SPLIT_NAMES))
    if len(shapes) > 1:
        raise DataError(f"{dataset}: the splits hold images of different shapes {sorted(shapes)}.")
    sizes = {split: class_sizes(by_class[split]) for split in SPLIT_NAMES}
    info = {
        "dataset": dataset,
        "image_shape": list(shapes.pop()) if shapes else None,
        "classes": {split: len(sizes[split]) for split in SPLIT_NAMES},
        "images_per_class": {split: (sizes[split][0] if len(set(sizes[split])) == 1 else sizes[split])
                             for split in SPLIT_NAMES},
        "source_files": sources,
        "options": {key: (list(value) if isinstance(value, tuple) else value) for key, value in options.items()},
        "class_names": {split: list(parts[split].names) for split in SPLIT_NAMES},
    }
    return Splits(by_class["train"], by_class["val"], by_class["test"], digest, info)


def _image_shapes(by_class: ByClass) -> set:
    if isinstance(by_class, np.ndarray):
        return {tuple(by_class.shape[2:])} if len(by_class) else set()
    return {tuple(c.shape[1:]) for c in by_class}


@dataclasses.dataclass(frozen=True)
class Named:
    """Class-major images with a name per class (Omniglot's splits before conversion)."""

    names: Sequence[str]
    images: np.ndarray

    def by_class(self) -> np.ndarray:
        return self.images


# ---------------------------------------------------------------------------- omniglot


def _omniglot(data_dir, size, split, split_seed, n_val, n_train, rotations, cache):
    data = load_omniglot(data_dir, size=size, cache=cache)
    if split == "maml":
        chosen = maml_split(data, seed=split_seed, n_train=1200 if n_train is None else n_train, n_val=n_val)
        train, val, test = chosen.train, chosen.val, chosen.test
        train_ids, val_ids, test_ids = chosen.train_ids, chosen.val_ids, chosen.test_ids
    elif split == "lake":
        if n_train is not None:
            raise ValueError("load_splits('omniglot'): n_train applies to split='maml' only (Lake's split trains "
                             "on the background alphabets)")
        chosen = lake_split(data)
        order = np.random.default_rng(split_seed).permutation(len(chosen.train))
        held = min(n_val, len(order))
        keep, out = np.sort(order[held:]), np.sort(order[:held])
        train, val, test = chosen.train[keep], chosen.train[out], chosen.test
        train_ids, val_ids, test_ids = chosen.train_ids[keep], chosen.train_ids[out], chosen.test_ids
    else:
        raise ValueError(f"load_splits('omniglot'): split must be 'maml' or 'lake', got {split!r}")
    if rotations:
        train = augment_rotations(train)
        train_ids = np.array([f"{name}@rot{90 * k}" for k in range(4) for name in train_ids])
    train_ids = train_ids.tolist()
    folder = omniglot_dir(data_dir)
    paths = [folder / name for name in SOURCE_FILES.values()]
    digest = fingerprint("omniglot", [(path.name, file_sha256(path)) for path in paths])
    parts = {"train": Named(train_ids, train), "val": Named(val_ids.tolist(), val),
             "test": Named(test_ids.tolist(), test)}
    return parts, digest, [str(path) for path in paths]


# ------------------------------------------------------------------ mini-ImageNet, CIFAR-FS


def _miniimagenet(data_dir, size, layout, cache):
    from tinymeta.data.miniimagenet import load_miniimagenet
    return load_miniimagenet(data_dir, size=size, layout=layout, cache=cache)


def _cifarfs(data_dir, size, split_dir):
    from tinymeta.data.cifarfs import load_cifarfs
    return load_cifarfs(data_dir, size=size, split_dir=split_dir)


# ------------------------------------------------------------------------------ folder


def _folder(data_dir, size, channels, split_seed, fractions, min_images, cache):
    if data_dir is None:
        raise DataError("load_splits('folder') needs data_dir (--data-dir): the folder ROOT of ROOT/<class>/<image> "
                        "or ROOT/{train,val,test}/<class>/<image>.")
    root = pathlib.Path(data_dir).expanduser().resolve()
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _folder_presplit(root, size, channels, min_images, cache)

    classes, digest = load_image_folder(root, size, channels, cache)
    if min_images is not None:
        classes = classes.without_small_classes(min_images, str(root))
    counts = _split_counts(len(classes.names), fractions, root)
    order = np.random.default_rng(split_seed).permutation(len(classes.names))
    bounds = np.cumsum([0, *counts])
    parts = {split: classes.subset(np.sort(order[bounds[i]: bounds[i + 1]]).tolist())
             for i, split in enumerate(SPLIT_NAMES)}
    return parts, digest, [str(root)]


def _folder_presplit(root, size, channels, min_images, cache):
    def load(channels):
        loaded = {split: load_image_folder(root / split, size, channels, cache)
                  for split in SPLIT_NAMES if (root / split).is_dir()}
        return {split: classes for split, (classes, _) in loaded.items()}, {s: d for s, (_, d) in loaded.items()}

    parts, digests = load(channels)
    if channels is None and len({classes.image_shape for classes in parts.values()}) > 1:
        parts, digests = load(3)  # grey in one split, colour in another: colour everywhere
    if "val" not in parts:
        empty = parts["train"].images[:0]
        parts["val"] = ImageClasses((), np.zeros(0, dtype=np.int64), empty)
    if min_images is not None:
        parts = {split: classes.without_small_classes(min_images, str(root / split))
                 for split, classes in parts.items()}
    return parts, fingerprint("folder", digests.items()), [str(root / split) for split in digests]


def _split_counts(n_classes: int, fractions: Sequence[float], root) -> List[int]:
    """Classes for train / val / test from the fractions (rounded; test takes the rest)."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"load_splits('folder'): fractions must be three non-negative numbers (train, val, test) "
                         f"summing to 1, got {fractions}")
    n_train, n_val = round(fractions[0] * n_classes), round(fractions[1] * n_classes)
    n_test = n_classes - n_train - n_val
    if n_train < 1 or n_test < 1:
        raise DataError(f"{root} has {n_classes} classes, too few to split into train / val / test with fractions "
                        f"{fractions}: train and test each need at least one class.")
    return [n_train, n_val, n_test]


# ---------------------------------------------------------------------------- registry

_LOADERS: Dict[str, tuple] = {
    "omniglot": (_omniglot, {"split": "maml", "split_seed": 0, "n_val": 100, "n_train": None, "rotations": True,
                             "cache": True}),
    "miniimagenet": (_miniimagenet, {"layout": None, "cache": True}),
    "cifarfs": (_cifarfs, {"split_dir": None}),
    "folder": (_folder, {"channels": None, "split_seed": 0, "fractions": (0.64, 0.16, 0.20), "min_images": None,
                         "cache": True}),
}


# --------------------------------------------------------------------------- defaults

#: The papers' training settings per dataset (MAML family). ``by_ways`` and ``by_shots``
#: override the base values: see :func:`dataset_defaults` for the rule.
DATASET_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "omniglot": {
        "source": "Finn et al. 2017, Section 5.2 and Appendix A.1",
        "image_size": 28,
        "model": {"in_channels": 1, "filters": 64, "image_size": 28, "max_pool": False},
        "inner_lr": 0.4, "inner_steps": 1, "eval_steps": 3, "meta_batch": 32,
        "query": 15, "meta_lr": 1e-3, "iterations": 60000,
        "by_ways": {20: {"inner_lr": 0.1, "inner_steps": 5, "eval_steps": 5, "meta_batch": 16}},
        "by_shots": {},
    },
    "miniimagenet": {
        "source": "Finn et al. 2017, Section 5.2 and Appendix A.1",
        "image_size": 84,
        "model": {"in_channels": 3, "filters": 32, "image_size": 84, "max_pool": True},
        "inner_lr": 0.01, "inner_steps": 5, "eval_steps": 10, "meta_batch": 4,
        "query": 15, "meta_lr": 1e-3, "iterations": 60000,
        "by_ways": {},
        "by_shots": {5: {"meta_batch": 2}},
    },
    "cifarfs": {
        "source": "no MAML-paper setting: mini-ImageNet's, on 32x32 images",
        "image_size": 32,
        "model": {"in_channels": 3, "filters": 32, "image_size": 32, "max_pool": True},
        "inner_lr": 0.01, "inner_steps": 5, "eval_steps": 10, "meta_batch": 4,
        "query": 15, "meta_lr": 1e-3, "iterations": 60000,
        "by_ways": {},
        "by_shots": {5: {"meta_batch": 2}},
    },
    "folder": {
        "source": "no paper: mini-ImageNet's settings; in_channels follows the images (info['image_shape'])",
        "image_size": 84,
        "model": {"in_channels": 3, "filters": 32, "image_size": 84, "max_pool": True},
        "inner_lr": 0.01, "inner_steps": 5, "eval_steps": 10, "meta_batch": 4,
        "query": 15, "meta_lr": 1e-3, "iterations": 60000,
        "by_ways": {},
        "by_shots": {5: {"meta_batch": 2}},
    },
}


def dataset_defaults(dataset: str, ways: int = 5, shots: int = 1) -> Dict[str, Any]:
    """The flat defaults of ``dataset`` for ``ways``-way ``shots``-shot training.

    Starts from the base values of :data:`DATASET_DEFAULTS`, then applies the ``by_ways``
    entry with the largest key ``<= ways`` and the ``by_shots`` entry with the largest key
    ``<= shots`` (e.g. Omniglot 20-way settings for ``ways >= 20``, mini-ImageNet's
    meta-batch 2 for ``shots >= 5``). The result has no ``by_*`` keys; ``model`` is a
    dict of ``Conv4`` keyword arguments.
    """
    if dataset not in DATASET_DEFAULTS:
        raise ValueError(f"dataset_defaults: unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    table = DATASET_DEFAULTS[dataset]
    flat = {key: (dict(value) if isinstance(value, dict) else value)
            for key, value in table.items() if not key.startswith("by_")}
    for key, value in (("by_ways", ways), ("by_shots", shots)):
        fitting = [k for k in table[key] if k <= value]
        if fitting:
            flat.update(table[key][max(fitting)])
    return flat
