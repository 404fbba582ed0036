"""MANN and its label-offset episodes: the episode construction against its definition
(input at t carries y_{t−1}, every class exactly ``instances`` times with distinct drawings,
instance numbers), the network's derivatives against finite differences to first and second
order (float64, relative error ≤ 1e-6, ``autograd.gradcheck``'s bound), the memory's role
(the LSTM baseline ignores it), and the learner contract (step, evaluate by instance, state)."""
import numpy as np
import pytest

from autograd import Tensor, gradcheck, gradgradcheck
from tinymeta.algorithms import MANN, MemoryNetwork
from tinymeta.tasks.sequences import SequenceSampler, instance_numbers, previous_labels
from helpers import host


def images(classes=7, per_class=6, side=2, seed=0):
    """Class c's drawing e is the constant image 100·c + e, so x names its source."""
    values = 100.0 * np.arange(classes)[:, None] + np.arange(per_class)[None, :]
    return np.broadcast_to(values[:, :, None, None], (classes, per_class, side, side)).copy()


def test_previous_labels_are_the_labels_one_step_late():
    y = np.array([[2, 0, 1, 2]])
    shifted = previous_labels(y, 3)
    np.testing.assert_array_equal(shifted[0], [[0, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]])


def test_instance_numbers_count_earlier_appearances():
    np.testing.assert_array_equal(instance_numbers([[1, 0, 1, 1, 0]]), [[0, 0, 1, 2, 1]])


def test_sequence_episodes_hold_each_class_instances_times_with_distinct_drawings():
    sampler = SequenceSampler(images(), ways=3, instances=4, rng=1, dtype=np.float64)
    batch = sampler.sample_batch(5)
    assert batch.x.shape == (5, 12, 4) and batch.y.shape == (5, 12)
    for x, y, inst, classes in zip(batch.x, batch.y, batch.instance, batch.classes):
        assert np.bincount(y, minlength=3).tolist() == [4, 4, 4]
        source_class, drawing = np.divmod(x[:, 0], 100.0)
        np.testing.assert_array_equal(source_class, classes[y])          # label k ↦ classes[k]
        for k in range(3):
            assert len(set(drawing[y == k])) == 4                          # distinct drawings
        np.testing.assert_array_equal(inst, instance_numbers(y[None])[0])
    orders = {tuple(y) for y in batch.y}
    assert len(orders) > 1                                                 # shuffled per episode


def test_sequence_sampler_state_repeats_the_stream_and_refuses_bad_sizes():
    sampler = SequenceSampler(images(), ways=3, instances=2, rng=3)
    state = sampler.get_state()
    first = sampler.sample_batch(2)
    sampler.set_state(state)
    np.testing.assert_array_equal(sampler.sample_batch(2).x, first.x)
    with pytest.raises(ValueError, match=r"SequenceSampler: ways=8, instances=2 .* \(7, 6, 2, 2\)"):
        SequenceSampler(images(), ways=8, instances=2)


def tiny(memory=True, seed=0, key_strength=False):
    model = MemoryNetwork(input_size=3, ways=2, hidden=3, slots=4, width=2, heads=2, memory=memory,
                          key_strength=key_strength)
    return model, model.init(np.random.default_rng(seed), dtype=np.float64)


def tiny_inputs(seed=1, steps=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (2, steps))
    return rng.standard_normal((2, steps, 3)), previous_labels(y, 2, np.float64)


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_mann_first_and_second_order(check):
    model, params = tiny()
    x, previous = tiny_inputs()
    names = ["controller/w_hh", "key/w", "gate/b", "output/w"]
    rest = {k: v for k, v in params.items() if k not in names}

    def run(x, *chosen):
        return model({**rest, **dict(zip(names, chosen))}, x, Tensor(previous))
    check(run, [x] + [params[k].data for k in names])


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_mann_with_key_strength_first_and_second_order(check):
    model, params = tiny(key_strength=True)
    x, previous = tiny_inputs()
    rng = np.random.default_rng(3)
    names = ["strength/w", "strength/b", "key/w"]
    start = [rng.standard_normal(params[k].shape) for k in names[:2]] + [params["key/w"].data]
    rest = {k: v for k, v in params.items() if k not in names}

    def run(*chosen):
        return model({**rest, **dict(zip(names, chosen))}, Tensor(x), Tensor(previous))
    check(run, start)


def test_key_strength_starts_as_the_papers_reads_and_then_changes_them():
    x, previous = tiny_inputs()
    model, params = tiny(key_strength=True)
    plain_model, plain = tiny()
    assert set(params) - set(plain) == {"strength/w", "strength/b"}
    assert all(np.array_equal(host(params[k]), host(plain[k])) for k in plain)     # same draws for the rest
    out = host(model(params, Tensor(x), Tensor(previous)))
    np.testing.assert_array_equal(out, host(plain_model(plain, Tensor(x), Tensor(previous))))   # β = 1
    sharper = dict(params, **{"strength/b": Tensor(np.full(2, 2.0))})               # β = e²
    assert np.abs(host(model(sharper, Tensor(x), Tensor(previous))) - out).max() > 1e-6


def test_the_baseline_ignores_memory_and_the_memory_changes_the_answer():
    x, previous = tiny_inputs()
    base_model, base = tiny(memory=False)
    assert not any(k.startswith(("key/", "gate/")) for k in base)
    model, params = tiny()
    out = host(model(params, Tensor(x), Tensor(previous)))
    assert out.shape == (2, 4, 2)
    zeroed = dict(params, **{"output/w": Tensor(host(params["output/w"]) * np.r_[[1.0] * 3, [0.0] * 4])})
    different = host(model(zeroed, Tensor(x), Tensor(previous)))
    assert np.abs(out - different).max() > 1e-6                            # the reads reach the output
    np.testing.assert_array_equal(out[:, 0], host(model(params, Tensor(x[:, :1]), Tensor(previous[:, :1])))[:, 0])


def test_learner_step_evaluate_and_state():
    rng = np.random.default_rng(2)
    sampler = SequenceSampler(rng.random((6, 5, 2, 2)), ways=2, instances=3, rng=4, dtype=np.float64)
    model = MemoryNetwork(input_size=4, ways=2, hidden=4, slots=5, width=3, heads=1)
    learner = MANN(model, model.init(rng, dtype=np.float64))
    batch = sampler.sample_batch(3)
    before = learner.evaluate(batch, steps=1)
    assert before["loss"].shape == (2, 3) and before["by_instance"].shape == (3, 3)
    saved = learner.state_dict()
    metrics = learner.step(batch)
    assert set(metrics) == {"loss", "accuracy"}
    np.testing.assert_allclose(metrics["loss"], before["loss"][0].mean(), rtol=1e-12)
    assert not np.allclose(learner.evaluate(batch)["loss"], before["loss"][:1])
    learner.load_state_dict(saved)
    np.testing.assert_allclose(learner.evaluate(batch, steps=1)["loss"], before["loss"], rtol=1e-12)


def test_by_instance_is_the_accuracy_at_each_drawing():
    from tinymeta.algorithms.mann import by_instance
    right = np.array([[True, False, True, True]])
    instance = np.array([[0, 0, 1, 1]])
    np.testing.assert_allclose(by_instance(right, instance), [[0.5], [1.0]])


def test_the_experiment_trains_resumes_evaluates_and_draws(omniglot_data_dir, tmp_path, capsys):
    """experiments/mann.py on the run layer, at tiny sizes: train 2 batches, resume to 3,
    evaluate the kept best checkpoint by instance, draw the figure; a bad combination is one error line."""
    import json
    from experiments import mann as experiment
    small = ["--hidden", "8", "--slots", "6", "--width", "4", "--heads", "2", "--meta-batch", "2",
             "--val-tasks", "2", "--val-every", "2", "--data-dir", str(omniglot_data_dir), "--quiet"]
    out = tmp_path / "run"
    experiment.main(["--out", str(out), "--iterations", "2"] + small)
    summary = experiment.main(["--out", str(out), "--iterations", "3", "--resume"] + small)
    assert summary["resumed_from"] == 2
    assert (out / "curves.png").stat().st_size > 0                 # redrawn at every checkpoint
    result = experiment.main(["evaluate", str(out), "--tasks", "4",           # the folder: its best.npz
                              "--data-dir", str(omniglot_data_dir), "--out", str(tmp_path / "eval")])
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["checkpoint"] == str(out / "best.npz") and saved["best"]["iteration"] == saved["iteration"]
    assert len(saved["by_instance"]["mean"]) == 10 and saved["by_instance"]["tasks"] == 4
    assert result["config"]["slots"] == 6
    seen = experiment.main(["reads", str(out), "--tasks", "3", "--data-dir", str(omniglot_data_dir),
                            "--out", str(tmp_path / "reads")])
    assert seen["uniform_read_weight"] == 1 / 6 < seen["largest_read_weight_mean"]
    assert seen["largest_read_weight_mean"] <= seen["largest_read_weight_possible_without_key_strength"]
    assert len(seen["accuracy_by_instance"]) == len(seen["accuracy_by_instance_reads_cut_from_output"]) == 10
    assert json.loads((tmp_path / "reads" / "reads.json").read_text())["tasks"] == 3
    experiment.main(["figure", str(tmp_path / "eval" / "evaluation.json"), "--out", str(tmp_path / "f.png")])
    assert (tmp_path / "f.png").stat().st_size > 0
    with pytest.raises(SystemExit) as stop:
        experiment.main(["--out", str(tmp_path / "bad"), "--heads", "9", "--slots", "4"])
    assert stop.value.code == 2
    assert "--heads 9 needs as many memory slots" in capsys.readouterr().err
