"""The analyses of experiments/analyses.py, checked on small problems.

Taylor expansion (Nichol et al. 2018, §5.1): the remainder of each measured gradient after
its leading terms must fall like α²: least-squares log-log slope in [1.8, 2.2] over
α = 0.02·2^-j, j < 6 (float64; the smallest remainder is asserted ≥ 1e4 × the rounding
of the gradients, so the slope is not a rounding artefact). The check can fail: MAML's
gradient measured against FOMAML's leading terms (missing α H₀g₁) leaves a remainder of
order α, slope ≈ 1.
"""
import numpy as np

from experiments import analyses

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
