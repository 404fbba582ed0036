"""The experiments' recipes: JSON files of options beside this module, one per setting of a
paper. An experiment's defaults are read from its recipe, ``--config FILE.json`` reads the
same files, and the bench imports them, so each number is written once.

    sinusoid_maml_paper.json      MAML paper, Section 5.1 (experiments/sinusoid.py)
    omniglot_5w1s_maml.json       MAML paper, Section 5.2, 5-way 1-shot (experiments/omniglot.py)
    omniglot_5w1s_reptile.json    Reptile paper, Omniglot 5-way 1-shot (experiments/omniglot.py)
    miniimagenet_5w1s_maml.json   MAML paper's mini-ImageNet network and inner loop (bench only)

A recipe is a JSON object of option names and values; its ``"comment"`` says where the
numbers come from and is not an option.
"""
import json
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def path(name):
    """The file of the recipe ``name``."""
    return FOLDER / f"{name}.json"


def load(name):
    """The options of the recipe ``name`` as a dict (its comment left out)."""
    options = json.loads(path(name).read_text())
    options.pop("comment", None)
    return options
