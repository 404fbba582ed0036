"""Datasets: one entry point, :func:`load_splits`, for every dataset the experiments use.

* :mod:`.splits`: ``load_splits(dataset, data_dir, image_size, **options) -> Splits``,
  ``DATASET_DEFAULTS`` and :func:`dataset_defaults` (the papers' settings per dataset);
* :mod:`.omniglot` (the prepared arrays) and :mod:`.omniglot_zips` (the official zips,
  turned into those arrays by ``python -m tinymeta.data.prepare omniglot``);
* :mod:`.miniimagenet`, :mod:`.cifarfs`, :mod:`.folder` (``ROOT/<class>/<image>``);
* shared pieces: :mod:`.paths` (where data and caches live, :class:`DataError`),
  :mod:`.images` (decoding, area resizing), :mod:`.classes` (:class:`ImageClasses`),
  :mod:`.files` (hashes, atomic writes), :mod:`.safe_pickle` (pickles that cannot run code).

See ``docs/data.md`` for how to get and lay out each dataset.
"""

from tinymeta.data.paths import DataError, cache_dir, resolve_data_dir
from tinymeta.data.omniglot import (
    LakeRun,
    OmniglotSplit,
    augment_rotations,
    character_ids,
    lake_split,
    load_lake_runs,
    load_omniglot,
    maml_split,
)
from tinymeta.data.classes import ImageClasses
from tinymeta.data.splits import DATASET_DEFAULTS, DATASETS, Splits, dataset_defaults, load_splits

__all__ = [
    "DataError",
    "cache_dir",
    "resolve_data_dir",
    "LakeRun",
    "OmniglotSplit",
    "augment_rotations",
    "character_ids",
    "lake_split",
    "load_lake_runs",
    "load_omniglot",
    "maml_split",
    "ImageClasses",
    "DATASET_DEFAULTS",
    "DATASETS",
    "Splits",
    "dataset_defaults",
    "load_splits",
]
