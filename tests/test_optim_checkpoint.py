"""Outer-loop optimizers (SGD, SGD with momentum, Adam) against hand-written reference
updates, their state_dict round trip, and ``tinymeta.checkpoint``.

Tolerances (float64): SGD reference updates are the same arithmetic, compared with
rtol 1e-14; Adam's reference is the textbook θ − η m̂/(√v̂ + ε) while the library uses the
algebraically equal folded form of Kingma & Ba §2 (η√(1−β₂ᵗ)/(1−β₁ᵗ), ε√(1−β₂ᵗ)), so
rtol 1e-12 (rounding only). Resuming from a state_dict / checkpoint must be bit-for-bit
(``np.array_equal``): it replays the identical arithmetic.
"""
import json
import os

import numpy as np
import pytest

from autograd import Tensor
from helpers import host
from tinymeta import checkpoint
from tinymeta.optim import SGD, Adam, clip_by_global_norm


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": Tensor(rng.standard_normal((3, 4)), requires_grad=True),
            "b": Tensor(rng.standard_normal(4), requires_grad=True),
            "s": Tensor(rng.standard_normal(()), requires_grad=True)}


def grad_sequence(params, n, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: Tensor(rng.standard_normal(p.shape)) for k, p in params.items()} for _ in range(n)]


def arrays(params):
    return {k: host(p).copy() for k, p in params.items()}


# ----------------------------------------------------------------------------- reference updates
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_matches_reference(momentum):
    params = make_params()
    ref = arrays(params)
    vel = {k: np.zeros_like(a) for k, a in ref.items()}
    lr = 0.05
    opt = SGD(params, lr=lr, momentum=momentum)
    for g in grad_sequence(params, 5):
        opt.step(g)
        for k in ref:
            if momentum:
                vel[k] = momentum * vel[k] + host(g[k])            # v ← μv + g
                ref[k] = ref[k] - lr * vel[k]                   # θ ← θ − ηv
            else:
                ref[k] = ref[k] - lr * host(g[k])              # θ ← θ − ηg
        for k in ref:
            np.testing.assert_allclose(host(params[k]), ref[k], rtol=1e-14, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.0, 0.99), 1e-3), ((0.5, 0.9), 0.0)])
def test_adam_matches_reference(betas, eps):
    params = make_params()
    ref = arrays(params)
    m = {k: np.zeros_like(a) for k, a in ref.items()}
    v = {k: np.zeros_like(a) for k, a in ref.items()}
    lr, (b1, b2) = 0.01, betas
    opt = Adam(params, lr=lr, betas=betas, eps=eps)
    for t, g in enumerate(grad_sequence(params, 6), start=1):
        opt.step(g)
        for k in ref:
            m[k] = b1 * m[k] + (1 - b1) * host(g[k])
            v[k] = b2 * v[k] + (1 - b2) * host(g[k]) ** 2
            m_hat, v_hat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
            ref[k] = ref[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
            np.testing.assert_allclose(host(params[k]), ref[k], rtol=1e-12, atol=1e-14, err_msg=k)
        assert opt.t == t


def test_adam_first_step_moves_by_learning_rate():
    """Bias correction: the first step is η·g/(|g| + ε) ≈ η·sign(g) whatever the scale of g."""
    params = make_params()
    before = arrays(params)
    opt = Adam(params, lr=0.01)
    g = {k: Tensor(1e-3 * np.sign(host(p)) + 0 * host(p)) for k, p in params.items()}
    opt.step(g)
    for k in params:
        np.testing.assert_allclose(before[k] - host(params[k]), 0.01 * np.sign(before[k]) * (1e-3 / (1e-3 + 1e-8)),
                                   rtol=1e-12)


def test_clip_by_global_norm_scales_only_above_the_bound():
    grads = {"a": Tensor(np.array([3.0])), "b": Tensor(np.array([[0.0, 4.0]]))}     # ‖g‖ = 5
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(host(clipped["a"]), [0.6], rtol=1e-15)
    np.testing.assert_allclose(host(clipped["b"]), [[0.0, 0.8]], rtol=1e-15)
    same, norm = clip_by_global_norm(grads, 5.0)
    assert norm == 5.0 and same is grads


def test_a_learner_with_clip_norm_steps_with_the_clipped_gradient():
    from autograd import functional as F
    from tinymeta.algorithms import MAML
    from tinymeta.models import MLP
    from tinymeta.tasks import SinusoidSampler, SinusoidTasks
    batch = SinusoidSampler(SinusoidTasks(), 5, 5, rng=0, dtype=np.float64).sample_batch(2)
    model = MLP([1, 8, 1])
    params = model.init(np.random.default_rng(0), np.float64)
    free = MAML(model, params, F.mse_loss, inner_lr=0.01)
    _loss, grads = free.meta_gradients(batch)
    expected, norm = clip_by_global_norm(grads, 1e-3)
    assert norm > 1e-3                                          # the bound binds
    start = {k: host(p).copy() for k, p in params.items()}
    learner = MAML(model, params, F.mse_loss, inner_lr=0.01, optimizer=lambda p: SGD(p, lr=1.0))
    learner.clip_norm = 1e-3
    learner.step(batch)
    for k in params:                                            # θ ← θ − 1.0 · clip(g)
        np.testing.assert_allclose(host(params[k]), start[k] - host(expected[k]), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("cls,kwargs", [(SGD, {"lr": 0.0}), (SGD, {"lr": -1.0}), (Adam, {"lr": 0.0})])
def test_nonpositive_learning_rate_rejected(cls, kwargs):
    with pytest.raises(ValueError, match="learning rate"):
        cls(make_params(), **kwargs)


# ----------------------------------------------------------------------------- state_dict resume
OPTIMIZERS = {
    "sgd": lambda p: SGD(p, lr=0.05),
    "momentum": lambda p: SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: Adam(p, lr=0.01, betas=(0.8, 0.95), eps=1e-7),
}


def resume_state(sd):
    """Split a state_dict into checkpoint arrays and JSON meta, as a training script would."""
    arrays_ = {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in sd.items() if not isinstance(v, np.ndarray)}
    return arrays_, meta


@pytest.mark.parametrize("via_file", [False, True])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_resume_is_bit_for_bit(name, via_file, tmp_path):
    grads = grad_sequence(make_params(), 8)
    # uninterrupted run
    p_full = make_params()
    full = OPTIMIZERS[name](p_full)
    for g in grads:
        full.step(g)
    # interrupted after 3 steps: save θ and the optimizer state, restore into fresh objects
    p_a = make_params()
    a = OPTIMIZERS[name](p_a)
    for g in grads[:3]:
        a.step(g)
    sd = a.state_dict()
    theta = arrays(p_a)
    if via_file:
        arrs, meta = resume_state(sd)
        checkpoint.save(tmp_path / "ckpt.npz", {**checkpoint.join("params", theta), **checkpoint.join("opt", arrs)},
                        {"opt": meta})
        loaded, meta = checkpoint.load(tmp_path / "ckpt.npz")
        theta = checkpoint.split(loaded, "params")
        sd = {**checkpoint.split(loaded, "opt"), **meta["opt"]}
    del a, p_a
    p_b = {k: Tensor(v.copy(), requires_grad=True) for k, v in theta.items()}
    b = OPTIMIZERS[name](p_b)
    b.load_state_dict(sd)
    for g in grads[3:]:
        b.step(g)
    for k in p_full:
        assert np.array_equal(host(p_b[k]), host(p_full[k])), k
    # and the restored state itself is equal
    s_full, s_b = full.state_dict(), b.state_dict()
    assert set(s_full) == set(s_b)
    for k in s_full:
        assert np.array_equal(s_full[k], s_b[k]), k


def test_load_state_dict_restores_hyperparameters():
    a = Adam(make_params(), lr=0.123, betas=(0.7, 0.77), eps=1e-5)
    b = Adam(make_params(), lr=1.0)
    b.load_state_dict(a.state_dict())
    assert (b.lr, b.betas, b.eps, b.t) == (0.123, (0.7, 0.77), 1e-5, 0)
    s = SGD(make_params(), lr=1.0)
    s.load_state_dict(SGD(make_params(), lr=0.3, momentum=0.5).state_dict())
    assert (s.lr, s.momentum) == (0.3, 0.5)


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_state_dict_is_a_snapshot(name):
    params = make_params()
    opt = OPTIMIZERS[name](params)
    g1, g2 = grad_sequence(params, 2)
    opt.step(g1)
    sd = opt.state_dict()
    saved = {k: np.array(v, copy=True) for k, v in sd.items() if isinstance(v, np.ndarray)}
    opt.step(g2)
    for k, v in saved.items():
        assert np.array_equal(sd[k], v), f"state_dict entry {k!r} changed after a later step"


# ----------------------------------------------------------------------------- gradient errors
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_step_with_missing_gradient_raises(name):
    params = make_params()
    opt = OPTIMIZERS[name](params)
    before = arrays(params)
    g = grad_sequence(params, 1)[0]
    for broken in ({k: v for k, v in g.items() if k != "b"}, {**g, "b": None}):
        with pytest.raises(ValueError, match=r"no gradient for parameters \['b'\]"):
            opt.step(broken)
    for k in params:                                   # nothing was updated
        assert np.array_equal(host(params[k]), before[k]), k


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_step_with_wrong_shaped_gradient_raises(name):
    params = make_params()
    opt = OPTIMIZERS[name](params)
    before = arrays(params)
    g = grad_sequence(params, 1)[0]
    g["w"] = Tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"gradient for 'w' has shape \(4, 3\), parameter has \(3, 4\)"):
        opt.step(g)
    for k in params:
        assert np.array_equal(host(params[k]), before[k]), k


# ----------------------------------------------------------------------------- checkpoint files
def sample_arrays():
    rng = np.random.default_rng(7)
    return {"params/w": rng.standard_normal((3, 4)),
            "params/b": rng.standard_normal(4).astype(np.float32),
            "count": np.arange(5, dtype=np.int64),
            "scalar": np.array(2.5),
            "empty": np.zeros((0, 3))}


def test_checkpoint_round_trip_with_generator_state(tmp_path):
    rng = np.random.default_rng(2024)
    rng.random(17)                                       # advance: a non-trivial state
    state = rng.bit_generator.state
    meta = {"step": 12, "lr": 1e-3, "name": "run ünïcode", "nested": {"list": [1, 2.5, None, True]},
            "rng": state}
    arrs = sample_arrays()
    path = checkpoint.save(tmp_path / "sub" / "ckpt.npz", arrs, meta)
    assert path == tmp_path / "sub" / "ckpt.npz" and path.is_file()
    loaded, meta2 = checkpoint.load(path)
    assert set(loaded) == set(arrs)
    for k, v in arrs.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape, k
        assert np.array_equal(loaded[k], v), k
    assert meta2 == json.loads(json.dumps(meta))
    assert meta2["rng"] == state                         # 128-bit integers survive JSON
    restored = np.random.default_rng()
    restored.bit_generator.state = meta2["rng"]
    assert np.array_equal(restored.random(10), rng.random(10))
    assert os.listdir(tmp_path / "sub") == ["ckpt.npz"]  # no temporary left behind


def test_checkpoint_overwrite(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, {"a": np.zeros(2)}, {"v": 1})
    checkpoint.save(path, {"b": np.ones(3)}, {"v": 2})
    loaded, meta = checkpoint.load(path)
    assert set(loaded) == {"b"} and meta == {"v": 2}
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_checkpoint_split_join():
    arrs = {"x": np.zeros(1), "y": np.ones(2)}
    joined = checkpoint.join("opt", arrs)
    assert set(joined) == {"opt/x", "opt/y"}
    assert checkpoint.split({**joined, "other/x": np.zeros(3), "optx": np.zeros(1)}, "opt").keys() == arrs.keys()


@pytest.mark.parametrize("exc", [OSError("disk full (simulated)"), KeyboardInterrupt()])
def test_checkpoint_write_is_atomic(tmp_path, monkeypatch, exc):
    path = tmp_path / "ckpt.npz"
    old_arrays, old_meta = {"w": np.arange(6.0).reshape(2, 3)}, {"step": 1}
    checkpoint.save(path, old_arrays, old_meta)
    old_bytes = path.read_bytes()
    real_savez = np.savez

    def crashing_savez(file, **payload):
        real_savez(file, **payload)                     # write most of the new file ...
        file.truncate(file.tell() // 2)                 # ... leave it half-written ...
        raise exc                                       # ... and die mid-way
    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(type(exc)):
        checkpoint.save(path, {"w": np.ones((50, 50))}, {"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes               # the previous checkpoint is intact
    loaded, meta = checkpoint.load(path)
    assert np.array_equal(loaded["w"], old_arrays["w"]) and meta == old_meta
    assert os.listdir(tmp_path) == ["ckpt.npz"], "a temporary file was left behind"


def test_checkpoint_unserialisable_meta_leaves_previous(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, {"w": np.zeros(2)}, {"step": 1})
    with pytest.raises(TypeError):
        checkpoint.save(path, {"w": np.ones(2)}, {"step": object()})
    assert checkpoint.load(path)[1] == {"step": 1}
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_checkpoint_reserved_name_rejected(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="reserved"):
        checkpoint.save(tmp_path / "c.npz", {"__meta__": np.zeros(1)}, {})
    assert not (tmp_path / "c.npz").exists()


def test_checkpoint_missing_file(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such file"):
        checkpoint.load(tmp_path / "nope.npz")
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="no such file"):
        checkpoint.load(tmp_path / "dir.npz")


@pytest.mark.parametrize("keep", [0, 10, 0.5, 0.9])
def test_checkpoint_truncated_file(tmp_path, keep):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, {"w": np.random.default_rng(0).standard_normal((40, 40))}, {"step": 3})
    data = path.read_bytes()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    path.write_bytes(data[:n])
    with pytest.raises(checkpoint.CheckpointError, match="not a readable tinymeta checkpoint"):
        checkpoint.load(path)


def test_checkpoint_rejects_foreign_files(tmp_path):
    npz = tmp_path / "plain.npz"
    np.savez(npz, w=np.zeros(3))                        # a valid npz, but not ours
    with pytest.raises(checkpoint.CheckpointError, match="not a tinymeta checkpoint"):
        checkpoint.load(npz)
    npy = tmp_path / "plain.npy"
    np.save(npy, np.zeros(3))                           # a bare .npy array
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(npy)
    txt = tmp_path / "notes.npz"
    txt.write_text("hello")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable"):
        checkpoint.load(txt)


def test_checkpoint_loads_without_pickle(tmp_path):
    """An object array (which would need pickle) is refused with a clear error."""
    path = tmp_path / "evil.npz"
    np.savez(path, __meta__=np.array("{}"), obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(checkpoint.CheckpointError, match="not a readable"):
        checkpoint.load(path)
