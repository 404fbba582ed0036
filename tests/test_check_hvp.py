"""``check_hvp``: it passes on correct functions and names the property that fails on
planted bugs.

Tolerances: the bounds of ``autograd.hvpcheck`` (derived in its docstring): symmetry and
linearity 1e-8 (1e-3 in float32), the difference of gradients 1e-6 (h = 1e-5), the full
Hessian against Richardson second differences of f 1e-5 (h = 1e-3). Every planted bug gives
an error above 1e-2, and each failing test asserts which property and how large.
"""
import re

import numpy as np
import pytest

import autograd as ag
from autograd import Tensor, backend
from autograd import functional as F


# ----------------------------------------------------------------------------- functions
def tanh_mlp(seed=0, n=4, d_in=2, hidden=3):
    """A 2-3-1 tanh network's MSE on fixed data, f(W1, b1, W2, b2): 13 parameters."""
    rng = np.random.default_rng(seed)
    x, t = rng.standard_normal((n, d_in)), rng.standard_normal((n, 1))

    def f(w1, b1, w2, b2):
        return F.mse_loss(F.linear(ag.tanh(F.linear(Tensor(x), w1, b1)), w2, b2), t)
    params = [rng.standard_normal((hidden, d_in)), rng.standard_normal(hidden) * 0.5,
              rng.standard_normal((1, hidden)), rng.standard_normal(1) * 0.5]
    return f, params


def tiny_conv4():
    """tinymeta's Conv4 (conv, batch-norm with batch statistics, ReLU, four blocks) on four
    8×8 images with 2 filters: 159 parameters, so the full Hessian is skipped.
    No pre-activation lies within 2h·|Jv| of its ReLU kink for this seed: the gradient
    difference passes at 2e-9, where a stencil across a kink would be off by O(1)."""
    from tinymeta.models import Conv4
    model = Conv4(ways=3, in_channels=1, filters=2, image_size=8)
    rng = np.random.default_rng(1)
    params = model.init(rng, dtype=np.float64)
    x, y = rng.standard_normal((4, 1, 8, 8)), np.array([0, 1, 2, 1])
    names = list(params)

    def f(*tensors):
        return F.cross_entropy(model(dict(zip(names, tensors)), Tensor(x)), y)
    return f, [p.data for p in params.values()]


def maml_inner_step():
    """The MAML meta-loss after one inner step, L_q(θ − α∇L_s(θ)), of tinymeta's 1-4-1 tanh
    MLP on two sinusoid tasks: its HVP is a *third* derivative of the loss. 13 parameters."""
    from tinymeta.algorithms import MAML
    from tinymeta.models import MLP
    from tinymeta.tasks import SinusoidTasks
    model = MLP([1, 4, 1], activation="tanh", init_std=0.5)
    params = model.init(np.random.default_rng(0), dtype=np.float64)
    batch = SinusoidTasks().sample(np.random.default_rng(1), tasks=2, shots=3)
    names = list(params)

    def f(*tensors):
        return MAML(model, dict(zip(names, tensors)), F.mse_loss, inner_lr=0.1, inner_steps=1,
                    first_order=False).meta_loss(batch)
    return f, [p.data for p in params.values()]


class RawSquare(ag.Function):
    """x² whose derivative 2x is right but made from a raw array: the second-order path is cut."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * Tensor(x.data * 2),)


A = np.array([[2.0, 1.0, 0.0], [-1.0, 1.5, 0.5], [0.3, 0.0, 1.0]])     # not symmetric


class AsymmetricQuadratic(ag.Function):
    """f = ½ xᵀAx with 'gradient' A x (the true one is ½(A + Aᵀ)x): its Hessian, as double
    backward computes it, is the non-symmetric A."""

    def forward(self, x):
        a = backend.from_numpy(A)                        # forward runs on the backend's arrays
        return 0.5 * x @ a @ x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * ag.matmul(Tensor(A), x.reshape(3, 1)).reshape(3),)


class ConsistentlyWrongCube(ag.Function):
    """f = Σ x³ with gradient 2x² instead of 3x²: wrong, but its own derivative diag(4x) is
    symmetric and is what double backward returns, so only f's curvature disagrees."""

    def forward(self, x):
        return (x ** 3).sum()

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * (x * x * 2.0),)


# ----------------------------------------------------------------------------- passing
@pytest.mark.parametrize("problem", [tanh_mlp, maml_inner_step])
def test_check_hvp_passes_every_property_on_smooth_functions(problem):
    f, params = problem()
    report = ag.check_hvp(f, params)
    assert report.passed
    assert [r.name for r in report.results] == ["symmetry", "linearity", "gradient_difference", "hessian"]
    assert all(r.passed is True and r.error <= r.bound for r in report.results)


@pytest.mark.usefixtures("numpy_kernels")          # conftest.py: tiny images, no Numba threads
def test_check_hvp_passes_on_conv4_with_batch_norm_and_skips_its_full_hessian():
    f, params = tiny_conv4()
    report = ag.check_hvp(f, params)
    assert report.passed
    assert report["gradient_difference"].error <= 1e-6
    hessian = report["hessian"]
    assert hessian.passed is None and "159 entries > hessian_max_size=16" in hessian.note


def test_check_hvp_runs_on_either_backend(backend):
    f, params = tanh_mlp(seed=2)
    report = ag.check_hvp(f, [ag.backend.from_numpy(p) for p in params])
    assert report.passed and report.size == 13


def test_the_exact_properties_run_in_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5).astype(np.float32)
    report = ag.check_hvp(lambda x: (ag.tanh(x) ** 3).sum(), [x], properties=("symmetry", "linearity"))
    assert report.passed and report.dtype == "float32"
    assert report["symmetry"].bound == 1e-3


def test_a_linear_function_has_a_zero_hessian_and_passes():
    # H = 0: every property compares zeros, or rounding noise against the floors
    report = ag.check_hvp(lambda x: (x * 3.0).sum() + 5.0, [np.array([0.5, -1.0, 2.0])])
    assert report.passed


def test_the_same_seed_gives_the_same_report_and_another_seed_other_directions():
    f, params = tanh_mlp()
    one, same = ag.check_hvp(f, params, seed=4), ag.check_hvp(f, params, seed=4)
    other = ag.check_hvp(f, params, seed=5)
    assert [r.error for r in one.results] == [r.error for r in same.results]
    assert one["gradient_difference"].error != other["gradient_difference"].error


# ----------------------------------------------------------------------------- failing
def test_a_raw_array_in_a_backward_fails_the_gradient_difference():
    f, params = tanh_mlp()

    def broken(w1, b1, w2, b2):                 # the hidden layer squared by RawSquare
        rng = np.random.default_rng(0)
        x, t = rng.standard_normal((4, 2)), rng.standard_normal((4, 1))
        return F.mse_loss(F.linear(RawSquare()(F.linear(Tensor(x), w1, b1)), w2, b2), t)
    with pytest.raises(ag.HVPCheckError, match=r"check_hvp: gradient_difference failed with "
                                               r"relative error .* > bound 1e-06") as failure:
        ag.check_hvp(broken, params)
    report = failure.value.report
    assert report["gradient_difference"].error > 1e-2
    assert report["symmetry"].passed and report["linearity"].passed     # exact facts still hold
    assert report["hessian"].passed is False                           # f's own curvature differs


def test_an_asymmetric_hessian_fails_symmetry_first():
    x = np.array([0.4, -1.1, 0.7])
    with pytest.raises(ag.HVPCheckError, match=r"check_hvp: symmetry failed with relative error "
                                               r".* > bound 1e-08") as failure:
        ag.check_hvp(lambda x: AsymmetricQuadratic()(x), [x])
    report = failure.value.report
    assert report["symmetry"].error > 1e-2
    assert report["linearity"].passed                                  # A is still linear
    assert report["hessian"].passed is False                           # f's curvature is ½(A + Aᵀ)


def test_only_the_full_hessian_catches_a_self_consistent_wrong_gradient():
    x = np.array([0.4, -1.1, 0.7])
    report = ag.check_hvp(lambda x: ConsistentlyWrongCube()(x), [x], raise_exception=False)
    assert not report.passed
    assert [r.name for r in report.failures] == ["hessian"]
    assert report["hessian"].error > 1e-2                              # 4x against 6x


def test_a_non_finite_gradient_fails_every_property_saying_where():
    with np.errstate(divide="ignore", invalid="ignore"):
        with pytest.raises(ag.HVPCheckError, match=re.escape(
                "check_hvp: symmetry failed with relative error inf > bound 1e-08 "
                "(the gradient is inf in input 0 at index (1,))")):
            ag.check_hvp(lambda x: ag.sqrt(x).sum(), [np.array([1.0, 0.0, 2.0])])


def test_the_report_reads_as_a_table():
    f, params = tanh_mlp()
    text = str(ag.check_hvp(f, params))
    assert text.splitlines()[0].startswith("check_hvp at f(x) = ")
    assert re.search(r"^symmetry\s+\S+\s+1e-08\s+pass$", text, re.M)
    assert re.search(r"^hessian\s+\S+\s+1e-05\s+pass\s+\(13×13, h = 1e-03\)$", text, re.M)


# ----------------------------------------------------------------------------- bad input
def test_finite_difference_properties_need_float64():
    with pytest.raises(TypeError, match=re.escape(
            "check_hvp: the finite-difference properties need float64 inputs, got float32")):
        ag.check_hvp(lambda x: (x * x).sum(), [np.ones(3, np.float32)])


def test_bad_arguments_are_one_sentence_each():
    f = lambda x: (x * x).sum()                                        # noqa: E731
    with pytest.raises(ValueError, match="check_hvp: unknown property 'symetry'"):
        ag.check_hvp(f, [np.ones(2)], properties=["symetry"])
    with pytest.raises(ValueError, match="check_hvp: directions must be a positive int, got 0"):
        ag.check_hvp(f, [np.ones(2)], directions=0)
    with pytest.raises(ValueError, match=re.escape("check_hvp: f must return a scalar Tensor, got (2,)")):
        ag.check_hvp(lambda x: x * x, [np.ones(2)])
    with pytest.raises(TypeError, match="check_hvp: input 1 is int64"):
        ag.check_hvp(lambda x, y: (x * x).sum(), [np.ones(2), np.arange(2)])
    with pytest.raises(ValueError, match="check_hvp: bounds names unknown property 'hesian'"):
        ag.check_hvp(f, [np.ones(2)], bounds={"hesian": 1.0})
