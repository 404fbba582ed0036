"""MAML's whole meta-gradient for a ReLU MLP with the squared-error loss, as one compiled
kernel: the fast path of ``MAML.meta_gradients`` for the sinusoid network, beside the
readable one (the engine's graph of ``MAML.meta_loss``) and tested equal to it
(tests/test_maml_mlp_fused.py).

Why. At the sinusoid's sizes (1-40-40-1, 10 points, 25 tasks) a step is ~10 MFLOP, too
little to hide the cost of a few hundred NumPy calls and the engine's walk of a graph in
Python; here the meta-gradient is one call. The tasks are cut into as many parts as the
Numba kernels have threads, run at once (``prange``): on the 2-core machine the training
step of ``experiments/bench.py``'s ``sinusoid_maml`` took 0.32 ms on two threads and 0.53 ms
on one (``TINYMETA_NUMBA_THREADS=1``); through the graph it took 0.89 ms (the side-by-side
run of 2026-12-04, README).

The math, for one task, layers l = 0 … L−1, a₀ = x, W_l (n_{l+1}, n_l):

    z_l = a_l W_lᵀ + b_l,   a_{l+1} = relu(z_l) (l < L−1),   out = z_{L−1}
    L(θ) = mean (out − y)²                      δ_{L−1} = ∂L/∂out = 2 (out − y) / (N n_L)
    ∇W_l = δ_lᵀ a_l,  ∇b_l = Σₙ δ_l,            δ_{l−1} = (δ_l W_l) ⊙ [a_l > 0]

Inner steps θ_{j+1} = θ_j − α ∇L_support(θ_j), j < k. The meta-gradient of the query loss
L_q(θ_k) is back-propagated through them (second order):

    v ← ∇L_q(θ_k);   for j = k−1 … 0:  v ← v − α H_support(θ_j) v       (H: the Hessian)

and first order (FOMAML) stops at v = ∇L_q(θ_k). H v is Pearlmutter's R-operator applied to
the backward pass above, with the direction V = (V_l, c_l) (ReLU's second derivative is zero
almost everywhere, so only the products change):

    R z_l = R a_l W_lᵀ + a_l V_lᵀ + c_l,     R a_{l+1} = R z_l ⊙ [a_{l+1} > 0],   R a₀ = 0
    R δ_{L−1} = 2 R out / (N n_L)
    (Hv)_W_l = R δ_lᵀ a_l + δ_lᵀ R a_l,      (Hv)_b_l = Σₙ R δ_l
    R δ_{l−1} = (R δ_l W_l + δ_l V_l) ⊙ [a_l > 0]

Layout: the layers' weights are padded into one (L, P, P) array and the biases into (L, P),
P the widest layer; loops run over the true widths, so the padding is never read. Every
matrix product is written with its innermost loop along a contiguous row, and reads only
the units that ReLU left on (``forward`` lists them per example: about half), which also
keeps unpredictable branches out of the loops; a version that multiplied by the masks was
1.5× slower. The sums are reassociated (``fastmath`` ``reassoc``/``contract``/``nsz`` only:
NaN and inf keep their meaning, so a diverging run is still caught by ``check_finite``).

Compilation: only ``maml_meta_gradients`` is cached on disk (the first call in a fresh
install compiles it, about 15 s; later processes load it in 0.2 s). The functions it calls
are compiled into it and deliberately not cached themselves: with them cached, the top
function loaded from the cache ran 2.4× slower than compiled in the process (1.27 against
0.52 ms a call, reproducibly; numba/numba#10617 reports the same kind of difference); with
them uncached it runs as fast as freshly compiled.
"""
import numpy as np
from numba import njit, prange

from autograd import kernels

FAST = {"reassoc", "contract", "nsz"}


@njit(fastmath=FAST)
def transpose(W, sizes, WT):
    """WT[l] = W_lᵀ (the layers' true widths)."""
    for l in range(len(sizes) - 1):
        for j in range(sizes[l + 1]):
            for k in range(sizes[l]):
                WT[l, k, j] = W[l, j, k]


@njit(fastmath=FAST)
def forward(WT, b, sizes, x, A, act, cnt):
    """A[0] = x, A[l+1] = relu(A[l] W_lᵀ + b_l), the last layer without relu (WT[l] = W_lᵀ).
    act[l, n, :cnt[l, n]]: the units of layer l that are not zero for example n (every
    unit of the input and output layers), the only ones any product below reads."""
    L, N = len(sizes) - 1, x.shape[0]
    for n in range(N):
        for k in range(sizes[0]):
            A[0, n, k] = x[n, k]
            act[0, n, k] = k
        cnt[0, n] = sizes[0]
    for l in range(L):
        n_out = sizes[l + 1]
        for n in range(N):
            for j in range(n_out):
                A[l + 1, n, j] = b[l, j]
            for m in range(cnt[l, n]):
                k = act[l, n, m]
                a = A[l, n, k]
                for j in range(n_out):
                    A[l + 1, n, j] += a * WT[l, k, j]            # z_l = a_l W_lᵀ + b_l
            c = 0
            for j in range(n_out):
                z = A[l + 1, n, j]
                on = l == L - 1 or not z <= 0                    # NaN stays on: it reaches the loss, as in the graph
                A[l + 1, n, j] = z if on else 0.0                # a_{l+1} = relu(z_l)
                act[l + 1, n, c] = j
                c += on                                          # the list of units that are on
            cnt[l + 1, n] = c


@njit(fastmath=FAST)
def output_delta(A, y, sizes, D):
    """δ_{L−1} = 2 (out − y) / (N n_L) into D[L−1]; returns the loss mean (out − y)²."""
    L, N = len(sizes) - 1, y.shape[0]
    n_out = sizes[L]
    scale = 2.0 / (N * n_out)
    total = 0.0
    for n in range(N):
        for o in range(n_out):
            e = A[L, n, o] - y[n, o]
            total += e * e
            D[L - 1, n, o] = scale * e
    return total / (N * n_out)


@njit(fastmath=FAST)
def backward(W, sizes, A, act, cnt, D, gW, gb):
    """From δ_{L−1} in D[L−1]: every δ_l into D and ∇W_l, ∇b_l into gW, gb. δ_l is zero
    off layer l+1's units that are on, so only those are read."""
    L, N = len(sizes) - 1, A.shape[1]
    for l in range(L - 1, -1, -1):
        n_in, n_out = sizes[l], sizes[l + 1]
        gW[l, :n_out, :n_in] = 0.0
        gb[l, :n_out] = 0.0
        for n in range(N):
            for m in range(cnt[l + 1, n]):
                j = act[l + 1, n, m]
                d = D[l, n, j]
                gb[l, j] += d                                    # ∇b_l = Σₙ δ_l
                for k in range(n_in):
                    gW[l, j, k] += d * A[l, n, k]                # ∇W_l = δ_lᵀ a_l
        if l > 0:
            for n in range(N):
                D[l - 1, n, :n_in] = 0.0
                for m in range(cnt[l + 1, n]):
                    j = act[l + 1, n, m]
                    d = D[l, n, j]
                    for k in range(n_in):
                        D[l - 1, n, k] += d * W[l, j, k]         # δ_{l−1} = δ_l W_l …
                for k in range(n_in):
                    D[l - 1, n, k] = D[l - 1, n, k] if A[l, n, k] > 0 else 0.0   # … ⊙ [a_l > 0]


@njit(fastmath=FAST)
def hessian_vector(W, WT, sizes, A, act, cnt, D, VW, VT, Vb, RA, RD, HW, Hb):
    """H v of the loss whose forward (A, act, cnt) and backward (D) passes at θ = W are
    given, for the direction v = (VW, Vb), into HW, Hb (WT, VT: W and VW transposed; RA, RD:
    scratch of A's and D's shapes). R a_l and R δ_l are zero where a_l and δ_l are."""
    L, N = len(sizes) - 1, A.shape[1]
    scale = 2.0 / (N * sizes[L])
    RA[0, :, :sizes[0]] = 0.0                                    # R a₀ = 0: the input is data
    for l in range(L):                                           # R forward
        n_out = sizes[l + 1]
        for n in range(N):
            for j in range(n_out):
                RA[l + 1, n, j] = Vb[l, j]
            for m in range(cnt[l, n]):
                k = act[l, n, m]
                a, r = A[l, n, k], RA[l, n, k]
                for j in range(n_out):
                    RA[l + 1, n, j] += a * VT[l, k, j] + r * WT[l, k, j]   # R z_l = a_l V_lᵀ + c_l + R a_l W_lᵀ
            if l < L - 1:
                for j in range(n_out):
                    RA[l + 1, n, j] = RA[l + 1, n, j] if A[l + 1, n, j] > 0 else 0.0   # ⊙ [a_{l+1} > 0]
    for n in range(N):
        for o in range(sizes[L]):
            RD[L - 1, n, o] = scale * RA[L, n, o]                # R δ_{L−1} = 2 R out / (N n_L)
    for l in range(L - 1, -1, -1):                               # R backward
        n_in, n_out = sizes[l], sizes[l + 1]
        HW[l, :n_out, :n_in] = 0.0
        Hb[l, :n_out] = 0.0
        for n in range(N):
            for m in range(cnt[l + 1, n]):
                j = act[l + 1, n, m]
                r, d = RD[l, n, j], D[l, n, j]
                Hb[l, j] += r                                    # (Hv)_b_l = Σₙ R δ_l
                for k in range(n_in):
                    HW[l, j, k] += r * A[l, n, k] + d * RA[l, n, k]   # (Hv)_W_l = R δ_lᵀ a_l + δ_lᵀ R a_l
        if l > 0:
            for n in range(N):
                RD[l - 1, n, :n_in] = 0.0
                for m in range(cnt[l + 1, n]):
                    j = act[l + 1, n, m]
                    r, d = RD[l, n, j], D[l, n, j]
                    for k in range(n_in):
                        RD[l - 1, n, k] += r * W[l, j, k] + d * VW[l, j, k]   # R δ_{l−1} = R δ_l W_l + δ_l V_l …
                for k in range(n_in):
                    RD[l - 1, n, k] = RD[l - 1, n, k] if A[l, n, k] > 0 else 0.0   # … ⊙ [a_l > 0]


@njit(fastmath=FAST)
def tasks_meta_gradients(W, b, sizes, xs, ys, xq, yq, alpha, steps, second_order, gW, gb):
    """Σₜ L_q,t(θ_k) over the tasks t of (xs, ys, xq, yq), returned, and the sum over t of
    its gradient with respect to θ = (W, b), through the k = ``steps`` inner steps of size
    α, into (gW, gb) (zeroed here)."""
    T, L, P = xs.shape[0], W.shape[0], W.shape[1]
    Ns, Nq, dt = xs.shape[1], xq.shape[1], W.dtype
    TW, TWT = np.empty((steps + 1, L, P, P), dt), np.empty((steps + 1, L, P, P), dt)   # θ_0 … θ_k, W's transposed
    Tb = np.empty((steps + 1, L, P), dt)
    A, D = np.empty((steps + 1, L + 1, Ns, P), dt), np.empty((steps + 1, L, Ns, P), dt)   # support passes
    act, cnt = np.empty((steps + 1, L + 1, Ns, P), np.int64), np.empty((steps + 1, L + 1, Ns), np.int64)
    Aq, Dq = np.empty((L + 1, Nq, P), dt), np.empty((L, Nq, P), dt)                         # query pass
    actq, cntq = np.empty((L + 1, Nq, P), np.int64), np.empty((L + 1, Nq), np.int64)
    RA, RD = np.empty((L + 1, Ns, P), dt), np.empty((L, Ns, P), dt)                         # H v's scratch
    HW, Hb, VT = np.empty((L, P, P), dt), np.empty((L, P), dt), np.empty((L, P, P), dt)
    v, c = np.empty((L, P, P), dt), np.empty((L, P), dt)         # one task's gradient
    gW[:] = 0.0
    gb[:] = 0.0
    total = 0.0
    TW[0] = W
    Tb[0] = b
    transpose(W, sizes, TWT[0])
    for t in range(T):
        for j in range(steps):
            forward(TWT[j], Tb[j], sizes, xs[t], A[j], act[j], cnt[j])
            output_delta(A[j], ys[t], sizes, D[j])
            backward(TW[j], sizes, A[j], act[j], cnt[j], D[j], v, c)
            for l in range(L):
                for i in range(sizes[l + 1]):
                    Tb[j + 1, l, i] = Tb[j, l, i] - alpha * c[l, i]          # θ_{j+1} = θ_j − α ∇L_support(θ_j)
                    for k in range(sizes[l]):
                        w = TW[j, l, i, k] - alpha * v[l, i, k]
                        TW[j + 1, l, i, k] = w
                        TWT[j + 1, l, k, i] = w                               # and transposed
        forward(TWT[steps], Tb[steps], sizes, xq[t], Aq, actq, cntq)
        total += output_delta(Aq, yq[t], sizes, Dq)
        backward(TW[steps], sizes, Aq, actq, cntq, Dq, v, c)            # v = ∇L_q(θ_k)
        if second_order:
            for j in range(steps - 1, -1, -1):
                transpose(v, sizes, VT)
                hessian_vector(TW[j], TWT[j], sizes, A[j], act[j], cnt[j], D[j], v, VT, c, RA, RD, HW, Hb)
                for l in range(L):
                    for i in range(sizes[l + 1]):
                        c[l, i] -= alpha * Hb[l, i]                       # v ← v − α H_support(θ_j) v
                        for k in range(sizes[l]):
                            v[l, i, k] -= alpha * HW[l, i, k]
        for l in range(L):
            for i in range(sizes[l + 1]):
                gb[l, i] += c[l, i]                                       # Σₜ ∇L_q,t
                for k in range(sizes[l]):
                    gW[l, i, k] += v[l, i, k]
    return total


@njit(cache=True, fastmath=FAST, parallel=True)
def maml_meta_gradients(W, b, sizes, xs, ys, xq, yq, alpha, steps, second_order, gW, gb, parts):
    """``tasks_meta_gradients`` of all the tasks, cut into ``parts`` runs of consecutive
    tasks that Numba's threads take at once; their sums added."""
    T, L, P = xs.shape[0], W.shape[0], W.shape[1]
    part_W, part_b = np.empty((parts, L, P, P), W.dtype), np.empty((parts, L, P), W.dtype)
    totals = np.empty(parts)
    for p in prange(parts):
        lo, hi = T * p // parts, T * (p + 1) // parts
        totals[p] = tasks_meta_gradients(W, b, sizes, xs[lo:hi], ys[lo:hi], xq[lo:hi], yq[lo:hi], alpha, steps,
                                         second_order, part_W[p], part_b[p])
    gW[:] = part_W[0]
    gb[:] = part_b[0]
    for p in range(1, parts):
        gW += part_W[p]
        gb += part_b[p]
    return totals.sum()


def mlp_maml_meta_gradients(weights, biases, xs, ys, xq, yq, alpha, steps, second_order=True, parts=None):
    """(mean query loss over tasks, [∇W_l], [∇b_l]) of MAML with ``steps`` inner steps of
    size ``alpha`` for the ReLU MLP with weights W_l (n_{l+1}, n_l) and biases b_l, on
    support (xs, ys) and query (xq, yq) arrays of shape (T, N, width), all of one dtype.
    The tasks are cut into ``parts`` (default: the Numba kernels' thread count) run at once."""
    dtype = weights[0].dtype
    widths = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    L, P, T = len(weights), max(widths), xs.shape[0]
    W, b = np.zeros((L, P, P), dtype), np.zeros((L, P), dtype)
    for l, (w, c) in enumerate(zip(weights, biases)):
        W[l, :w.shape[0], :w.shape[1]] = w
        b[l, :c.shape[0]] = c
    gW, gb = np.empty((L, P, P), dtype), np.empty((L, P), dtype)
    parts = max(1, min(T, kernels.numba_threads() if parts is None else int(parts)))
    total = maml_meta_gradients(W, b, np.array(widths), *(np.ascontiguousarray(a, dtype) for a in (xs, ys, xq, yq)),
                                dtype.type(alpha), int(steps), bool(second_order), gW, gb, parts)
    return (dtype.type(total / T),                               # (1/T) Σₜ L_q,t and (1/T) Σₜ ∇L_q,t
            [gW[l, :w.shape[0], :w.shape[1]] / T for l, w in enumerate(weights)],
            [gb[l, :c.shape[0]] / T for l, c in enumerate(biases)])
