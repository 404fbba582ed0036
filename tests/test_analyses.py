"""The analyses of experiments/analyses.py, checked on small problems.

Taylor expansion (Nichol et al. 2018, §5.1): the remainder of each measured gradient after
its leading terms must fall like α²: least-squares log-log slope in [1.8, 2.2] over
α = 0.02·2^-j, j < 6 (float64; the smallest remainder is asserted ≥ 1e4 × the rounding
of the gradients, so the slope is not a rounding artefact). The check can fail: MAML's
gradient measured against FOMAML's leading terms (missing α H₀g₁) leaves a remainder of
order α, slope ≈ 1.

Feature reuse (Raghu et al. 2020): linear CKA is 1 for a representation and itself,
invariant to orthogonal transforms and isotropic scaling (to 1e-12), and for one feature
equals the squared Pearson correlation; an anisotropic scaling does change it (so the
invariance checks can fail). Freezing k blocks: k = 4 adapts as ANIL does and k = 0 as MAML
does (evaluation equal to 1e-12 in float64), the frozen blocks stay put and the others move.

Train-train vs train-val: on tiny settings both variants train and evaluate, every batch the
train-train learner steps on has query == support, and no train-val batch has.
"""
import numpy as np
import pytest

from autograd import functional as F
from experiments import analyses, configs, sinusoid
from tinymeta.algorithms import ANIL, MAML
from tinymeta.models import MLP, Conv4
from tinymeta.tasks import EpisodeSampler
from helpers import host

SLOPE_RANGE = (1.8, 2.2)


def test_taylor_remainders_fall_like_alpha_squared():
    alphas = 0.02 * 0.5 ** np.arange(6)
    result = analyses.taylor(alphas, seed=1, hidden=8)
    for m, slope in result["slopes"].items():
        assert SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1], (m, slope)
        assert min(result["remainders"][m]) >= 1e4 * 1e-16 * result["gradient_norm"] / alphas[-1]


def test_a_missing_term_is_detected():
    loss0, loss1, theta = analyses.taylor_problem(1, hidden=8)
    alphas = 0.02 * 0.5 ** np.arange(6)
    rem = []
    for a in alphas:
        g_maml = analyses.measured(loss0, loss1, theta, a)[0]
        fomaml_terms = analyses.leading_terms(loss0, loss1, theta, a)[1]
        rem.append(float(np.linalg.norm(g_maml - fomaml_terms)))     # a number on either backend
    slope = np.polyfit(np.log(alphas), np.log(rem), 1)[0]
    assert 0.8 <= slope <= 1.2


# --- CKA --------------------------------------------------------------------------------------

def representation(seed, n=30, p=12):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, p)) @ rng.standard_normal((p, p))      # correlated features


def orthogonal(seed, p):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((p, p)))
    return q * np.sign(np.diag(r))


def test_cka_of_a_representation_with_itself_is_one():
    X = representation(0)
    assert analyses.linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    X, Y = representation(0), representation(1, p=7)
    base = analyses.linear_cka(X, Y)
    assert 0.0 < base < 0.9
    assert analyses.linear_cka(X @ orthogonal(2, 12), Y) == pytest.approx(base, abs=1e-12)
    assert analyses.linear_cka(X, Y @ orthogonal(3, 7)) == pytest.approx(base, abs=1e-12)
    assert analyses.linear_cka(3.7 * X, 0.2 * Y) == pytest.approx(base, abs=1e-12)
    assert analyses.linear_cka(X @ orthogonal(4, 12), X) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_not_invariant_to_anisotropic_scaling():
    X, Y = representation(0), representation(1, p=7)
    stretched = X * np.linspace(0.1, 10.0, 12)
    assert abs(analyses.linear_cka(stretched, Y) - analyses.linear_cka(X, Y)) > 1e-3


def test_cka_of_one_feature_is_the_squared_correlation():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(40)
    y = 0.5 * x + rng.standard_normal(40)
    rho = np.corrcoef(x, y)[0, 1]
    assert analyses.linear_cka(x[:, None], y[:, None]) == pytest.approx(rho ** 2, abs=1e-12)


# --- freezing blocks in the inner loop --------------------------------------------------------

def conv_learner(seed=0):
    model = Conv4(ways=3, in_channels=1, filters=4, image_size=8)
    params = model.init(np.random.default_rng(seed), dtype=np.float64)
    rng = np.random.default_rng(seed + 1)
    images = rng.standard_normal((6, 1, 8, 8)) + 0.3 * rng.standard_normal((6, 5, 8, 8))
    batch = EpisodeSampler(images, ways=3, shots=2, queries=3, rng=seed + 2, dtype=np.float64).sample_batch(2)
    return MAML(model, params, F.cross_entropy, inner_lr=0.3, inner_steps=2), batch


def assert_same_evaluation(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-12)


def test_freezing_every_block_is_anil_and_freezing_none_is_maml():
    maml, batch = conv_learner()
    anil = ANIL(maml.model, maml.params, F.cross_entropy, inner_lr=0.3, inner_steps=2)
    assert_same_evaluation(analyses.frozen_learner(maml, 4).evaluate(batch, 3), anil.evaluate(batch, 3))
    assert_same_evaluation(analyses.frozen_learner(maml, 0).evaluate(batch, 3), maml.evaluate(batch, 3))
    some = analyses.frozen_learner(maml, 2).evaluate(batch, 3)["loss"][-1]
    assert np.abs(some - maml.evaluate(batch, 3)["loss"][-1]).max() > 1e-6    # freezing changes the outcome


def test_freezing_refuses_a_learner_that_is_not_plain_maml():
    maml, _ = conv_learner()
    anil = ANIL(maml.model, maml.params, F.cross_entropy, inner_lr=0.3, inner_steps=2)
    with pytest.raises(ValueError, match="frozen_learner: needs a plain MAML learner .* got ANIL"):
        analyses.frozen_learner(anil, 2)


def test_frozen_blocks_stay_put_and_the_others_move():
    maml, batch = conv_learner()
    fast = analyses.frozen_learner(maml, 2).adapt(batch, 2)
    for k, p in maml.params.items():
        moved = np.abs(fast[k].data - p.data[None]).max()
        if k.startswith(("conv0.", "bn0.", "conv1.", "bn1.")):
            assert moved == 0.0, k
        elif not (k.startswith("conv") and k.endswith(".b")):    # batch-norm cancels a conv bias: no gradient
            assert moved > 1e-8, k


def test_representations_are_the_models_own_features_and_logits():
    maml, batch = conv_learner()
    fast = maml.adapt(batch, 1)
    xq, _ = maml.inputs(batch, "query")
    reps = analyses.representations(maml, fast, xq)
    assert len(reps) == 5
    T, N = xq.shape[:2]
    pooled = host(reps[3]).reshape(T, N, 4, -1).mean(axis=-1)                       # (T, N, C·h·w) → (T, N, C)
    np.testing.assert_allclose(pooled, host(maml.model.body(fast, xq, mode="test")), atol=1e-12)
    np.testing.assert_allclose(host(reps[4]), host(maml.forward(fast, xq, "test")), atol=1e-12)
    cka = analyses.cka_before_after(maml, batch, 2)
    assert cka.shape == (5, T) and np.all((cka > 0) & (cka <= 1 + 1e-12))


def test_feature_reuse_reports_every_setting_on_the_same_tasks():
    maml, _ = conv_learner()
    rng = np.random.default_rng(1)
    images = rng.standard_normal((6, 1, 8, 8)) + 0.3 * rng.standard_normal((6, 5, 8, 8))
    tasks = lambda seed: EpisodeSampler(images, ways=3, shots=2, queries=3, rng=seed, dtype=np.float64)
    result = analyses.feature_reuse(maml, tasks, tasks, n_tasks=3, steps=2, chunk=2, task_seed=7)
    assert list(result["frozen_blocks"]) == ["0", "1", "2", "3", "4"]
    full = maml.evaluate(tasks(7).sample_batch(3), 2)["accuracy"][-1]
    assert result["frozen_blocks"]["0"]["accuracy_percent"] == pytest.approx(100 * full.mean(), abs=1e-9)
    assert list(result["cka"]) == analyses.LAYERS
    assert all(0 < c["mean"] <= 1 + 1e-12 for c in result["cka"].values())


# --- iMAML's linear system -----------------------------------------------------------------------

def test_cg_diagnosis_measures_the_curvature_size_and_residual_of_each_task():
    from autograd import grad, hvp
    from tinymeta.algorithms import IMAML
    from tinymeta.parameters import detached
    maml, batch = conv_learner()
    learner = IMAML(maml.model, maml.params, F.cross_entropy, inner_lr=0.1, inner_steps=3, lam=2.0, cg_steps=2)
    found = analyses.cg_diagnosis(learner, [batch], [0.0, 1e9])
    result = found["dampings"]
    assert set(result) == {"0.0", "1000000000.0"} and result["0.0"]["tasks"] == 2
    assert 0 < found["inner_stationarity"]["median"] < 1                # 3 steps: closer, not there
    from test_imaml import linear_regression_tasks                    # a quadratic inner problem, solved
    line = MLP([4, 1], init_std=0.5)
    solved = IMAML(line, line.init(np.random.default_rng(3), dtype=np.float64), F.mse_loss, inner_lr=0.1,
                   inner_steps=300, lam=2.0, cg_steps=5)
    assert analyses.cg_diagnosis(solved, [linear_regression_tasks(4)], [0.0])["inner_stationarity"]["max"] < 1e-10
    nearly_identity = result["1000000000.0"]                       # A = I + H/(λ + d) → I
    assert nearly_identity["size_median"] == pytest.approx(1.0, abs=1e-6)
    assert nearly_identity["residual_max"] < 1e-6
    assert nearly_identity["share_with_nonpositive_curvature"] == 0.0
    # the first direction is ∇L_query itself: its curvature is 1 + gᵀHg / (λ gᵀg), task by task
    xs, ys = learner.inputs(batch, "support")
    xq, yq = learner.inputs(batch, "query")
    fast = learner.solve_inner(learner.tasks_view(detached(learner.params), 2), xs, ys)
    g = [gi.data for gi in grad(learner.query_loss(fast, xq, yq), list(fast.values()))]
    names = list(fast)
    _, hg = hvp(lambda *leaves: learner.support_loss(dict(zip(names, leaves)), xs, ys, "adapt"),
                [fast[k].data for k in names], g)
    gHg = host(sum((a * h.data).reshape(2, -1).sum(axis=1) for a, h in zip(g, hg)))
    gg = host(sum((a * a).reshape(2, -1).sum(axis=1) for a in g))
    learner.cg_damping, trace = 0.0, []
    learner.implicit_gradient(fast, xs, ys, g, trace=trace)
    np.testing.assert_allclose(host(trace[0]), 1 + gHg / (2.0 * gg), rtol=1e-10)
    assert result["0.0"]["smallest_curvature"] <= float(np.min(1 + gHg / (2.0 * gg))) + 1e-12


# --- train-train vs train-val -----------------------------------------------------------------

def tiny_sinusoid_config():
    return {**configs.load(sinusoid.RECIPE), "iterations": 3, "hidden": [8], "meta_batch": 2, "eval_tasks": 4,
            "eval_steps": 2, "checkpoint_every": 3, "methods": ["maml"]}


def test_train_train_batches_have_query_equal_to_support(tmp_path, monkeypatch):
    seen = []
    setup = analyses.trainval_setup

    def spy(cfg, variant):
        learner, tasks = setup(cfg, variant)
        step = learner.step

        def recorded(batch):
            seen.append((variant, np.array_equal(batch.support_x, batch.query_x)
                         and np.array_equal(batch.support_y, batch.query_y), batch.support_x.copy()))
            return step(batch)
        learner.step = recorded
        return learner, tasks
    monkeypatch.setattr(analyses, "trainval_setup", spy)
    result = analyses.trainval(tiny_sinusoid_config(), tmp_path)
    assert [v for v, _, _ in seen] == ["train-val"] * 3 + ["train-train"] * 3
    assert all(same for v, same, _ in seen if v == "train-train")
    assert not any(same for v, same, _ in seen if v == "train-val")
    for (_, _, a), (_, _, b) in zip(seen[:3], seen[3:]):
        np.testing.assert_array_equal(a, b)                                   # the same support sets
    for variant in analyses.VARIANTS:
        for shots in ("K10", "K5"):
            mse = result[variant][shots]["mean"]
            assert len(mse) == 3 and np.all(np.isfinite(mse))
    for shots in ("K10", "K5"):                           # paired on the same held-out tasks
        want = np.subtract(result["train-train"][shots]["mean"], result["train-val"][shots]["mean"])
        np.testing.assert_allclose(result["paired_difference"][shots]["mean"], want, atol=1e-9)


def test_train_train_on_omniglot_trains_on_the_support_set_and_tests_both_on_the_same_tasks(
        omniglot_data_dir, tmp_path, monkeypatch):
    from experiments import omniglot
    cfg = omniglot.CONFIG.complete({"algo": "maml", "ways": 5, "shots": 1, "query": 1, "meta_batch": 2,
                                    "iterations": 2, "seed": 0, "val_tasks": 0, "checkpoint_every": 2,
                                    "test_query": 2, "filters": 8})
    seen, build = [], omniglot.build

    def spy(cfg):
        learner = build(cfg)
        step = learner.step

        def recorded(batch):
            seen.append((np.array_equal(host(batch.support_x), host(batch.query_x)), host(batch.support_x).copy()))
            return step(batch)
        learner.step = recorded
        return learner
    monkeypatch.setattr(omniglot, "build", spy)
    result = analyses.trainval_omniglot(cfg, tmp_path, omniglot_data_dir, n_tasks=4)
    assert [same for same, _ in seen] == [False, False, True, True]         # train-val, then train-train
    for (_, a), (_, b) in zip(seen[:2], seen[2:]):
        np.testing.assert_array_equal(a, b)                                   # the same support sets
    tt, tv = result["train-train"]["accuracy"], result["train-val"]["accuracy"]
    assert tt["tasks"] == tv["tasks"] == 4 and len(tt["mean"]) == cfg["eval_steps"] + 1
    np.testing.assert_allclose(result["paired_difference"]["mean"], np.array(tt["mean"]) - np.array(tv["mean"]),
                               atol=1e-9)
