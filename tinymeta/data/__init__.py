"""Datasets: where they live on disk (:mod:`.paths`) and Omniglot (:mod:`.omniglot`)."""

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
]
