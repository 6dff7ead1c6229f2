"""The Gaussianity test of a layer's neurons: exact Gaussian layers pass at
the nominal rate, heavy- and light-tailed layers are caught, and the KS
distances are scipy's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from rainbow_jax import gaussianity as G


def _mixing(rng, d):
  return rng.normal(size=(d, d)) / np.sqrt(d)


def test_exact_gaussian_layers_are_rejected_at_the_nominal_rate(rng):
  n, d, reps = 128, 16, 60
  mix = _mixing(rng, d)
  p = []
  for r in range(reps):
    rows = jnp.asarray(rng.normal(size=(n, d)) @ mix, jnp.float32)
    out = G.layer_test(jax.random.key(r), rows, num_directions=8, num_null=99)
    p.append((float(out.pvalue_ks), float(out.pvalue_kurtosis)))
  p = np.asarray(p)
  # Binomial(60, 0.1): mean 6, P(≥ 15) < 0.002; uniform p-values: mean 0.5 ± 0.04.
  rejected = np.sum(p < 0.1, axis=0)
  assert np.all(rejected <= 14), rejected
  assert np.all(np.abs(p.mean(0) - 0.5) < 0.13), p.mean(0)


def test_heavy_and_light_tails_are_caught(rng):
  n, d = 512, 16
  scale = np.linspace(3.0, 0.5, d)  # distinct variances: principal axes = coordinates
  laplace = jnp.asarray(rng.laplace(size=(n, d)) * scale, jnp.float32)
  uniform = jnp.asarray(rng.uniform(-1, 1, size=(n, d)) * scale, jnp.float32)
  for rows, sign in ((laplace, 1), (uniform, -1)):
    out = G.layer_test(jax.random.key(0), rows, num_directions=4, num_null=199,
                 directions="principal")
    assert float(out.pvalue_kurtosis) <= 0.01
    assert float(out.pvalue_ks) <= 0.05
    assert np.sign(float(out.kurtosis_mean)) == sign
    assert sign * float(out.zscore_kurtosis()) > 3


def test_ks_distances_are_scipys(rng):
  rows = rng.standard_t(df=5, size=(300, 10)).astype(np.float32)
  out = G.layer_test(jax.random.key(1), jnp.asarray(rows), num_directions=10, num_null=3,
               directions="principal")
  _, _, vh = np.linalg.svd(rows.astype(np.float64), full_matrices=False)
  for i in range(10):
    z = rows @ vh[i]
    t = z / np.sqrt(np.mean(z ** 2))
    assert float(out.ks[i]) == pytest.approx(stats.kstest(t, "norm").statistic, abs=2e-4)
    assert float(out.kurtosis[i]) == pytest.approx(np.mean(t ** 4) - 3, abs=2e-3)


def test_bad_inputs():
  ok = jnp.ones((20, 4))
  with pytest.raises(ValueError, match="at least 8"):
    G.layer_test(jax.random.key(0), ok[:5])
  with pytest.raises(ValueError, match="directions must be"):
    G.layer_test(jax.random.key(0), ok, directions="pca")
  with pytest.raises(ValueError, match="principal directions"):
    G.layer_test(jax.random.key(0), ok, num_directions=5, directions="principal")
  with pytest.raises(ValueError, match="NaN"):
    G.layer_test(jax.random.key(0), ok.at[0, 0].set(jnp.nan))
  with pytest.raises(TypeError, match="floating"):
    G.layer_test(jax.random.key(0), jnp.ones((20, 4), jnp.int32))
