"""The linear feature baseline and the advantages (tinymeta/rl/baseline.py).

* features: the official code's (s, s², t/100, (t/100)², (t/100)³, 1), checked entry by entry;
* fit: returns that are exactly linear in the features (horizon 100) are recovered, the
  coefficients to 1e-9 without the ridge, the fitted values to 1e-4 with the default ridge
  λ = 1e-5 (measured: 7e-6; the ridge shrinks the nearly collinear t, t², t³ directions);
  noisy returns give NumPy's least-squares solution of the ridge system on the valid rows
  to 1e-9; rows after a trajectory's end do not change the fit, whatever they hold;
* advantages: mean 0 (to 1e-9) and standard deviation 1 (to 1e-7: the official divisor is
  std + 1e-8) over each task's valid steps, 0 after the end, and equal to (R − b − mean)/std
  computed here independently.
"""
import numpy as np

from tinymeta.rl import Episodes, LinearFeatureBaseline, advantages, discounted_returns, features
import os

import pytest

# The RL code runs on the NumPy backend only (MAMLRL refuses another in one sentence).
pytestmark = pytest.mark.skipif(os.environ.get("TINYMETA_BACKEND", "numpy") != "numpy",
                                reason="MAML-RL runs on the numpy backend only")



def random_episodes(rng, T=3, N=4, H=6, S=2, ended=True):
    obs = rng.uniform(-0.6, 0.6, size=(T, N, H, S))
    rewards = rng.standard_normal((T, N, H))
    mask = np.ones((T, N, H))
    if ended:
        mask[0, 1, 3:] = 0                                        # some trajectories end early
        mask[2, 0, 1:] = 0
    return Episodes(obs, rng.standard_normal((T, N, H, 2)), rewards * mask, mask)


def test_features_are_the_official_ones():
    obs = np.array([[[[0.5, -12.0], [0.25, 3.0]]]])                 # (1, 1, 2, 2)
    phi = features(obs)
    np.testing.assert_allclose(phi[0, 0, 0], [0.5, -10.0, 0.25, 100.0, 0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(phi[0, 0, 1], [0.25, 3.0, 0.0625, 9.0, 0.01, 1e-4, 1e-6, 1.0])


def test_fit_recovers_linear_returns_per_task():
    rng = np.random.default_rng(0)
    ep = random_episodes(rng, T=3, N=5, H=100, ended=False)
    true = rng.standard_normal((3, 8))
    returns = LinearFeatureBaseline.predict(true, ep.observations)
    exact = LinearFeatureBaseline(ridge=0.0).fit(ep.observations, returns, ep.mask)
    np.testing.assert_allclose(exact, true, atol=1e-9)
    ridge = LinearFeatureBaseline().fit(ep.observations, returns, ep.mask)            # λ = 1e-5
    np.testing.assert_allclose(LinearFeatureBaseline.predict(ridge, ep.observations), returns, atol=1e-4)


def test_fit_is_ridge_least_squares_on_the_valid_rows_only():
    rng = np.random.default_rng(1)
    ep = random_episodes(rng)
    returns = rng.standard_normal(ep.rewards.shape)
    base = LinearFeatureBaseline(ridge=1e-5)
    fitted = base.fit(ep.observations, returns, ep.mask)
    for t in range(3):
        valid = ep.mask[t].astype(bool)
        phi, r = features(ep.observations)[t][valid], returns[t][valid]
        expected = np.linalg.lstsq(phi.T @ phi + 1e-5 * np.eye(8), phi.T @ r, rcond=None)[0]
        np.testing.assert_allclose(fitted[t], expected, rtol=1e-9, atol=1e-9)
    garbage = np.where(ep.mask > 0, returns, 1e6)
    obs = np.where(ep.mask[..., None] > 0, ep.observations, -7.0)
    np.testing.assert_allclose(base.fit(obs, garbage, ep.mask), fitted, rtol=1e-9, atol=1e-9)


def test_advantages_are_centred_per_task_and_zero_after_the_end():
    rng = np.random.default_rng(2)
    ep = random_episodes(rng)
    adv = advantages(ep, 0.9, LinearFeatureBaseline())
    for t in range(3):
        valid = ep.mask[t].astype(bool)
        assert abs(adv[t][valid].mean()) < 1e-9
        assert abs(adv[t][valid].std() - 1) < 1e-7                   # std / (std + 1e-8)
    assert np.all(adv[ep.mask == 0] == 0)
    base = LinearFeatureBaseline()
    R = discounted_returns(ep.rewards, 0.9)
    a = R - base.predict(base.fit(ep.observations, R, ep.mask), ep.observations)
    valid = ep.mask[1].astype(bool)
    expected = (a[1][valid] - a[1][valid].mean()) / (a[1][valid].std() + 1e-8)
    np.testing.assert_allclose(adv[1][valid], expected, rtol=1e-9)
