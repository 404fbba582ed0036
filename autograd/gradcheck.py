"""Finite-difference checks of the engine's derivatives, for our tests and for users' own
functions.

The check projects the function onto a random direction so one scalar carries everything:
for outputs y = f(x₁, …, xₙ) and a random cotangent w (seeded), s(x) = Σ w · y. The
analytic gradient ∂s/∂xᵢ comes from one backward pass; the numeric one from the five-point
central difference along a unit vector d:

    ∂s/∂d ≈ [−s(x + 2hd) + 8 s(x + hd) − 8 s(x − hd) + s(x − 2hd)] / (12 h)      (error O(h⁴))

with h = 1e-3 by default. In float64 this gives about 1e-10 relative accuracy on smooth
functions, so a real bug stands far above the noise. Two modes choose the unit vectors d:

* **element-wise** (the default, ``directions=None``): every coordinate axis of every input,
  so each entry of the gradient is compared on its own. Exhaustive, and as many as four
  evaluations of f per entry: right for an op, hopeless for a network of 10⁵ parameters.
* **directional** (``directions=k``): k random unit vectors per input, drawn from ``seed``.
  Each compares the analytic dᵀ∇ₓs (for a vector-valued f, wᵀ J d: the random cotangent w
  stays) with the stencil along d: 4k evaluations per input whatever its size. A wrong
  gradient e = analytic − true shows up as dᵀe, which for a random d is zero with
  probability 0, so a few directions find what the element-wise check finds; being unit
  vectors like the axes, the same h, error formula and floor apply.

The reported error per input is, over its entries (or its k directions),

    relative error = ‖analytic − numeric‖∞ / max(‖analytic‖∞, ‖numeric‖∞, 1e-3)

and the check passes when it is ≤ ``rtol`` (1e-6 by default). The floor 1e-3 keeps a
derivative that is exactly zero (a linear op's second derivative) from being compared with
pure rounding noise (about 1e-13·|s|/h); below it the check is absolute, at rtol·1e-3. A
non-finite value (NaN, ±inf) in the analytic gradient or in the finite difference fails the
check outright, naming the input and where: the max-based error above would otherwise be
NaN, and NaN compares false with everything. Keep inputs at least 2h away from kinks (ReLU
at 0, ties in max), where no finite difference is meaningful; a ReLU network with many units
always has some unit within 2h·|Jd| of its kink unless h is tiny, so check those with a
small h (1e-6 is still far above float64 rounding, see tests/test_directional_checks.py).

``gradgradcheck`` applies the same check to the backward pass itself: it builds
g(x, v) = ∇ₓ(v · f(x)) with ``create_graph=True`` and checks g's derivatives with respect
to both x and v, i.e. every second-order path of f, in either mode.
"""
import numpy

from . import backend
from .engine import grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    pass


def _as_outputs(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def _five_point(values, h):
    """The stencil above from s(x + 2hd), s(x + hd), s(x − hd), s(x − 2hd)."""
    return (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * h)


def _numeric_gradient(scalar, arrays, i, h):
    """∂s/∂xᵢ entry by entry: the stencil along each coordinate axis."""
    x = arrays[i]
    out = numpy.zeros(x.shape, dtype=numpy.float64)
    flat, out_flat = x.reshape(-1), out.reshape(-1)
    for j in range(flat.size):
        original = flat[j]
        values = []
        for step in (2 * h, h, -h, -2 * h):
            flat[j] = original + step
            values.append(scalar(arrays))
        flat[j] = original
        out_flat[j] = _five_point(values, h)
    return out


def _numeric_directional(scalar, arrays, i, h, d):
    """∂s/∂d for a unit vector d in the space of input i: the stencil along d."""
    original = arrays[i]
    values = []
    for step in (2 * h, h, -h, -2 * h):
        arrays[i] = original + step * d
        values.append(scalar(arrays))
    arrays[i] = original
    return _five_point(values, h)


def _unit_directions(rng, shape, k):
    """k random unit vectors (Euclidean norm 1) of the given shape."""
    ds = []
    for _ in range(k):
        d = rng.standard_normal(shape)
        ds.append(d / max(numpy.linalg.norm(d), 1e-300))
    return ds


def _first_nonfinite(array):
    """(value, index) of the first NaN or ±inf in ``array``, or None when all are finite."""
    bad = numpy.argwhere(~numpy.isfinite(array))
    if not len(bad):
        return None
    index = tuple(int(j) for j in bad[0])
    return array[index], index


def _scale(a, n):
    return max(numpy.abs(a).max(initial=0), numpy.abs(n).max(initial=0), 1e-3)


def _relative_error(a, n):
    return float(numpy.abs(a - n).max(initial=0) / _scale(a, n))


def _fail(raise_exception, message):
    """Raise the non-finite failure, or count it as an infinite error."""
    if raise_exception:
        raise GradcheckError(message)
    return float("inf")


def _smoothness(numeric, n, a, h, err):
    """On a failure, redo the difference with h/10: if the numeric side moves by a tenth of
    the error or more, the stencil, not the gradient, is the likely culprit; say so."""
    moved = float(numpy.abs(n - numeric(h / 10)).max(initial=0) / _scale(a, n))
    if moved < err / 10:
        return ""
    return (f" (the finite difference itself moves by {moved:.1e} when h shrinks to {h / 10:.0e}: "
            f"f is not smooth within 2h here, e.g. a ReLU kink or a jump; try a smaller h)")


def gradcheck(f, inputs, h=1e-3, rtol=1e-6, seed=0, raise_exception=True, directions=None):
    """Check ∂f/∂inputs against central finite differences; return the worst relative error.

    ``f`` takes Tensors and returns a Tensor (or a tuple of Tensors). ``inputs`` are float64
    arrays or Tensors; all are checked. ``directions=None`` checks every entry;
    ``directions=k`` checks k random unit directions per input (see the module docstring).
    Raises ``GradcheckError`` naming the input and the error when a check fails, or naming
    the input and the place where a gradient is not finite (or returns the worst error,
    ``inf`` for a non-finite one, if ``raise_exception=False``).
    """
    if directions is not None and (isinstance(directions, bool) or not isinstance(directions, int)
                                   or directions < 1):
        raise ValueError(f"gradcheck: directions must be None (every entry) or a positive int, "
                         f"got {directions!r}")
    arrays = [numpy.array(backend.to_numpy(x.data if isinstance(x, Tensor) else x), dtype=numpy.float64)
              for x in inputs]
    xp = backend.xp
    rng = numpy.random.default_rng([seed, 0x6763])   # its own stream, unrelated to callers

    def leaves(arrs):
        return [Tensor(xp.asarray(a), requires_grad=True) for a in arrs]

    xs = leaves(arrays)
    ys = _as_outputs(f(*xs))
    ws = [rng.standard_normal(y.shape) for y in ys]

    def scalar(arrs):
        outs = _as_outputs(f(*leaves(arrs)))
        return float(sum(numpy.sum(backend.to_numpy(y.data) * w) for y, w in zip(outs, ws)))

    s = None
    for y, w in zip(ys, ws):
        term = (y * Tensor(xp.asarray(w))).sum()
        s = term if s is None else s + term
    analytic = grad(s, xs, allow_unused=True) if s.requires_grad else [None] * len(xs)
    errors = []
    for i, (a, x) in enumerate(zip(analytic, arrays)):
        where = f"gradcheck: input {i} (shape {x.shape})"
        a = numpy.zeros_like(x) if a is None else backend.to_numpy(a.data)
        bad = _first_nonfinite(a)
        if bad is not None:
            errors.append(_fail(raise_exception, f"{where}: the analytic gradient is {bad[0]} at "
                                f"index {bad[1]}, so it cannot match any finite difference."))
            continue
        if directions is None:
            def numeric(step):
                return _numeric_gradient(scalar, arrays, i, step)
        else:
            ds = _unit_directions(numpy.random.default_rng([seed, 0x6764, i]), x.shape, directions)
            a = numpy.array([numpy.sum(a * d) for d in ds])               # dᵀ ∇ₓs

            def numeric(step):
                return numpy.array([_numeric_directional(scalar, arrays, i, step, d) for d in ds])
        n = numeric(h)
        bad = _first_nonfinite(n)
        if bad is not None:
            what = (f"the numeric gradient is {bad[0]} at index {bad[1]}" if directions is None
                    else f"the numeric derivative along random direction {bad[1][0]} is {bad[0]}")
            errors.append(_fail(raise_exception, f"{where}: {what}: f is not finite within "
                                f"2h = {2 * h:.0e} of the input there."))
            continue
        err = _relative_error(a, n)
        errors.append(err)
        if err > rtol and raise_exception:
            along = "" if directions is None else f" along {directions} random directions"
            raise GradcheckError(
                f"{where}: relative error {err:.3e} > {rtol:.0e}{along}{_smoothness(numeric, n, a, h, err)}\n"
                f"analytic:\n{a}\nnumeric:\n{n}")
    return max(errors) if errors else 0.0


def gradgradcheck(f, inputs, h=1e-3, rtol=1e-6, seed=0, raise_exception=True, directions=None):
    """Check every second derivative of ``f`` (see the module docstring), entry by entry or,
    with ``directions=k``, along k random unit directions per input."""
    arrays = [numpy.array(backend.to_numpy(x.data if isinstance(x, Tensor) else x), dtype=numpy.float64)
              for x in inputs]
    n = len(arrays)
    rng = numpy.random.default_rng([seed, 0x6767])
    # the output shapes, from a recorded call: f may take gradients itself (a MAML inner step)
    ys = _as_outputs(f(*[Tensor(backend.xp.asarray(a), requires_grad=True) for a in arrays]))
    vs = [rng.standard_normal(y.shape) for y in ys]

    def first_derivative(*args):
        xs, v = args[:n], args[n:]
        ys = _as_outputs(f(*xs))
        live = [(y, vi) for y, vi in zip(ys, v) if y.requires_grad]
        if not live:
            return tuple(Tensor(backend.xp.zeros(x.shape)) for x in xs)
        gs = grad([y for y, _ in live], list(xs), grad_outputs=[vi for _, vi in live],
                  create_graph=True, allow_unused=True)                 # g = ∇ₓ(v · f(x))
        return tuple(g if g is not None else Tensor(backend.xp.zeros(x.shape))
                     for g, x in zip(gs, xs))

    return gradcheck(first_derivative, arrays + vs, h=h, rtol=rtol, seed=seed,
                     raise_exception=raise_exception, directions=directions)
