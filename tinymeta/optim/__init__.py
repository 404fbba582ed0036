"""Outer-loop optimizers on a parameter collection, with state that can be saved and restored."""
from .sgd import SGD
from .adam import Adam, adam_update
from .clip import clip_by_global_norm
