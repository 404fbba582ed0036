"""``check_hvp``: the properties every Hessian-vector product must have, checked on your own
scalar function at your own point.

For f: ℝⁿ → ℝ with Hessian H = ∇²f(x), the engine computes H v by double backward
(``derivatives.hvp``: H v = ∇ₓ(∇ₓf · v)), never forming H. These facts hold for any
twice-differentiable f, so a failure is a bug in some op's backward (or a kink of f within
the stencil):

==================  =====================================================  =========
property            compared                                               bound
==================  =====================================================  =========
symmetry            uᵀ(Hv)  against  vᵀ(Hu)                                1e-8
linearity           H(au + bv)  against  a·Hu + b·Hv                       1e-8
gradient_difference Hv  against  [∇f(x + hv) − ∇f(x − hv)] / 2h, h = 1e-5  1e-6
hessian             [He₁ … Heₙ]  against second differences of f itself    1e-5
==================  =====================================================  =========

u and v are random unit vectors (Euclidean norm 1 over all inputs together), a and b random
numbers in [−2, 2], all drawn from ``seed`` with a NumPy Generator on the host, so a seed
gives the same check on either backend. Each property is measured for ``directions`` pairs
(u, v) and the worst error is reported. The bounds, and why:

* **symmetry** (H = Hᵀ for a twice continuously differentiable f). Error
  |uᵀHv − vᵀHu| / (‖u‖‖Hv‖ + ‖v‖‖Hu‖); the denominator bounds both terms
  (Cauchy–Schwarz), so a small uᵀHv from cancellation is not divided by ~0. In exact
  arithmetic the two sides are equal; in float64 they differ by rounding, a few ε ≈ 2e-16
  per term times the depth of the computation, far below 1e-8. A backward that computes
  a non-symmetric second derivative gives an O(1) error. It needs no finite difference, so
  it runs in float32 too, with the bound 1e-3 (ε ≈ 1.2e-7).
* **linearity** (H is a linear map). Error ‖H(au + bv) − aHu − bHv‖∞ / ‖|a||Hu| + |b||Hv|‖∞,
  relative to the size of the terms so that a·Hu ≈ −b·Hv does not divide by ~0. Again
  exact up to rounding: bound 1e-8 (1e-3 in float32). A backward that is not linear in its
  incoming gradient fails it.
* **gradient_difference** (H is the derivative of the gradient). The central difference of
  the analytic gradient along the unit vector v,

      Hv ≈ [∇f(x + hv) − ∇f(x − hv)] / 2h,

  has truncation error h²/6 · ‖∇⁴f[v, v, v]‖ ≈ 2e-11 and rounding error about
  ε·‖∇f‖/h ≈ 2e-11·‖∇f‖ at h = 1e-5 (the h that balances the two, ε^⅓, for derivatives of
  size one). Error ‖Hv − fd‖∞ / max(‖Hv‖∞, ‖fd‖∞, 1e-3·‖∇f(x)‖∞): the floor, scaled with
  the gradient, keeps a zero Hessian (a linear f) from being compared with pure rounding
  noise, which is then 2e-8 of the floor. Bound 1e-6: four orders over the noise, six
  under the O(1) error of a backward that uses a raw array (its second-order path is cut,
  so Hv lacks a term the difference of gradients has).
* **hessian**, only when the inputs have at most ``hessian_max_size`` entries in all: H is
  assembled column by column from n HVPs with unit vectors eⱼ and compared with second
  differences of f's *values*, independent of every backward pass:

      D(h)ᵢⱼ = [f(x + heᵢ + heⱼ) − f(x + heᵢ − heⱼ) − f(x − heᵢ + heⱼ) + f(x − heᵢ − heⱼ)] / 4h²
      Hᵢⱼ ≈ [4 D(h) − D(2h)] / 3                      (Richardson: error O(h⁴), h = 1e-3)

  Rounding is about 1.4·ε·|f|/h² ≈ 3e-10·|f| and truncation O(h⁴) ≈ 1e-12. Error
  ‖H − fd‖∞ / max(‖H‖∞, ‖fd‖∞, 1e-3·|f(x)|), the floor again keeping a linear f's zero
  Hessian from being compared with rounding noise (3e-7 of the floor). Bound 1e-5: thirty
  times over that worst case. This is the one property that also catches a first-order
  backward that is wrong but self-consistent, e.g. a gradient A x for f = ½ xᵀAx with
  a non-symmetric A: the difference of gradients agrees with that H = A, f's own
  curvature ½(A + Aᵀ) does not. It costs n HVPs and 4n(n + 1) evaluations of f.

The finite-difference properties need float64 inputs: in float32 the rounding terms above
grow by ε₃₂/ε₆₄ ≈ 5e8 and swamp any bug. Keep x at least 2h (hessian: 4·``hessian_h``) away
from kinks (ReLU at 0, ties in max); no finite difference is meaningful across one.
"""
from collections import namedtuple
from dataclasses import dataclass

import numpy

from . import backend
from .engine import grad
from .tensor import Tensor

PROPERTIES = ("symmetry", "linearity", "gradient_difference", "hessian")
FINITE_DIFFERENCE = ("gradient_difference", "hessian")
BOUNDS = {"float64": {"symmetry": 1e-8, "linearity": 1e-8, "gradient_difference": 1e-6, "hessian": 1e-5},
          "float32": {"symmetry": 1e-3, "linearity": 1e-3}}
TINY = numpy.finfo(numpy.float64).tiny     # keeps 0 / 0 at 0 when everything vanishes

_Pair = namedtuple("_Pair", "u v hu hv a b")  # two unit directions, H at each, two numbers


class HVPCheckError(AssertionError):
    """A Hessian-vector product property failed; ``report`` holds every measurement."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class PropertyResult:
    """One row of the report: ``passed`` is None when the property was skipped."""
    name: str
    error: float
    bound: float
    passed: object
    note: str = ""


class HVPReport:
    """What ``check_hvp`` measured: ``report["symmetry"].error``, ``report.passed``, ``str(report)``."""

    def __init__(self, results, value, size, dtype):
        self.results, self.value, self.size, self.dtype = list(results), value, size, dtype

    def __getitem__(self, name):
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"HVPReport: no property {name!r}; it has {[r.name for r in self.results]}")

    @property
    def failures(self):
        return [r for r in self.results if r.passed is False]

    @property
    def passed(self):
        return not self.failures

    def __str__(self):
        head = f"check_hvp at f(x) = {self.value:.6g}, {self.size} entries, {self.dtype}"
        rows = [f"{'property':<20} {'error':>9} {'bound':>7}  result"]
        for r in self.results:
            if r.passed is None:
                rows.append(f"{r.name:<20} {'-':>9} {'-':>7}  skipped: {r.note}")
            else:
                verdict = "pass" if r.passed else "FAIL"
                rows.append(f"{r.name:<20} {r.error:9.2e} {r.bound:7.0e}  {verdict}"
                            + (f"  ({r.note})" if r.note else ""))
        return "\n".join([head] + rows)

    __repr__ = __str__


# ----------------------------------------------------------------------------- vectors
# A "vector" is a list of host arrays, one per input: the point x, the directions, H v.

def _dot(us, vs):
    """Σ uᵀv over the inputs, accumulated in float64 whatever the inputs' dtype."""
    return float(sum(numpy.vdot(u.astype(numpy.float64), v.astype(numpy.float64))
                     for u, v in zip(us, vs)))


def _norm(us):
    return _dot(us, us) ** 0.5


def _sup(us):
    return max(float(numpy.abs(u).max(initial=0)) for u in us)


def _combine(a, us, b, vs):
    return [a * u + b * v for u, v in zip(us, vs)]


def _unit(rng, shapes, dtype):
    vs = [rng.standard_normal(s) for s in shapes]
    norm = max(_norm(vs), TINY)
    return [(v / norm).astype(dtype) for v in vs]


def _first_nonfinite(us):
    """'nan in input 0 at index (2,)' for the first non-finite entry of a vector, else None."""
    for i, u in enumerate(us):
        bad = numpy.argwhere(~numpy.isfinite(u))
        if len(bad):
            index = tuple(int(j) for j in bad[0])
            return f"{u[index]} in input {i} at index {index}"
    return None


# ----------------------------------------------------------------------------- f at a point
class _Point:
    """f at x with ∇f recorded once (``create_graph=True``): every H v after that is one
    more backward pass through the recorded gradient, ∇ₓ(∇f · v)."""

    def __init__(self, f, arrays):
        self.xs = [Tensor(backend.from_numpy(a), requires_grad=True) for a in arrays]
        y = _scalar_output(f(*self.xs))
        self.value = backend.to_numpy(y.data).item()
        gs = grad(y, self.xs, create_graph=True, allow_unused=True)        # ∇f, recorded
        self.gradient = [numpy.zeros_like(a) if g is None else backend.to_numpy(g.data).copy()
                         for g, a in zip(gs, arrays)]
        self.live = [(i, g) for i, g in enumerate(gs) if g is not None and g.requires_grad]
        self.arrays = arrays

    def hvp(self, v):
        """H v as host arrays (zeros where ∇f does not depend on x: the linear parts)."""
        if not self.live:
            return [numpy.zeros_like(a) for a in self.arrays]
        found = grad([g for _, g in self.live], self.xs,
                     grad_outputs=[Tensor(backend.from_numpy(v[i])) for i, _ in self.live],
                     retain_graph=True, allow_unused=True)                  # ∇ₓ(∇f · v) = H v
        return [numpy.zeros_like(a) if h is None else backend.to_numpy(h.data).copy()
                for h, a in zip(found, self.arrays)]


def _scalar_output(y):
    if not isinstance(y, Tensor) or y.size != 1:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"check_hvp: f must return a scalar Tensor, got {shape}")
    return y


def _value(f, arrays):
    """f(x) as a float. The inputs still require grad: f may take gradients itself (a MAML
    inner step), as it does at the point being checked."""
    xs = [Tensor(backend.from_numpy(a), requires_grad=True) for a in arrays]
    return backend.to_numpy(_scalar_output(f(*xs)).data).item()


def _gradient(f, arrays):
    xs = [Tensor(backend.from_numpy(a), requires_grad=True) for a in arrays]
    gs = grad(_scalar_output(f(*xs)), xs, allow_unused=True)
    return [numpy.zeros_like(a) if g is None else backend.to_numpy(g.data) for g, a in zip(gs, arrays)]


# ----------------------------------------------------------------------------- properties
def _symmetry(pairs):
    worst = 0.0
    for p in pairs:
        scale = max(_norm(p.u) * _norm(p.hv) + _norm(p.v) * _norm(p.hu), TINY)
        worst = max(worst, abs(_dot(p.u, p.hv) - _dot(p.v, p.hu)) / scale)   # uᵀHv = vᵀHu
    return worst, ""


def _linearity(point, pairs):
    worst = 0.0
    for p in pairs:
        h_mix = point.hvp(_combine(p.a, p.u, p.b, p.v))                      # H(au + bv)
        gap = _sup(_combine(1.0, h_mix, -1.0, _combine(p.a, p.hu, p.b, p.hv)))   # vs aHu + bHv
        terms = [abs(p.a) * numpy.abs(x) + abs(p.b) * numpy.abs(y) for x, y in zip(p.hu, p.hv)]
        worst = max(worst, gap / max(_sup(terms), TINY))
    return worst, ""


def _gradient_difference(point, pairs, f, h):
    worst, floor = 0.0, 1e-3 * _sup(point.gradient)
    for p in pairs:
        v, hv = p.v, p.hv
        plus = _gradient(f, _combine(1.0, point.arrays, h, v))
        minus = _gradient(f, _combine(1.0, point.arrays, -h, v))
        fd = [(p - m) / (2 * h) for p, m in zip(plus, minus)]                # [∇f(x+hv) − ∇f(x−hv)] / 2h
        bad = _first_nonfinite(fd)
        if bad is not None:
            return float("inf"), f"the difference of gradients is {bad}"
        gap = _sup(_combine(1.0, hv, -1.0, fd))
        worst = max(worst, gap / max(_sup(hv), _sup(fd), floor, TINY))
    return worst, f"h = {h:.0e}"


def _hessian(point, f, h):
    flat = numpy.concatenate([a.ravel() for a in point.arrays])
    n = flat.size
    shapes = [a.shape for a in point.arrays]
    sizes = numpy.cumsum([a.size for a in point.arrays])[:-1]

    def unflatten(z):
        return [part.reshape(s) for part, s in zip(numpy.split(z, sizes), shapes)]

    eye = numpy.eye(n)
    H = numpy.stack([numpy.concatenate([c.ravel() for c in point.hvp(unflatten(eye[j]))])
                     for j in range(n)], axis=1)                             # column j = H eⱼ
    f0 = point.value

    def f_at(z):
        return f0 if not numpy.any(z - flat) else _value(f, unflatten(z))

    def second_differences(step):                                            # D(h) above
        D = numpy.empty((n, n))
        for i in range(n):
            for j in range(i, n):
                ei, ej = eye[i] * step, eye[j] * step
                D[i, j] = D[j, i] = (f_at(flat + ei + ej) - f_at(flat + ei - ej)
                                     - f_at(flat - ei + ej) + f_at(flat - ei - ej)) / (4 * step * step)
        return D

    fd = (4 * second_differences(h) - second_differences(2 * h)) / 3          # Richardson, O(h⁴)
    if not numpy.all(numpy.isfinite(fd)):
        return float("inf"), "f is not finite within 4h of x"
    scale = max(numpy.abs(H).max(), numpy.abs(fd).max(), 1e-3 * abs(f0), TINY)
    return float(numpy.abs(H - fd).max() / scale), f"{n}×{n}, h = {h:.0e}"


def _nonfinite(point, pairs):
    """Where the gradient or an H v first holds a NaN or an inf, or None."""
    bad = _first_nonfinite(point.gradient)
    if bad is not None:
        return f"the gradient is {bad}"
    for p in pairs:
        bad = _first_nonfinite(p.hu) or _first_nonfinite(p.hv)
        if bad is not None:
            return f"Hv is {bad}"
    return None


# ----------------------------------------------------------------------------- the check
def check_hvp(f, inputs, seed=0, directions=2, h=1e-5, hessian_h=1e-3, hessian_max_size=16,
              properties=None, bounds=None, raise_exception=True):
    """Check the Hessian-vector products of the scalar function ``f`` at ``inputs``.

    ``f`` takes Tensors and returns a scalar Tensor; ``inputs`` are float arrays (NumPy or
    CuPy) or Tensors, the point x. Runs the properties listed in the module docstring
    (``properties`` picks a subset; the full Hessian only while x has at most
    ``hessian_max_size`` entries) along ``directions`` random pairs drawn from ``seed``, and
    returns an ``HVPReport``. ``bounds`` overrides bounds by name. Raises ``HVPCheckError``
    naming the failed property, its error and its bound (or, with
    ``raise_exception=False``, returns the report with the failures in it).
    """
    properties = PROPERTIES if properties is None else tuple(properties)
    for name in properties:
        if name not in PROPERTIES:
            raise ValueError(f"check_hvp: unknown property {name!r}; choose from {PROPERTIES}")
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise ValueError(f"check_hvp: directions must be a positive int, got {directions!r}")
    if not inputs:
        raise ValueError("check_hvp: inputs is empty; pass the point x as a list of arrays or Tensors")
    arrays = [backend.to_numpy(x.data if isinstance(x, Tensor) else x).copy() for x in inputs]
    dtype = arrays[0].dtype
    for i, a in enumerate(arrays):
        if a.dtype.name not in ("float32", "float64") or a.dtype != dtype:
            raise TypeError(f"check_hvp: input {i} is {a.dtype} but all inputs must share one float "
                            f"dtype, float64 or float32 (input 0 is {dtype})")
    if dtype.name != "float64" and any(p in FINITE_DIFFERENCE for p in properties):
        raise TypeError(f"check_hvp: the finite-difference properties need float64 inputs, got "
                        f"{dtype}; cast with .astype(numpy.float64) or pass "
                        f"properties=('symmetry', 'linearity')")
    for name in bounds or {}:
        if name not in PROPERTIES:
            raise ValueError(f"check_hvp: bounds names unknown property {name!r}; choose from {PROPERTIES}")
    limits = dict(BOUNDS[dtype.name], **(bounds or {}))

    point = _Point(f, arrays)
    rng = numpy.random.default_rng([seed, 0x6876])            # its own stream, unrelated to callers
    shapes = [a.shape for a in arrays]
    pairs = []
    for _ in range(directions):
        u, v = _unit(rng, shapes, dtype), _unit(rng, shapes, dtype)
        a, b = rng.uniform(-2.0, 2.0, size=2)
        pairs.append(_Pair(u, v, point.hvp(u), point.hvp(v), float(a), float(b)))
    size = int(sum(a.size for a in arrays))
    nonfinite = _nonfinite(point, pairs)

    measure = {"symmetry": lambda: _symmetry(pairs),
               "linearity": lambda: _linearity(point, pairs),
               "gradient_difference": lambda: _gradient_difference(point, pairs, f, h),
               "hessian": lambda: _hessian(point, f, hessian_h)}
    results = []
    for name in properties:
        if name == "hessian" and size > hessian_max_size:
            results.append(PropertyResult(name, float("nan"), limits[name], None,
                                          f"{size} entries > hessian_max_size={hessian_max_size}"))
            continue
        error, note = (float("inf"), nonfinite) if nonfinite is not None else measure[name]()
        results.append(PropertyResult(name, error, limits[name], bool(error <= limits[name]), note))

    report = HVPReport(results, point.value, size, dtype.name)
    if report.failures and raise_exception:
        first, rest = report.failures[0], report.failures[1:]
        also = "".join(f"; also {r.name}, {r.error:.2e} > {r.bound:.0e}" for r in rest)
        note = f" ({first.note})" if first.note else ""
        raise HVPCheckError(f"check_hvp: {first.name} failed with relative error {first.error:.2e} "
                            f"> bound {first.bound:.0e}{note}{also}.", report)
    return report
