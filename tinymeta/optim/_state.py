"""Flattening optimizer state into plain arrays (for .npz checkpoints) and back."""
import numpy as np

from autograd import backend


def arrays_to_state(prefix, arrays):
    return {f"{prefix}/{k}": np.array(backend.to_numpy(v)) for k, v in arrays.items()}   # a snapshot


def arrays_from_state(prefix, state):
    start = prefix + "/"
    return {k[len(start):]: backend.xp.array(backend.to_numpy(v)) for k, v in state.items() if k.startswith(start)}


def check_grads(op, params, grads):
    missing = [k for k in params if k not in grads or grads[k] is None]
    if missing:
        raise ValueError(f"{op}.step: no gradient for parameters {missing}")
    for k, p in params.items():
        if grads[k].shape != p.shape:
            raise ValueError(f"{op}.step: gradient for {k!r} has shape {tuple(grads[k].shape)}, "
                             f"parameter has {tuple(p.shape)}")
