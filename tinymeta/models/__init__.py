"""Models with explicit parameters: ``model.init(rng)`` makes θ, ``model(params, x)`` runs it."""
from .mlp import MLP
from .conv4 import Conv4
