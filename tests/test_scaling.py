"""Power-law fits against scipy's linear regression, and the convergence
rate of two random-feature networks' alignment with the width."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from rainbow_jax import align, scaling


def test_power_law_is_scipys_log_log_regression(rng):
  x = np.array([64, 128, 256, 512, 1024, 2048.0])
  y = 5.0 * x ** -0.7 * np.exp(0.05 * rng.normal(size=x.size))
  fit = scaling.fit_power_law(jnp.asarray(x), jnp.asarray(y))
  ref = stats.linregress(np.log(x), np.log(y))
  assert float(fit.exponent) == pytest.approx(ref.slope, abs=1e-4)
  assert float(fit.exponent_se) == pytest.approx(ref.stderr, rel=1e-3)
  assert float(fit.prefactor) == pytest.approx(np.exp(ref.intercept), rel=1e-3)
  # With error bars: weighted least squares (statsmodels' WLS formula).
  err = 0.05 * y
  wfit = scaling.fit_power_law(jnp.asarray(x), jnp.asarray(y), jnp.asarray(err))
  w = 1 / (err / y) ** 2
  lx, ly = np.log(x), np.log(y)
  xm = np.average(lx, weights=w)
  slope = np.sum(w * (lx - xm) * (ly - np.average(ly, weights=w))) / np.sum(w * (lx - xm) ** 2)
  assert float(wfit.exponent) == pytest.approx(slope, abs=1e-4)
  assert float(wfit.exponent_se) == pytest.approx(1 / np.sqrt(np.sum(w * (lx - xm) ** 2)),
                                                  rel=1e-3)


def test_random_feature_alignment_converges_as_one_over_width():
  """Two independent random-feature maps relu(W x)/√n of the same inputs:
  their aligned r² is the fidelity of their Gram matrices, K + O(n^-½)
  perturbations of one kernel; the fidelity is second order in those, so
  1 − r² ∝ 1/n (the polynomial rate of the rainbow theorem, exponent −1)."""
  x = jax.random.normal(jax.random.key(0), (24, 6))
  widths = [256, 512, 1024, 2048, 4096]

  def gap(key, n):
    k1, k2 = jax.random.split(key)
    phi = jax.nn.relu(x @ jax.random.normal(k1, (6, n))) / jnp.sqrt(n)  # [24, n]
    psi = jax.nn.relu(x @ jax.random.normal(k2, (6, n))) / jnp.sqrt(n)
    # E[ψφᵀ] = Q_ψ R_ψ R_φᵀ Q_φᵀ / N has the singular values of R_ψ R_φᵀ:
    # the alignment in a 24-dimensional basis instead of n × n.
    r_phi, r_psi = jnp.linalg.qr(phi.T, mode="r"), jnp.linalg.qr(psi.T, mode="r")
    m = x.shape[0]
    return 1 - align.align(r_psi @ r_phi.T / m, jnp.sum(phi ** 2) / m,
                           jnp.sum(psi ** 2) / m).r2

  keys = jax.random.split(jax.random.key(1), 12)
  gaps_of = jax.jit(jax.vmap(gap, in_axes=(0, None)), static_argnums=1)
  gaps = [gaps_of(keys, n) for n in widths]
  mean = jnp.stack([g.mean() for g in gaps])
  se = jnp.stack([g.std() / np.sqrt(len(keys)) for g in gaps])
  fit = scaling.fit_power_law(jnp.asarray(widths, jnp.float32), mean, se)
  assert abs(float(fit.exponent) + 1) < max(0.1, 3 * float(fit.exponent_se)), fit


def test_bad_inputs():
  with pytest.raises(ValueError, match="at least 3"):
    scaling.fit_power_law(jnp.array([1.0, 2.0]), jnp.array([1.0, 2.0]))
  with pytest.raises(ValueError, match="positive"):
    scaling.fit_power_law(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 0.0, 2.0]))
  with pytest.raises(ValueError, match="same length"):
    scaling.fit_power_law(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 2.0]))
