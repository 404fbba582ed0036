"""Conjugate gradient (Hestenes & Stiefel, 1952) for A x = b with A symmetric positive
definite, given only the product v ↦ A v (iMAML: A = I + H/λ, the product an HVP).

Vectors are lists of arrays (one per parameter). With ``task_axis=True`` every array has a
leading task axis and T independent systems are solved at once, each with its own step
sizes α and β (inner products reduce over everything but axis 0), so batching the tasks
changes nothing about any one task's iterates. In exact arithmetic CG solves an
n-dimensional system in n steps; iMAML stops after a few (5 by default).
"""
from autograd import backend


def task_dot(u, v):
    """⟨u, v⟩ of each task over all the arrays: shape (T,)."""
    return sum((a * b).reshape(a.shape[0], -1).sum(axis=1) for a, b in zip(u, v))


def scale(c, a):
    """Per-task numbers c (T,) times an array a (T, ...)."""
    return c.reshape((-1,) + (1,) * (a.ndim - 1)) * a


def safe(d):
    """d with its zeros replaced by ones: a system already solved takes steps of 0, not 0/0."""
    return backend.xp.where(d == 0, 1, d)


def conjugate_gradient(matvec, b, steps, task_axis=False, trace=None):
    """x ≈ A⁻¹ b after ``steps`` CG iterations from x₀ = 0; ``matvec`` maps a list of arrays
    v to the list A v. ``trace``: a list that receives, at every step, the curvature
    pᵀAp / pᵀp of the search direction, per task (T,): positive for A positive definite."""
    if steps < 0:
        raise ValueError(f"conjugate_gradient: steps must be >= 0, got {steps}")
    if not task_axis:                                               # one system: a task axis of 1
        one = conjugate_gradient(lambda v: [a[None] for a in matvec([vi[0] for vi in v])],
                                 [bi[None] for bi in b], steps, task_axis=True, trace=trace)
        return [xi[0] for xi in one]
    x = [backend.xp.zeros_like(bi) for bi in b]
    r = [bi.copy() for bi in b]                                     # r₀ = b − A x₀ = b
    p = [ri.copy() for ri in r]                                     # p₀ = r₀
    rr = task_dot(r, r)
    for _ in range(steps):
        Ap = matvec(p)
        pAp = task_dot(p, Ap)
        if trace is not None:
            trace.append(pAp / safe(task_dot(p, p)))
        alpha = rr / safe(pAp)                                      # α = rᵀr / pᵀAp
        x = [xi + scale(alpha, pi) for xi, pi in zip(x, p)]         # x ← x + α p
        r = [ri - scale(alpha, api) for ri, api in zip(r, Ap)]      # r ← r − α A p
        rr_new = task_dot(r, r)
        beta = rr_new / safe(rr)                                    # β = r'ᵀr' / rᵀr
        p = [ri + scale(beta, pi) for ri, pi in zip(r, p)]          # p ← r + β p
        rr = rr_new
    return x
