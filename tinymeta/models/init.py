"""Weight initialisers of the original MAML code (Finn et al., 2017, github.com/cbfinn/maml),
and the forward-pass modes every model accepts."""
import numpy as np


def truncated_normal(rng, shape, std):
    """N(0, std²) redrawn outside ±2 std (TensorFlow's truncated_normal), used for the MLP."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * std


def glorot_uniform(rng, shape):
    """U(±√(6/(fan_in + fan_out))) (Xavier), used for the conv and head weights.

    For a conv weight (out, in, kh, kw): fan_in = in·kh·kw, fan_out = out·kh·kw.
    """
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    fan_out, fan_in = shape[0] * receptive, shape[1] * receptive
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


MODES = ("train", "adapt", "test")


def check_mode(model, mode):
    """The forward-pass modes every model takes (see ``tinymeta.algorithms.base``)."""
    if mode not in MODES:
        raise ValueError(f"{model}: mode must be one of {', '.join(MODES)}, got {mode!r}")
