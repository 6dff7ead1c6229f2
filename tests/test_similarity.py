"""CCA and linear CKA against an independent float64 numpy implementation of
google/svcca's `get_cca_similarity` semantics, plus invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import ortho_group

from rainbow_jax import moments as M
from rainbow_jax import similarity as S

import svcca_reference


reference_cca = svcca_reference.cca


def _pair(rng, n=2000, dx=12, dy=9, kind="random"):
  if kind == "random":
    x = rng.normal(size=(n, dx))
    y = x[:, :dy] @ rng.normal(size=(dy, dy)) + 0.8 * rng.normal(size=(n, dy))
  elif kind == "ill":
    x = rng.normal(size=(n, dx)) * np.logspace(0, -3, dx)
    y = np.tanh(x[:, :dy] * 50) + 0.1 * rng.normal(size=(n, dy))
  elif kind == "low_rank":  # exactly rank-deficient: rank 6 in 12 and 9 dims
    z = rng.normal(size=(n, 6))
    x = z @ rng.normal(size=(6, dx))
    y = z[:, :4] @ rng.normal(size=(4, dy)) + 0.5 * rng.normal(size=(n, 1)) @ rng.normal(size=(1, dy))
  elif kind == "dead_neurons":  # near-constant neurons: removed by epsilon
    x = rng.normal(size=(n, dx))
    x[:, :3] = 5 + 1e-4 * rng.normal(size=(n, 3))
    y = x[:, 3:3 + dy] + 0.5 * rng.normal(size=(n, dy))
  return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("kind,epsilon", [("random", 0.0), ("random", 1e-6), ("ill", 1e-6),
                                          ("low_rank", 1e-6), ("dead_neurons", 1e-6)])
def test_cca_matches_reference(rng, kind, epsilon):
  x, y = _pair(rng, kind=kind)
  s, mean, total, kx, ky = reference_cca(x.T, y.T, epsilon=epsilon)
  out = jax.jit(lambda a, b: S.cca(a, b, epsilon=epsilon))(x, y)
  k = int(out.num_coefficients)
  assert k == len(s)
  np.testing.assert_array_equal(out.x_keep, kx)
  np.testing.assert_array_equal(out.y_keep, ky)
  np.testing.assert_allclose(out.coefficients[:k], s, atol=1e-4)
  assert np.all(np.asarray(out.coefficients[k:]) == 0)
  assert float(out.mean) == pytest.approx(mean, abs=1e-4)
  assert float(out.sum) == pytest.approx(total, abs=1e-3)
  if kind == "dead_neurons":
    assert not kx[:3].any() and kx[3:].all()


def test_cca_invariant_to_invertible_maps(rng):
  x, _ = _pair(rng)
  t = rng.normal(size=(12, 12)).astype(np.float32)  # invertible a.s.
  out = S.cca(x, x @ t + 3.0)
  np.testing.assert_allclose(out.coefficients, 1.0, atol=1e-3)
  assert float(out.mean) == pytest.approx(1.0, abs=1e-4)


def test_cka_invariances(rng):
  x, y = _pair(rng)
  q = ortho_group.rvs(9, random_state=0).astype(np.float32)
  base = float(S.linear_cka(x, y))
  assert 0 < base < 1
  assert float(S.linear_cka(x, x)) == pytest.approx(1.0, abs=1e-5)
  assert float(S.linear_cka(y, x)) == pytest.approx(base, rel=1e-5)  # symmetric
  assert float(S.linear_cka(x, 7.0 * y @ q + 2.0)) == pytest.approx(base, rel=1e-4)
  t = np.diag(np.logspace(0, 2, 9)).astype(np.float32)  # not orthogonal
  assert abs(float(S.linear_cka(x, y @ t)) - base) > 1e-2
  # Independent reference: Kornblith et al.'s formula with centred Gram matrices.
  xc = x - x.mean(0)
  yc = y - y.mean(0)
  kx, ky = xc @ xc.T, yc @ yc.T
  ref = np.sum(kx * ky) / np.sqrt(np.sum(kx * kx) * np.sum(ky * ky))
  assert base == pytest.approx(float(ref), rel=1e-3)


def test_streamed_equals_in_memory(rng):
  x, y = _pair(rng, n=1500)
  s = M.accumulate([(x[i:i + 256], y[i:i + 256]) for i in range(0, 1500, 256)],
                   lambda b: list(b), cross=[(0, 1)])
  streamed, direct = S.cca_moments(s, 0, 1), S.cca(x, y)
  np.testing.assert_allclose(streamed.coefficients, direct.coefficients, atol=1e-4)
  assert float(S.linear_cka_moments(s, 0, 1)) == pytest.approx(
      float(S.linear_cka(x, y)), rel=1e-5)


def test_fewer_datapoints_than_neurons_is_finite(rng):
  x = rng.normal(size=(20, 50)).astype(np.float32)
  y = rng.normal(size=(20, 40)).astype(np.float32)
  out = S.cca(x, y, epsilon=1e-6)
  assert np.all(np.isfinite(np.asarray(out.coefficients)))
  assert np.isfinite(float(out.mean)) and float(out.mean) <= 1 + 1e-4
  # Identically zero activations: everything removed, zeros (svcca's zero dict).
  zero = S.cca(np.zeros((30, 4), np.float32), y[:, :4].repeat(2, 0)[:30])
  assert int(zero.num_coefficients) == 0 and float(zero.mean) == 0


def test_bad_inputs():
  with pytest.raises(ValueError, match="same number of datapoints"):
    S.cca(np.ones((10, 3), np.float32), np.ones((9, 3), np.float32))
  with pytest.raises(TypeError, match="floating"):
    S.linear_cka(np.ones((10, 3), np.int32), np.ones((10, 3), np.int32))
  with pytest.raises(ValueError, match="threshold"):
    S.cca(np.ones((10, 3), np.float32), np.ones((10, 3), np.float32), threshold=0.0)
  with pytest.raises(ValueError, match="at least 2 datapoints"):
    S.cca(np.ones((1, 3), np.float32), np.ones((1, 3), np.float32))


def reference_svcca(acts1, acts2, k):
  """The SVCCA tutorial's pipeline in float64: centre, SVD, keep k, CCA."""
  def reduce(a):
    a = a - a.mean(axis=1, keepdims=True)
    _, s, v = np.linalg.svd(a.astype(np.float64), full_matrices=False)
    return s[:k, None] * v[:k]
  return reference_cca(reduce(acts1), reduce(acts2))


def test_svcca_matches_tutorial_pipeline(rng):
  x, y = _pair(rng, dx=20, dy=16)
  s, mean, _, _, _ = reference_svcca(x.T, y.T, k=8)
  out = S.svcca(x, y, keep=8)
  assert int(out.num_coefficients) == 8
  np.testing.assert_allclose(out.coefficients[:8], s, atol=1e-4)
  assert float(out.mean) == pytest.approx(mean, abs=1e-4)
  # Variance-fraction rule: the smallest k holding 99 % on each side.
  full = S.svcca(x, y, variance=0.99)
  ev = np.sort(np.linalg.eigvalsh(np.cov(x.T.astype(np.float64))))[::-1]
  ev_y = np.sort(np.linalg.eigvalsh(np.cov(y.T.astype(np.float64))))[::-1]
  kx = int(np.searchsorted(np.cumsum(ev) / ev.sum(), 0.99) + 1)
  ky = int(np.searchsorted(np.cumsum(ev_y) / ev_y.sum(), 0.99) + 1)
  assert int(full.num_coefficients) == min(kx, ky)


def reference_debiased_hsic(k, l):
  """Unbiased HSIC (Song et al. 2012), float64, written from the paper."""
  n = k.shape[0]
  k = k - np.diag(np.diag(k))
  l = l - np.diag(np.diag(l))
  one = np.ones(n)
  return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
          - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


def test_debiased_cka_matches_reference_and_nulls(rng):
  x, y = _pair(rng, n=60, dx=40, dy=30)
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  k, l = x64 @ x64.T, y64 @ y64.T
  ref = reference_debiased_hsic(k, l) / np.sqrt(
      reference_debiased_hsic(k, k) * reference_debiased_hsic(l, l))
  assert float(S.linear_cka_debiased(x, y)) == pytest.approx(ref, abs=1e-4)
  assert float(S.linear_cka_debiased(x, x)) == pytest.approx(1.0, abs=1e-5)
  # Independent data, few datapoints per neuron: biased CKA is high by chance,
  # debiased CKA is centred at zero.
  vals_b, vals_d = [], []
  for seed in range(20):
    r = np.random.default_rng(100 + seed)
    a = r.normal(size=(40, 100)).astype(np.float32)
    b = r.normal(size=(40, 100)).astype(np.float32)
    vals_b.append(float(S.linear_cka(a, b)))
    vals_d.append(float(S.linear_cka_debiased(a, b)))
  assert np.mean(vals_b) > 0.5
  assert abs(np.mean(vals_d)) < 3 * np.std(vals_d) / np.sqrt(20) + 0.01
  assert np.all(np.isfinite(vals_d))


def test_procrustes_distance(rng):
  x, y = _pair(rng)
  q = ortho_group.rvs(12, random_state=3).astype(np.float32)
  assert float(S.procrustes_distance(x, 4.0 * x @ q + 1.0)) == pytest.approx(0.0, abs=1e-4)
  d = float(S.procrustes_distance(x, y))
  assert 0 < d < 2
  assert float(S.procrustes_distance(y, x)) == pytest.approx(d, rel=1e-5)
  # Independent reference: solve the Procrustes problem explicitly (scipy).
  from scipy.linalg import orthogonal_procrustes
  xc = x.astype(np.float64) - x.mean(0)
  yc = np.pad(y.astype(np.float64) - y.mean(0), ((0, 0), (0, 3)))  # widths 12, 9
  xc /= np.linalg.norm(xc)
  yc /= np.linalg.norm(yc)
  r, _ = orthogonal_procrustes(yc, xc)
  assert d == pytest.approx(np.sum((xc - yc @ r) ** 2), abs=1e-4)


def test_measures_ignore_the_scale_and_offset_of_activations():
  """Scale and translation invariance at float32 extremes: the covariance
  products used to underflow (CKA 0 at 1e-10), overflow (NaN at 1e10) or
  cancel (RBF distances of data far from the origin)."""
  from rainbow_jax import similarity as S
  x = jax.random.normal(jax.random.key(0), (200, 6))
  y = x @ jax.random.normal(jax.random.key(1), (6, 4)) + 0.5 * jax.random.normal(
      jax.random.key(2), (200, 4))
  ref_cka, ref_cca = float(S.linear_cka(x, y)), float(S.cca(x, y).mean)
  for scale in (1e-10, 1e10, 1e12):
    assert float(S.linear_cka(scale * x, scale * x)) == pytest.approx(1.0, abs=1e-5)
    assert float(S.linear_cka(scale * x, y)) == pytest.approx(ref_cka, abs=1e-5)
    assert float(S.procrustes_distance(scale * x, scale * x)) == pytest.approx(0.0, abs=1e-4)
    assert float(S.cca(scale * x, y).mean) == pytest.approx(ref_cca, abs=1e-4)
  ref_rbf = float(S.rbf_cka(x, y))
  for shift in (1e3, 1e4):
    assert float(S.rbf_cka(x + shift, y)) == pytest.approx(ref_rbf, abs=1e-4)
  with pytest.raises(ValueError, match="xs holds NaN"):
    S.minibatch_cka(jnp.full((2, 8, 3), jnp.nan), jnp.ones((2, 8, 3)))


def test_pwcca_of_real_pixels_with_themselves_is_one(fashion_or_digits_pixels):
  """Pixel covariances span many decades, so in float32 the whitening cuts
  their tail; those unresolved directions used to be weighed as correlations
  of 0 (PWCCA(x, x) = 0.75 on Fashion-MNIST, 0.9955 on digits)."""
  x = fashion_or_digits_pixels
  out = S.pwcca(x, x, epsilon=1e-6)
  assert float(out.value) == pytest.approx(1.0, abs=1e-3)
  assert 0 < int(out.num_resolved) <= int(out.num_coefficients)
  assert float(jnp.sum(out.weights)) == pytest.approx(1.0, abs=1e-5)
  # Also for a shifted, rescaled copy: an affine map of the same pixels.
  assert float(S.pwcca(x, 3.0 * x + 1.0, epsilon=1e-6).value) == pytest.approx(1.0, abs=1e-3)
