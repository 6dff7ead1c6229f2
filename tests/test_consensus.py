"""Seeds aligned to their mean network (generalised Procrustes), checked
against invariants and scipy's pairwise orthogonal Procrustes."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import expm, orthogonal_procrustes
from scipy.stats import ortho_group

from rainbow_jax import consensus as C


def _features(rng, n=2000, d=12):
  z = rng.normal(size=(n, 6))
  return np.maximum(z @ rng.normal(size=(6, d)) + 0.3 * rng.normal(size=(n, d)), 0)


def _objective(feats, a):
  """Σ_k E‖A_k φ_k − M‖², M the mean of the aligned features."""
  aligned = np.einsum("kab,knb->kna", a, feats)
  return float(np.sum((aligned - aligned.mean(0)) ** 2) / feats.shape[1])


def test_copies_of_one_network_have_that_network_as_mean(rng):
  f = _features(rng).astype(np.float32)
  feats = np.stack([f] * 4)
  out = C.align_to_mean(C.seed_cross_moments(jnp.asarray(feats)))
  np.testing.assert_allclose(out.alignments, np.broadcast_to(np.eye(12), (4, 12, 12)),
                             atol=1e-5)
  np.testing.assert_allclose(out.r2, 1.0, atol=1e-5)
  np.testing.assert_allclose(out.mean_second_moment, f.T @ f / len(f), rtol=1e-5, atol=1e-6)
  assert int(out.iterations) <= 2


def test_rotated_copies_are_rotated_back(rng):
  f = _features(rng)
  rots = [np.eye(12)] + [ortho_group.rvs(12, random_state=i) for i in range(1, 5)]
  feats = np.stack([f @ r.T for r in rots]).astype(np.float32)  # φ_k = R_k φ
  out = C.align_to_mean(C.seed_cross_moments(jnp.asarray(feats)))
  for a, r in zip(np.asarray(out.alignments), rots):
    np.testing.assert_allclose(a, r.T, atol=1e-4)
  covs = np.einsum("knd,kne->kde", feats, feats) / f.shape[0]
  np.testing.assert_allclose(C.covariance_distances(jnp.asarray(covs), out.alignments), 0,
                             atol=1e-4)
  np.testing.assert_allclose(C.mean_covariance(C.seed_cross_moments(jnp.asarray(feats)),
                                               out.alignments), covs[0], rtol=1e-4, atol=1e-5)


def test_two_seeds_give_scipy_procrustes(rng):
  """For K = 2 the mean alignment is the pairwise one: A_1 maps φ_1 onto φ_0."""
  f0 = _features(rng)
  f1 = f0 @ ortho_group.rvs(12, random_state=3) + 0.4 * rng.normal(size=f0.shape)
  out = C.align_to_mean(C.seed_cross_moments(jnp.asarray(np.stack([f0, f1]), jnp.float32)))
  r, _ = orthogonal_procrustes(f1, f0)  # f1 @ r ≈ f0
  np.testing.assert_allclose(out.alignments[1], r.T, atol=2e-4)


def test_mean_alignment_beats_aligning_everyone_to_seed_zero(rng):
  f = _features(rng)
  feats = np.stack([f @ ortho_group.rvs(12, random_state=i).T + 0.5 * rng.normal(size=f.shape)
                    for i in range(5)]).astype(np.float32)
  out = C.align_to_mean(C.seed_cross_moments(jnp.asarray(feats)))
  to_zero = np.stack([orthogonal_procrustes(x, feats[0])[0].T for x in feats])
  gpa = _objective(feats.astype(np.float64), np.asarray(out.alignments, np.float64))
  assert gpa < _objective(feats.astype(np.float64), to_zero) * (1 - 1e-4)
  # A minimum: turning any seed's alignment by a small rotation costs.
  skew = rng.normal(size=(12, 12))
  skew = skew - skew.T
  for k, eps in ((1, 1e-2), (3, -1e-2)):
    moved = np.asarray(out.alignments, np.float64).copy()
    moved[k] = expm(eps * skew) @ moved[k]
    assert _objective(feats.astype(np.float64), moved) > gpa
  assert float(out.change) <= 1e-6 and int(out.iterations) < 100
  # r² to the mean: what `align` gives for each seed against the mean features.
  mean = np.einsum("kab,knb->kna", np.asarray(out.alignments), feats).mean(0)
  for k in range(5):
    s = np.linalg.svd(mean.T @ feats[k] / f.shape[0], compute_uv=False)
    want = s.sum() / np.sqrt(np.mean(np.sum(feats[k] ** 2, 1)) * np.mean(np.sum(mean ** 2, 1)))
    assert float(out.r2[k]) == pytest.approx(want, abs=1e-4)


def test_bad_inputs(rng):
  f = jnp.asarray(_features(rng)[None], jnp.float32)
  with pytest.raises(ValueError, match="at least 2 seeds"):
    C.align_to_mean(C.seed_cross_moments(f))
  with pytest.raises(ValueError, match=r"\[K, K, d, d\]"):
    C.align_to_mean(jnp.zeros((2, 3, 4, 4)))
  with pytest.raises(ValueError, match="NaN"):
    C.align_to_mean(jnp.full((2, 2, 3, 3), jnp.nan))
  with pytest.raises(ValueError, match="covs"):
    C.covariance_distances(jnp.zeros((2, 3, 3)), jnp.zeros((2, 4, 4)))
