"""Relation Networks: the modules' shapes, the relation module against the literal
concatenation C(·, ·) (its first convolution is split in two halves), K-shot class maps
summed, the MSE to one-hot by hand, the loss gradient against finite differences (float64,
first order), other ways and shots at test, and bad inputs."""
import numpy as np
import pytest

from autograd import Tensor, gradcheck
from autograd import functional as F
from autograd.ops import reshape, transpose
from helpers import host
from tinymeta.algorithms import RelationModel, RelationNet
from tinymeta.algorithms.relation import conv_block, one_hot_mse
from tinymeta.parameters import broadcast_to_tasks
from tinymeta.tasks import EpisodeSampler

pytestmark = pytest.mark.usefixtures("numpy_kernels")   # tiny images: Numba's thread start-up dominates


def episode(seed=0, ways=3, shots=2, queries=2, size=16, tasks=2):
    images = np.random.default_rng(seed).random((6, 5, size, size))
    return EpisodeSampler(images, ways, shots, queries, rng=seed, dtype=np.float64).sample_batch(tasks)


def setup(filters=3, hidden=4, seed=1):
    model = RelationModel(filters=filters, image_size=16, hidden=hidden)
    return RelationNet(model, model.init(np.random.default_rng(seed), np.float64))


def test_module_shapes_on_28_pixel_images():
    model = RelationModel(filters=64, image_size=28)
    params = broadcast_to_tasks(model.init(np.random.default_rng(0)), 2)
    maps = model(params, Tensor(np.random.default_rng(1).random((2, 7, 1, 28, 28)).astype(np.float32)))
    assert maps.shape == (2, 7, 64, 7, 7)                   # 28 → 14 → 7, as the embedding module
    assert model.features == 64                             # relation blocks: 7 → 3 → 1
    r = model.relate(params, reshape(maps[:, :3], (2, 3, 64, 7, 7)), maps[:, 3:])
    assert r.shape == (2, 4, 3) and np.all((r.data > 0) & (r.data < 1))   # a sigmoid score per pair


def test_relation_module_equals_the_literal_concatenation():
    """g_ϕ(C(a_k, b_q)) computed pair by pair from the concatenated maps."""
    learner = setup()
    model, T = learner.model, 2
    params = broadcast_to_tasks(learner.params, T)
    rng = np.random.default_rng(2)
    classes, queries = rng.standard_normal((T, 3, 3, 4, 4)), rng.standard_normal((T, 5, 3, 4, 4))
    r = host(model.relate(params, Tensor(classes), Tensor(queries)))
    pairs = np.concatenate([np.broadcast_to(classes[:, None], (T, 5, 3, 3, 4, 4)),     # C(class k, query q):
                            np.broadcast_to(queries[:, :, None], (T, 5, 3, 3, 4, 4))],  # channels 0..C−1 the class,
                           axis=3).reshape(T, 15, 6, 4, 4)                             # C..2C−1 the query
    h = conv_block(transpose(Tensor(pairs), (0, 2, 1, 3, 4)), params, "relation.conv0", pool=True)
    h = conv_block(h, params, "relation.conv1", pool=True)
    h = reshape(transpose(h, (0, 2, 1, 3, 4)), (T, 15, -1))
    h = F.relu(F.linear(h, params["relation.fc0.w"], params["relation.fc0.b"]))
    literal = 1 / (1 + np.exp(-host(F.linear(h, params["relation.fc1.w"], params["relation.fc1.b"]))))
    np.testing.assert_allclose(r, literal.reshape(T, 5, 3), rtol=1e-10, atol=1e-12)


def test_k_shot_class_maps_are_summed():
    learner = setup()
    batch = episode(shots=3)
    params = broadcast_to_tasks(learner.params, 2)
    x = Tensor(np.concatenate(host([batch.support_x, batch.query_x]), axis=1))
    maps = host(learner.model(params, x, mode="test"))
    zs, zq = maps[:, :9], maps[:, 9:]
    sums = np.stack([np.stack([zs[t][host(batch.support_y)[t] == k].sum(axis=0) for k in range(3)]) for t in range(2)])
    expected = host(learner.model.relate(params, Tensor(sums), Tensor(zq)))
    np.testing.assert_allclose(host(learner.logits(learner.params, batch, mode="test")), expected, rtol=1e-10)


def test_mse_to_one_hot_by_hand():
    scores = Tensor(np.array([[[0.9, 0.2, 0.1], [0.3, 0.3, 0.6]]]))
    labels = Tensor(np.array([[0, 1]]))
    per_query = host(one_hot_mse(scores, labels, reduction="none"))
    expected = [(0.1 ** 2 + 0.2 ** 2 + 0.1 ** 2) / 3, (0.3 ** 2 + 0.7 ** 2 + 0.6 ** 2) / 3]
    np.testing.assert_allclose(per_query[0], expected, rtol=1e-12)
    assert float(one_hot_mse(scores, labels).data) == pytest.approx(np.mean(expected), rel=1e-12)


def test_loss_gradient_matches_finite_differences():
    """Every parameter of both modules. Max-pool and ReLU have kinks; the difference step
    h = 1e-5 (float64 rounding ~1e-11, truncation O(h⁴)) keeps each evaluation on one side of
    them, so the check is of the loss, at gradcheck's bound (relative error ≤ 1e-6)."""
    learner = setup(filters=2, hidden=3)
    batch = episode(ways=2, shots=2, queries=2, tasks=1)
    names = list(learner.params)

    def loss(*values):
        return learner.meta_loss_of(dict(zip(names, values)), batch)
    gradcheck(loss, [learner.params[k] for k in names], h=1e-5)
    value, grads = learner.meta_gradients(batch)
    assert sorted(grads) == sorted(names) and all(np.isfinite(g.data).all() for g in grads.values())


def test_relation_scores_gradient_with_respect_to_the_maps():
    learner = setup(filters=2, hidden=3)
    params = broadcast_to_tasks(learner.params, 1)
    rng = np.random.default_rng(3)
    gradcheck(lambda a, b: learner.model.relate(params, a, b),
              [rng.standard_normal((1, 2, 2, 4, 4)), rng.standard_normal((1, 3, 2, 4, 4))], h=1e-5)


def test_one_model_serves_other_ways_and_shots_and_has_no_state():
    learner = setup()
    learner.step(episode(ways=4, shots=1))
    assert learner.model.state_dict() == {}
    params = {k: v.data.copy() for k, v in learner.params.items()}
    for ways, shots in ((2, 1), (5, 3)):
        r = learner.evaluate(episode(seed=3, ways=ways, shots=shots), steps=1)
        assert r["accuracy"].shape == r["loss"].shape == (2, 2) and np.all(r["loss"] > 0)
    assert all(np.array_equal(params[k], v.data) for k, v in learner.params.items())


def test_bad_inputs():
    learner = setup()
    batch = episode()
    bad = type(batch)(batch.support_x, np.where(batch.support_y == 1, 2, batch.support_y), batch.query_x,
                      batch.query_y, batch.classes)
    with pytest.raises(ValueError, match="RelationNet: some of the 3 classes have no support example"):
        learner.logits(learner.params, bad, mode="test")
    with pytest.raises(ValueError, match="RelationModel: image size 12 is too small"):
        RelationModel(image_size=12)
    with pytest.raises(ValueError, match=r"RelationModel: expected images \(T, N, 1, H, W\), got \(2, 3, 16, 16\)"):
        learner.model(learner.params, Tensor(np.zeros((2, 3, 16, 16))))
