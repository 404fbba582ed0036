"""Meta Networks (Munkhdalai & Yu 2017): every new op and layer against finite differences to
first and second order (float64, relative error ≤ 1e-6, ``autograd.gradcheck``'s bound);
layer augmentation and ceil-mode pooling against their definitions in NumPy; the attention
read against a hand computation (weights sum to one, W* = aᵀM) inside the learner; the
per-example and per-chunk support gradients against one-at-a-time gradients; the meta-loss
against finite differences with respect to every parameter group (the support gradients held
fixed, as the method treats them); the learner contract; and the experiment end to end on
Omniglot at tiny sizes, killed and resumed (skipped without the data, see conftest)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autograd import Tensor, backend, gradcheck, gradgradcheck
from autograd import functional as F
from autograd.functional import Labels
from autograd.ops import mean
from experiments import omniglot
from tinymeta import checkpoint
from tinymeta.algorithms import MetaNet, MetaNetModel
from tinymeta.algorithms.lstm_meta import preprocess
from tinymeta.algorithms.metanet import K, augmented_conv, augmented_linear, coordinate_lstm, coordinate_mlp
from tinymeta.tasks import EpisodeSampler
from helpers import host

REPO = Path(__file__).resolve().parents[1]
H = 1e-5          # finite-difference step: ReLU networks need one far below the kinks' distance


def relu(z):
    return np.maximum(z, 0.0)


def conv_ref(x, w):
    """3×3 convolution, padding 1, no bias, by loops: x (N, C, H, W), w (O, C, 3, 3)."""
    N, C, Hh, W = x.shape
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((N, w.shape[0], Hh, W))
    for i in range(Hh):
        for j in range(W):
            out[:, :, i, j] = np.einsum("ncij,ocij->no", p[:, :, i:i + 3, j:j + 3], w)
    return out


def pool_ref(x):
    """2×2 max-pool in ceil mode: the last window of an odd side holds one row/column."""
    Hh, W = x.shape[-2:]
    out = np.zeros(x.shape[:-2] + ((Hh + 1) // 2, (W + 1) // 2))
    for i in range(out.shape[-2]):
        for j in range(out.shape[-1]):
            out[..., i, j] = x[..., 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(-2, -1))
    return out


def tiny(ways=2, blocks=2, seed=0):
    """A tiny float64 MetaNet (3 filters, 5×5 images) with every parameter random and nonzero
    (the zero-initialised output layers of m and d too), and a sampler of its tasks."""
    rng = np.random.default_rng(seed)
    model = MetaNetModel(ways, in_channels=1, filters=3, image_size=5, blocks=blocks, hidden=4)
    params = model.init(rng, dtype=np.float64)
    for v in params.values():
        v.data[...] = backend.from_numpy(rng.standard_normal(v.shape) * 0.7)
    data = rng.standard_normal((4, 6, 1, 5, 5))
    sampler = EpisodeSampler(data, ways=ways, shots=1, queries=2, rng=seed, dtype=np.float64)
    return model, params, sampler


# --- ops and layers, first and second order -----------------------------------------------

@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
@pytest.mark.parametrize("fast", [False, True])
def test_augmented_conv_first_and_second_order(check, fast):
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((2, 1, 2, 5, 3)), rng.standard_normal((3, 2, 3, 3))]   # odd sides: ceil pool
    if fast:
        inputs.append(rng.standard_normal((2, 3, 2, 3, 3)))
    check(augmented_conv, inputs, h=H)


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
@pytest.mark.parametrize("nonlinear", [False, True])
def test_augmented_linear_first_and_second_order(check, nonlinear):
    rng = np.random.default_rng(3)
    check(lambda h, w, wf: augmented_linear(h, w, wf, nonlinear),
          [rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((2, 5, 4))], h=H)


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_coordinate_mlp_and_lstm_first_and_second_order(check):
    rng = np.random.default_rng(4)
    g = [Tensor.constant(backend.from_numpy(rng.standard_normal((6, 2)))) for _ in range(3)]
    mlp = [rng.standard_normal(s) for s in ((3, 2), (3,), (3, 3), (3,), (1, 3), (1,))]
    check(lambda *p: coordinate_mlp(g[0], dict(zip(("w1", "b1", "w2", "b2", "w3", "b3"), p))), mlp, h=H)
    lstm = [rng.standard_normal(s) for s in ((12, 2), (12, 3), (12,), (1, 3), (1,))]
    check(lambda *p: coordinate_lstm(g, dict(zip(("w_ih", "w_hh", "b", "out_w", "out_b"), p))), lstm)


# --- layer augmentation and pooling by their definitions ----------------------------------

def test_layer_augmentation_against_its_definition():
    rng = np.random.default_rng(5)
    x, w, wf = rng.standard_normal((2, 3, 2, 7, 5)), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((2, 4, 2, 3, 3))
    got = host(augmented_conv(Tensor(x), Tensor(w), Tensor(wf)))
    for g in range(2):              # pool(relu(W ∗ h) + relu(W*_g ∗ h)), W shared, W*_g per group
        expected = pool_ref(relu(conv_ref(x[g], w)) + relu(conv_ref(x[g], wf[g])))
        np.testing.assert_allclose(got[g], expected, rtol=1e-12, atol=1e-12)
    assert got.shape == (2, 3, 4, 4, 3)
    h, v, vf = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((2, 5, 4))
    for nonlinear, act in ((True, relu), (False, lambda z: z)):
        got = host(augmented_linear(Tensor(h), Tensor(v), Tensor(vf), nonlinear))
        np.testing.assert_allclose(got, act(h @ v.T) + act(np.einsum("gnd,god->gno", h, vf)), rtol=1e-12)


# --- the support gradients ----------------------------------------------------------------

def test_support_gradients_are_each_examples_and_each_chunks_own():
    model, params, sampler = tiny(ways=3)
    learner = MetaNet(model, params, chunks=2)
    batch = sampler.sample_batch(2)
    pre = learner.support_gradients(params, batch)
    convs, fcs = model.names("b")
    T, N = batch.support_y.shape
    rows = []
    for t in range(T):
        for i in range(N):          # ∇_W L_i of one example, computed alone
            p = {k: Tensor(params[k].data, requires_grad=True) for k in convs + fcs}
            x = Tensor(batch.support_x[t, i][None, None])
            loss = F.cross_entropy(model.base(p, x), Labels(batch.support_y[t, i].reshape(1, 1)))
            loss.backward()
            rows.append(np.concatenate([host(p[k].grad).ravel() for k in convs + fcs]))
    expected = np.stack(preprocess(np.stack(rows), K), axis=-1)                 # (T·N, P, 2)
    got = np.concatenate([host(pre["b.conv"]).reshape(T * N, -1, 2), host(pre["b.fc"]).reshape(T * N, -1, 2)], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    convs, fcs = model.names("u")
    assert len(pre["u.conv"]) == 2                                              # chunks {0, 1}, {2}
    for k, idx in enumerate(([0, 1], [2])):
        for t in range(T):          # ∇_Q L_k of one task's chunk, computed alone
            p = {n: Tensor(params[n].data, requires_grad=True) for n in convs + fcs}
            logits = model.representation_logits(p, Tensor(batch.support_x[t, idx][None]))
            mean(F.cross_entropy(logits, Labels(batch.support_y[t, idx][None]), reduction="none")).backward()
            g = np.concatenate([host(p[n].grad).ravel() for n in convs])
            np.testing.assert_allclose(host(pre["u.conv"][k]).reshape(T, -1, 2)[t], np.stack(preprocess(g, K), -1),
                                       rtol=1e-10, atol=1e-12)


# --- the attention read -------------------------------------------------------------------

def test_attention_read_by_hand():
    model, params, sampler = tiny(ways=2)
    learner = MetaNet(model, params)
    batch = sampler.sample_batch(2)
    pre = learner.support_gradients(params, batch)
    Q_star, R, M = learner.fast_weights(params, batch, pre)
    r = host(model.key(params, Tensor(batch.query_x), Q_star))                # (T, L, D)
    R, M = host(R), host(M)
    cos = np.einsum("tld,tnd->tln", r, R) / (np.linalg.norm(r, axis=-1)[..., None] * np.linalg.norm(R, axis=-1)[:, None])
    a = np.exp(cos) / np.exp(cos).sum(-1, keepdims=True)                       # a = softmax(cos(R, r))
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-12)
    W_star = np.einsum("tln,tnp->tlp", a, M)                                   # W* = aᵀM
    got = host(learner.logits_given(params, batch, pre))
    convs, fcs = model.names("b")
    T, L = batch.query_y.shape
    for t in range(T):
        for j in range(L):
            fast, start = {}, 0
            for k in convs + fcs:
                size = int(np.prod(params[k].shape))
                fast[k] = Tensor(W_star[t, j, start:start + size].reshape((1,) + params[k].shape))
                start += size
            expected = host(model.base(params, Tensor(batch.query_x[t, j][None, None]), fast))[0, 0]
            np.testing.assert_allclose(got[t, j], expected, rtol=1e-6, atol=1e-9)


# --- the meta-loss against finite differences -----------------------------------------------

def test_meta_loss_gradient_with_respect_to_every_parameter_group():
    """The support gradients are constants of the method (the official code's), so the
    meta-loss is checked as a function of the parameters with them held at their values,
    along two random directions per parameter (``gradcheck(directions=2)``), ≤ 1e-6. Seed 1:
    a tiny network where every parameter reaches the loss (in some, d.fc's output bias only
    shifts every logit alike)."""
    model, params, sampler = tiny(ways=2, seed=1)
    learner = MetaNet(model, params)
    batch = sampler.sample_batch(2)
    pre = learner.support_gradients(params, batch)
    names = list(params)
    groups = {n.split(".")[0] for n in names}
    assert groups == {"b", "u", "m", "d"}

    def meta_loss(*values):
        logits = learner.logits_given(dict(zip(names, values)), batch, pre)
        return mean(F.cross_entropy(logits, Labels(batch.query_y), reduction="none"))
    gradcheck(meta_loss, [params[k] for k in names], h=H, directions=2)
    loss, grads = learner.meta_gradients(batch)                                # the learner's own gradient
    np.testing.assert_allclose(host(loss), host(meta_loss(*[params[k] for k in names])), rtol=1e-12)
    assert all(float(np.abs(host(g)).max()) > 0 for g in grads.values())


# --- the learner contract -----------------------------------------------------------------

def test_learner_contract():
    model, params, sampler = tiny(ways=2)
    learner = MetaNet(model, params, clip_norm=0.5)
    batch = sampler.sample_batch(3)
    before = learner.evaluate(batch, steps=2)
    assert before["loss"].shape == before["accuracy"].shape == (3, 3)
    assert (before["loss"][0] == before["loss"][2]).all()
    fast = learner.adapt(batch)
    assert host(fast["M"]).shape == (3, 2, sum(int(np.prod(params[k].shape)) for k in sum(model.names("b"), [])))
    assert host(fast["R"]).shape == (3, 2, 3) and host(fast["Q*"]["u.conv0"]).shape == (3, 3, 1, 3, 3)
    saved = learner.state_dict()
    metrics = learner.step(batch)
    np.testing.assert_allclose(metrics["loss"], before["loss"][0].mean(), rtol=1e-10)
    changed = [k for k in params if not np.array_equal(host(params[k]), saved["params"][k])]
    assert set(changed) == set(params)
    other_model, other, _ = tiny(ways=2, seed=9)                               # other weights, other fixed classifier
    restored = MetaNet(other_model, other)
    restored.load_state_dict(saved)
    np.testing.assert_array_equal(restored.evaluate(batch)["loss"], before["loss"][:1])


# --- the experiment -----------------------------------------------------------------------

TINY = ["--algo", "metanet", "--filters", "4", "--query", "1", "--test-query", "1", "--val-tasks", "2",
        "--val-every", "2", "--checkpoint-every", "2", "--iterations", "4", "--quiet"]


def start(out, data_dir, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != omniglot.KILL_ENV}
    if kill_at:
        env[omniglot.KILL_ENV] = str(kill_at)
    return subprocess.Popen([sys.executable, "-m", "experiments.omniglot", *TINY, "--out", str(out),
                             "--data-dir", str(data_dir)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_experiment_end_to_end_with_resume(omniglot_data_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    runs = [start(whole, omniglot_data_dir), start(killed, omniglot_data_dir, kill_at=2)]
    codes = [p.wait(timeout=600) for p in runs]
    assert codes[0] == 0, runs[0].communicate()[1]
    assert codes[1] == -9
    resumed = subprocess.run([sys.executable, "-m", "experiments.omniglot", "--out", str(killed), "--resume",
                              "--quiet", "--data-dir", str(omniglot_data_dir)], cwd=REPO, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    (a, meta_a), (b, meta_b) = checkpoint.load(whole / "checkpoint.npz"), checkpoint.load(killed / "checkpoint.npz")
    assert sorted(a) == sorted(b) and meta_a["iteration"] == meta_b["iteration"] == 4
    for k in a:
        if k != "log/elapsed":      # wall-clock times
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert "params/m.conv.w_ih" in a and "model/u_classifier" in a
    assert (whole / "best.npz").is_file() and (whole / "log.csv").is_file()
    done = subprocess.run([sys.executable, "-m", "experiments.omniglot", "evaluate", str(whole), "--tasks", "3",
                           "--data-dir", str(omniglot_data_dir), "--out", str(tmp_path / "eval")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "5-way 1-shot test accuracy (metanet" in done.stdout and "±" in done.stdout


@pytest.mark.parametrize("bad, says", [(["--inner-lr", "0.1"], "--inner-lr does not apply to --algo metanet"),
                                       (["--non-transductive"], "no batch norm")])
def test_bad_options_are_refused_in_one_sentence(bad, says, tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.omniglot", "--algo", "metanet", *bad,
                           "--out", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
