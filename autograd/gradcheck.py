"""Finite-difference checks of the engine's derivatives, for our tests and for users' own
functions.

The check projects the function onto a random direction so one scalar carries everything:
for outputs y = f(x₁, …, xₙ) and a random cotangent w (seeded), s(x) = Σ w · y. The
analytic gradient ∂s/∂xᵢ comes from one backward pass; the numeric one from the five-point
central difference, element by element:

    ∂s/∂x ≈ [−s(x + 2h) + 8 s(x + h) − 8 s(x − h) + s(x − 2h)] / (12 h)      (error O(h⁴))

with h = 1e-3 by default. In float64 this gives about 1e-10 relative accuracy on smooth
functions, so a real bug stands far above the noise. The reported error per input is

    relative error = ‖analytic − numeric‖∞ / max(‖analytic‖∞, ‖numeric‖∞, 1e-3)

and the check passes when it is ≤ ``rtol`` (1e-6 by default). The floor 1e-3 keeps a
derivative that is exactly zero (a linear op's second derivative) from being compared with
pure rounding noise (about 1e-13·|s|/h); below it the check is absolute, at rtol·1e-3. Keep inputs at least 2h away
from kinks (ReLU at 0, ties in max), where no finite difference is meaningful.

``gradgradcheck`` applies the same check to the backward pass itself: it builds
g(x, v) = ∇ₓ(v · f(x)) with ``create_graph=True`` and checks g's derivatives with respect
to both x and v, i.e. every second-order path of f.
"""
import numpy

from . import backend
from .engine import grad
from .mode import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    pass


def _as_outputs(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def _numeric_gradient(scalar, arrays, i, h):
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
        out_flat[j] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * h)
    return out


def gradcheck(f, inputs, h=1e-3, rtol=1e-6, seed=0, raise_exception=True):
    """Check ∂f/∂inputs against central finite differences; return the worst relative error.

    ``f`` takes Tensors and returns a Tensor (or a tuple of Tensors). ``inputs`` are float64
    arrays or Tensors; all are checked. Raises ``GradcheckError`` naming the input and the
    error when a check fails (or returns the errors if ``raise_exception=False``).
    """
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
        a = numpy.zeros_like(x) if a is None else backend.to_numpy(a.data)
        n = _numeric_gradient(scalar, arrays, i, h)
        scale = max(numpy.abs(a).max(initial=0), numpy.abs(n).max(initial=0), 1e-3)
        err = float(numpy.abs(a - n).max(initial=0) / scale)
        errors.append(err)
        if err > rtol and raise_exception:
            raise GradcheckError(
                f"gradcheck: input {i} (shape {x.shape}): relative error {err:.3e} > {rtol:.0e}\n"
                f"analytic:\n{a}\nnumeric:\n{n}")
    return max(errors) if errors else 0.0


def gradgradcheck(f, inputs, h=1e-3, rtol=1e-6, seed=0, raise_exception=True):
    """Check every second derivative of ``f`` (see the module docstring)."""
    arrays = [numpy.array(backend.to_numpy(x.data if isinstance(x, Tensor) else x), dtype=numpy.float64)
              for x in inputs]
    n = len(arrays)
    rng = numpy.random.default_rng([seed, 0x6767])
    with no_grad():
        ys = _as_outputs(f(*[Tensor(backend.xp.asarray(a)) for a in arrays]))
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
                     raise_exception=raise_exception)
