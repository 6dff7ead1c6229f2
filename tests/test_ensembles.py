"""Init ensembles: samplers, estimators, finite-width theory."""

import jax
import numpy as np
import pytest
import scipy.stats

from rainbow_jax import ensembles as E


def _x(k=2, n0=6, seed=0):
  x = np.random.default_rng(seed).normal(size=(k, n0)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(n0)


def _within(measured, theory, sigmas=4.5, rel=0.0):
  """Asserts |estimate − theory| within `sigmas` standard errors (+ `rel`);
  returns the z-scores, so callers can check the errors are not inflated."""
  v, e = np.asarray(measured.value, np.float64), np.asarray(measured.error, np.float64)
  bad = np.abs(v - theory) > sigmas * e + rel * np.abs(theory) + 1e-9
  assert not np.any(bad), (v[bad], np.asarray(theory)[bad], e[bad])
  return ((v - theory) / np.where(e > 0, e, np.inf)).ravel()


def test_linear_theory_closed_form():
  # Bias-free, one input: G2 = C_W^ℓ q0; cross = G2² ((1 + 2/n)^{ℓ−1} − 1); same = 3 cross.
  x = _x(k=1)
  q0 = float(np.sum(x.astype(np.float64) ** 2) / x.shape[1])
  n, cw = 50, 1.7
  th = E.linear_theory(x, [n] * 4, c_w=cw)
  for l in range(1, 5):
    g2 = cw**l * q0
    assert th.kernel[l - 1][0, 0] == pytest.approx(g2, rel=1e-12)
    assert th.cross[l - 1][0, 0, 0, 0] == pytest.approx(g2**2 * ((1 + 2 / n) ** (l - 1) - 1),
                                                        rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(th.same[l - 1], 3 * th.cross[l - 1], rtol=1e-12, atol=1e-12)
  # The leading-order recursion agrees to first order in 1/n for a linear net.
  _, v = E.kernel_theory(x, [n] * 4, c_w=cw, activation="linear")
  for l in range(4):
    g2 = cw ** (l + 1) * q0
    assert v[l][0] == pytest.approx(2 * l / n * g2**2, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("c_b", [0.0, 0.3])
def test_linear_network_matches_exact_theory(c_b):
  x = _x()
  widths = [12, 12, 12]
  z = E.sample(jax.random.key(0), x, widths, num_inits=6000, c_w=1.5, c_b=c_b)
  th = E.linear_theory(x, widths, c_w=1.5, c_b=c_b)
  zs = []
  for l, zl in enumerate(z):
    zs.append(_within(E.kernel(zl), th.kernel[l]))
    cross, same = E.four_point(zl)
    zs.append(_within(cross, th.cross[l]))
    zs.append(_within(same, th.same[l]))
  # The pass band is the jackknife's own error, so check that error
  # independently. (1) Layer 1 is Gaussian given x: each init's estimate
  # (1/n) Σᵢ zᵢ(a) zᵢ(b) has variance (K_aa K_bb + K_ab²)/n, so the standard
  # error over N inits is known in closed form.
  k1, n1 = np.asarray(th.kernel[0]), widths[0]
  exact = np.sqrt((np.outer(np.diag(k1), np.diag(k1)) + k1**2) / (n1 * 6000))
  ratio = np.asarray(E.kernel(z[0]).error, np.float64) / exact
  assert np.all((ratio > 0.6) & (ratio < 1.4)), ratio  # 20 jackknife blocks: ±16 % each
  # (2) Errors that were inflated would make every z-score small; honest
  # ones give z² about 1 on average.
  zs = np.concatenate(zs)
  zs = zs[np.isfinite(zs) & (zs != 0)]
  assert 0.2 < np.mean(zs**2) < 5.0, np.mean(zs**2)
  # Layer 1 is exactly Gaussian given x: no connected four-point function.
  np.testing.assert_allclose(th.cross[0], 0.0, atol=1e-12)
  # …while deeper layers have one, and it is resolved by the estimate.
  cross3, _ = E.four_point(z[2])
  assert float(cross3.value[0, 0, 0, 0]) > 5 * float(cross3.error[0, 0, 0, 0])


def test_brute_force_draws_do_not_depend_on_the_chunk():
  # Each init has its own key, so how the inits are grouped (the CPU default
  # sizes chunks to the cache) changes the speed, never the draws.
  x = _x(n0=5)
  runs = [E.sample(jax.random.key(3), x, [40, 30], num_inits=12, method="brute", chunk=c)
          for c in (None, 1, 4)]
  for other in runs[1:]:
    for a, b in zip(runs[0], other):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_gram_sampler_equals_brute_force_in_distribution():
  x = _x(n0=5)
  widths = [16, 16, 16]
  kw = dict(num_inits=3000, c_w=2.0, c_b=0.1, activation="tanh")
  zg = E.sample(jax.random.key(1), x, widths, method="gram", **kw)
  zb = E.sample(jax.random.key(2), x, widths, method="brute", chunk=100, **kw)
  for a, b in zip(zg, zb):
    assert a.shape == b.shape == (3000, 2, 16)
    ka, kb = E.kernel(a), E.kernel(b)
    diff = np.abs(np.asarray(ka.value) - np.asarray(kb.value))
    assert np.all(diff < 4.5 * np.hypot(ka.error, kb.error) + 1e-7)
    ca, cb = E.four_point(a)[0], E.four_point(b)[0]
    assert np.all(np.abs(np.asarray(ca.value) - np.asarray(cb.value))
                  < 4.5 * np.hypot(ca.error, cb.error) + 1e-7)
    # One neuron's preactivation on input 0: the same law.
    assert scipy.stats.ks_2samp(np.asarray(a[:, 0, 0]), np.asarray(b[:, 0, 0])).pvalue > 1e-3


def test_relu_matches_leading_order_theory():
  x = _x(k=2)
  n = 64
  widths = [n, n, n]
  z = E.sample(jax.random.key(3), x, widths, num_inits=6000, c_w=2.0, activation="relu")
  ks, vs = E.kernel_theory(x, widths, c_w=2.0, activation="relu")
  q = np.sum(np.asarray(x, np.float64) ** 2, 1) / x.shape[1]
  for l, zl in enumerate(z):
    # Single-input ReLU at criticality keeps the kernel; the four-point
    # function grows by 5/n per layer (vs 2/n for linear).
    np.testing.assert_allclose(np.diag(ks[l]), 2.0 * q, rtol=1e-6)
    np.testing.assert_allclose(vs[l], 5 * l / n * (2.0 * q) ** 2, rtol=1e-3, atol=1e-9)
    _within(E.kernel(zl), ks[l], rel=0.01)  # off-diagonal: 1/n corrections
    cross = E.four_point(zl)[0]
    meas = E.Estimate(np.array([cross.value[a, a, a, a] for a in range(2)]),
                      np.array([cross.error[a, a, a, a] for a in range(2)]))
    _within(meas, vs[l], rel=0.15)  # leading order in 1/n


def test_bad_inputs():
  x = _x()
  with pytest.raises(ValueError, match="positive"):
    E.sample(jax.random.key(0), x, [10, 0])
  with pytest.raises(ValueError, match=r"\[k inputs"):
    E.sample(jax.random.key(0), x[0], [10])
  with pytest.raises(ValueError, match="NaN"):
    E.sample(jax.random.key(0), np.full((2, 3), np.nan, np.float32), [10])
  with pytest.raises(ValueError, match="GiB"):
    E.sample(jax.random.key(0), np.ones((512, 4), np.float32), [100_000] * 3, num_inits=1000)
  with pytest.raises(ValueError, match="activation"):
    E.sample(jax.random.key(0), x, [10], activation="gelu")
  with pytest.raises(ValueError, match="divide"):
    E.sample(jax.random.key(0), x, [10], num_inits=10, chunk=3)


def test_singular_input_grams_sample_finite_and_match_theory():
  """Duplicate inputs and more inputs than dimensions (k > n₀) make every
  layer's input Gram singular; the sampler used to return NaN from layer 2."""
  x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  x = np.concatenate([x, x[:1]])  # a duplicate, and k = 6 > n₀ = 3
  widths = [32, 32, 32]
  z = E.sample(jax.random.key(0), x, widths, num_inits=4000, c_w=2.0, activation="relu")
  ks, _ = E.kernel_theory(x, widths, c_w=2.0, activation="relu")
  for l, zl in enumerate(z):
    assert np.all(np.isfinite(np.asarray(zl)))
    g = np.asarray(E.kernel(zl).value)
    # Infinite-width kernel ± its 1/n corrections and Monte-Carlo noise.
    assert np.max(np.abs(g - ks[l])) < 0.08 * np.max(np.abs(ks[l])), (l, g, ks[l])
    np.testing.assert_allclose(g[0], g[-1], atol=1e-4 * np.max(np.abs(g)))  # duplicate input
  with pytest.raises(ValueError, match="at least 2 neurons"):
    E.four_point(z[0][:, :, :1])
