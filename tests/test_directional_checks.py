"""``gradcheck``/``gradgradcheck`` along random directions, and both modes on non-finite values.

Tolerances: the checkers' own, rtol = 1e-6 on the relative error
‖analytic − numeric‖∞ / max(‖analytic‖∞, ‖numeric‖∞, 1e-3) with the five-point stencil
(h = 1e-3 unless stated; truncation O(h⁴) ≈ 1e-12, rounding ≈ 1e-13·|s|/h ≈ 1e-10, both far
under 1e-6). Every planted bug below makes an O(1) error, and each test asserts that.

The Conv4 MAML case uses h = 1e-5 (see its docstring for why and for the rounding bound).
"""
import re

import numpy as np
import pytest

import autograd as ag
from autograd import Tensor
from autograd import functional as F

X = np.array([[0.3, -1.2, 2.0], [1.5, -0.7, 0.9]])
W = np.array([[0.5, -0.4], [1.1, 0.2], [-0.3, 0.8]])


class WrongSquare(ag.Function):
    """x² with the derivative 3x instead of 2x."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * x * 3.0,)


class RawSquare(ag.Function):
    """x² whose derivative 2x is right but made from a raw array: ∂(backward)/∂x is cut."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * Tensor(x.data * 2),)


class GoodSquare(ag.Function):
    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * (x * 2.0),)


class WrongSecondInput(ag.Function):
    """a @ b whose gradient for b is off by a factor 1.5 (a's is right)."""

    def forward(self, a, b):
        return a @ b

    def backward(self, gy):
        a, b = self.inputs
        return ag.matmul(gy, b, transpose_b=True), ag.matmul(a, gy, transpose_a=True) * 1.5


class NaNGradient(ag.Function):
    """x² whose backward puts a NaN at entry (1, 2): forward values are all finite."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        poison = np.ones(x.shape)
        poison[1, 2] = np.nan
        return (gy * (x * 2.0) * Tensor(poison),)


# ----------------------------------------------------------------------------- planted bugs
@pytest.mark.parametrize("directions", [None, 3])
def test_both_modes_catch_a_wrong_first_derivative(directions):
    with pytest.raises(ag.GradcheckError, match=r"gradcheck: input 0 \(shape \(2, 3\)\): relative error"):
        ag.gradcheck(lambda x: WrongSquare()(x), [X], directions=directions)
    err = ag.gradcheck(lambda x: WrongSquare()(x), [X], directions=directions, raise_exception=False)
    assert err > 0.3            # |3x − 2x| / |3x| = 1/3 entry by entry; the same along any direction


@pytest.mark.parametrize("directions", [None, 3])
def test_both_modes_catch_a_raw_array_only_at_second_order(directions):
    assert ag.gradcheck(lambda x: RawSquare()(x), [X], directions=directions) <= 1e-6
    with pytest.raises(ag.GradcheckError, match=r"gradcheck: input 0 \(shape \(2, 3\)\): relative error"):
        ag.gradgradcheck(lambda x: RawSquare()(x), [X], directions=directions)
    assert ag.gradgradcheck(lambda x: RawSquare()(x), [X], directions=directions,
                            raise_exception=False) > 0.1
    assert ag.gradcheck(lambda x: GoodSquare()(x), [X], directions=directions) <= 1e-6
    assert ag.gradgradcheck(lambda x: GoodSquare()(x), [X], directions=directions) <= 1e-6


@pytest.mark.parametrize("directions", [None, 2])
def test_both_modes_name_the_input_whose_gradient_is_wrong(directions):
    f = lambda a, b: WrongSecondInput()(a, b)            # noqa: E731
    with pytest.raises(ag.GradcheckError, match=r"gradcheck: input 1 \(shape \(3, 2\)\)"):
        ag.gradcheck(f, [X, W], directions=directions)


def test_directional_failure_says_how_many_directions():
    with pytest.raises(ag.GradcheckError, match=r"relative error .* > 1e-06 along 4 random directions"):
        ag.gradcheck(lambda x: WrongSquare()(x), [X], directions=4)


def test_directional_mode_passes_correct_vector_valued_functions_to_second_order():
    def layer(x, w, b):                                    # R^(2×3) → R^(2×2): uᵀ J v checked
        return ag.tanh(F.linear(x, w.T, b)) * ag.sigmoid(x[:, :2])
    b = np.array([0.1, -0.2])
    assert ag.gradcheck(layer, [X, W, b], directions=3) <= 1e-6
    assert ag.gradgradcheck(layer, [X, W, b], directions=3) <= 1e-6


def test_both_checkers_accept_a_function_that_takes_gradients_itself():
    """A one-step MAML meta-loss on a tanh layer: gradgradcheck differentiates it twice."""
    rng = np.random.default_rng(0)
    xs, ys, xq, yq = (rng.standard_normal((4, 2)) for _ in range(4))

    def meta_loss(w):
        inner = ag.grad(F.mse_loss(ag.tanh(F.linear(Tensor(xs), w)), ys), w, create_graph=True)
        return F.mse_loss(ag.tanh(F.linear(Tensor(xq), w - 0.5 * inner)), yq)
    w = rng.standard_normal((2, 2))
    for directions in (None, 3):
        assert ag.gradcheck(meta_loss, [w], directions=directions) <= 1e-6
        assert ag.gradgradcheck(meta_loss, [w], directions=directions) <= 1e-6


def test_directions_are_unit_vectors_so_the_error_matches_the_element_wise_one():
    # The wrong factor 3 vs 2 gives relative error 1/3 entry by entry and along every direction.
    entry = ag.gradcheck(lambda x: WrongSquare()(x), [X], raise_exception=False)
    along = ag.gradcheck(lambda x: WrongSquare()(x), [X], directions=5, raise_exception=False)
    assert abs(entry - 1 / 3) < 1e-6 and abs(along - 1 / 3) < 1e-6


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_directions_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="gradcheck: directions must be None .* or a positive int"):
        ag.gradcheck(lambda x: x * 2.0, [X], directions=bad)


# ----------------------------------------------------------------------------- non-finite values
@pytest.mark.parametrize("directions", [None, 2])
def test_a_nan_in_the_analytic_gradient_fails_naming_input_and_index(directions):
    with pytest.raises(ag.GradcheckError, match=re.escape(
            "gradcheck: input 0 (shape (2, 3)): the analytic gradient is nan at index (1, 2)")):
        ag.gradcheck(lambda x: NaNGradient()(x), [X], directions=directions)
    assert ag.gradcheck(lambda x: NaNGradient()(x), [X], directions=directions,
                        raise_exception=False) == float("inf")


class NaNCurvature(ag.Function):
    """x² with the right, finite first derivative 2x + √(x − x) = 2x, whose own derivative
    is NaN: √ has an infinite slope at 0, and ∞·1 − ∞·1 = NaN."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * (x * 2.0 + ag.sqrt(x - x)),)


@pytest.mark.parametrize("directions", [None, 2])
def test_a_nan_in_the_second_derivative_fails_gradgradcheck(directions):
    f = lambda x: NaNCurvature()(x)                       # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        assert ag.gradcheck(f, [X], directions=directions) <= 1e-6
        with pytest.raises(ag.GradcheckError, match=re.escape(
                "gradcheck: input 0 (shape (2, 3)): the analytic gradient is nan at index (0, 0)")):
            ag.gradgradcheck(f, [X], directions=directions)


def test_a_non_finite_numeric_gradient_fails_naming_where():
    x = np.array([[1.0, 5e-4], [2.0, 3.0]])           # log(x − 2h) is NaN at entry (0, 1)
    with np.errstate(invalid="ignore"):
        with pytest.raises(ag.GradcheckError, match=re.escape(
                "gradcheck: input 0 (shape (2, 2)): the numeric gradient is nan at index (0, 1): "
                "f is not finite within 2h = 2e-03")):
            ag.gradcheck(lambda x: ag.log(x), [x])
        with pytest.raises(ag.GradcheckError, match=r"the numeric derivative along random direction \d is nan"):
            ag.gradcheck(lambda x: ag.log(x), [np.array([1e-9, 2.0])], directions=2)


def test_a_failure_at_a_kink_says_the_function_is_not_smooth_there():
    x = np.array([[5e-4, 1.0]])                         # |x| has its kink within 2h of 5e-4
    with pytest.raises(ag.GradcheckError, match="f is not smooth within 2h here"):
        ag.gradcheck(lambda x: ag.relu(x) + ag.relu(-x), [x])
    with pytest.raises(ag.GradcheckError) as smooth_failure:
        ag.gradcheck(lambda x: WrongSquare()(x), [X])
    assert "not smooth" not in str(smooth_failure.value)


# ----------------------------------------------------------------------------- a full Conv4 MAML
def conv4_maml(first_order):
    """The second-order MAML meta-loss of the Omniglot Conv4 (5-way, 28×28, 112,261
    parameters) on two 1-shot tasks of random sparse "ink" images, float64, one inner step,
    as a function of the 18 parameter tensors."""
    from tinymeta.algorithms import MAML
    from tinymeta.models import Conv4
    from tinymeta.tasks import EpisodeSampler
    rng = np.random.default_rng(3)
    model = Conv4(5)
    params = model.init(rng, dtype=np.float64)
    images = (rng.random((5, 2, 28, 28)) < 0.15).astype(np.float64)
    batch = EpisodeSampler(images, ways=5, shots=1, queries=1, rng=1, dtype=np.float64).sample_batch(2)
    names = list(params)

    def meta_loss(*tensors):
        learner = MAML(model, dict(zip(names, tensors)), F.cross_entropy, inner_lr=0.4,
                       inner_steps=1, first_order=first_order)
        return learner.meta_loss(batch)
    return meta_loss, [p.data for p in params.values()]


@pytest.mark.usefixtures("numpy_kernels")       # conftest.py: no Numba threads on a busy machine
def test_directional_gradcheck_checks_the_full_conv4_maml_meta_gradient():
    """All 18 parameter tensors, one random direction each: 72 meta-loss evaluations.

    Second-order MAML through ReLUs has a *discontinuous* meta-loss: the inner gradient
    holds the support pass's ReLU masks, so where one flips, θ' jumps. The stencil must not
    cross a flip. With these seeds no pre-activation of the support or query pass lies
    within 3.7e-5 of its kink (measured), and h = 1e-5 keeps the stencil, ±2h along unit
    directions, inside that margin for every direction drawn here (measured for five
    direction seeds, worst error 3e-8; with the uniform random images of seed 1 a unit sits
    4.8e-7 from its kink and even h = 1e-6 jumps). Rounding at h = 1e-5 is
    1.5·ε·|f|/h ≈ 6e-11 (|f| ≈ 1.9), which against the 1e-3 floor (the conv biases before
    batch-norm have an exactly zero derivative) is 6e-8: rtol 1e-6 has a margin of 16.
    """
    meta_loss, params = conv4_maml(first_order=False)
    assert sum(p.size for p in params) == 112261
    assert ag.gradcheck(meta_loss, params, h=1e-5, directions=1) <= 1e-6


@pytest.mark.usefixtures("numpy_kernels")
def test_directional_gradcheck_tells_fomaml_from_the_true_meta_gradient():
    """FOMAML's meta_loss has the same *value* as MAML's (same θ') but its graph treats the
    inner gradient as a constant, so its gradient is not the derivative of that value: the
    check must fail, with an O(1) error (α = 0.4 makes the dropped α·H·g term large)."""
    meta_loss, params = conv4_maml(first_order=True)
    err = ag.gradcheck(meta_loss, params, h=1e-5, directions=1, raise_exception=False)
    assert err > 1e-2
