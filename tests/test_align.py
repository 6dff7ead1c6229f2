"""Procrustes alignment, r² and stability against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import ortho_group

from rainbow_jax import align as A
from rainbow_jax import moments as M
from conftest import rel_err


def _features(rng, n=2000, d=8):
  scales = np.linspace(3, 0.2, d)
  return (rng.normal(size=(n, d)) * scales).astype(np.float32)


def test_recovers_known_orthogonal_map(rng):
  phi = _features(rng)
  q = ortho_group.rvs(8, random_state=1).astype(np.float32)
  psi = phi @ q.T  # ψ = Q φ
  al = A.align_features(phi, psi)
  np.testing.assert_allclose(al.matrix, q, atol=2e-5)
  assert float(al.r2) == pytest.approx(1.0, abs=1e-5)


def test_streamed_alignment_equals_in_memory(rng):
  phi = _features(rng)
  q = ortho_group.rvs(8, random_state=2)
  psi = (phi @ q.T + 0.5 * rng.normal(size=phi.shape)).astype(np.float32)
  s = M.accumulate([(phi[i:i + 300], psi[i:i + 300]) for i in range(0, 2000, 300)],
                   lambda b: list(b), cross=[(0, 1)])
  streamed = A.align_moments(s, 0, 1)
  direct = A.align_features(phi, psi)
  np.testing.assert_allclose(streamed.matrix, direct.matrix, atol=1e-4)
  assert float(streamed.r2) == pytest.approx(float(direct.r2), rel=1e-5)
  # numpy float64 reference of the tutorial's formula.
  x, y = phi.astype(np.float64), psi.astype(np.float64)
  cross = y.T @ x / len(x)
  u, sv, vh = np.linalg.svd(cross)
  r2 = sv.sum() / np.sqrt(np.mean(np.sum(x**2, 1)) * np.mean(np.sum(y**2, 1)))
  assert float(direct.r2) == pytest.approx(r2, rel=1e-5)
  assert rel_err(direct.matrix, u @ vh) < 1e-4
  # The map minimises E‖Aφ − ψ‖² over orthogonal maps: beats random rotations.
  err = lambda a: np.mean(np.sum((x @ a.T - y) ** 2, 1))
  best = err(np.asarray(direct.matrix, np.float64))
  for seed in range(5):
    assert best <= err(ortho_group.rvs(8, random_state=10 + seed))
  # Residual identity: E‖Aφ − ψ‖² = E‖φ‖² + E‖ψ‖² − 2 tr Σ.
  assert best == pytest.approx(
      np.mean(np.sum(x**2, 1)) + np.mean(np.sum(y**2, 1)) - 2 * sv.sum(),
      rel=1e-4)


def test_rectangular_widths(rng):
  phi = _features(rng, d=8)
  basis = ortho_group.rvs(12, random_state=3)[:, :8]  # isometric embedding
  psi = (phi @ basis.T).astype(np.float32)  # d_ψ = 12 > d_φ = 8
  al = A.align_features(phi, psi)
  assert al.matrix.shape == (12, 8)
  np.testing.assert_allclose(al.matrix, basis, atol=5e-5)
  np.testing.assert_allclose(al.matrix.T @ al.matrix, np.eye(8), atol=1e-5)
  back = A.align_features(psi, phi)  # d_ψ = 8 < d_φ = 12
  assert back.matrix.shape == (8, 12)
  assert float(back.r2) == pytest.approx(1.0, abs=1e-5)


def test_vmaps_over_layers_and_pairs(rng):
  crosses = rng.normal(size=(3, 4, 6, 5)).astype(np.float32)
  traces = rng.uniform(10, 20, size=(2, 3, 4)).astype(np.float32)
  out = jax.jit(jax.vmap(jax.vmap(A.align)))(crosses, traces[0], traces[1])
  assert out.matrix.shape == (3, 4, 6, 5) and out.r2.shape == (3, 4)
  one = A.align(crosses[2, 1], traces[0, 2, 1], traces[1, 2, 1])
  np.testing.assert_allclose(out.matrix[2, 1], one.matrix, atol=1e-5)
  np.testing.assert_allclose(out.r2[2, 1], one.r2, rtol=1e-5)


def test_stability_is_identity_for_rotated_copy(rng):
  phi = _features(rng)
  q = ortho_group.rvs(8, random_state=4).astype(np.float32)
  psi = phi @ q.T
  al = A.align_features(phi, psi)
  c1 = phi.T @ phi / len(phi)
  c2 = psi.T @ psi / len(psi)
  s = A.activation_stability(c1, c2, al.matrix)
  np.testing.assert_allclose(s, np.eye(8), atol=1e-3)
  # Weight eigenvectors: W2 = W1 Qᵀ reads ψ = Qφ exactly like W1 reads φ.
  w1 = (rng.normal(size=(20, 8)) * np.linspace(2, 0.1, 8)).astype(np.float32)
  ws = A.weight_stability(w1, w1 @ q.T, al.matrix)
  np.testing.assert_allclose(ws, np.eye(8), atol=1e-3)
  # Without alignment the rotated copy's eigenvectors do not match.
  assert np.max(np.abs(np.diag(A.weight_stability(w1, w1 @ q.T)))) < 0.99


def test_weight_spectrum_matches_covariance(rng):
  w = rng.normal(size=(30, 10))
  lam, vecs = A.weight_eigenvectors(jnp.asarray(w, jnp.float32))
  ref = np.sort(np.linalg.eigvalsh(w.T @ w / 30))[::-1]
  np.testing.assert_allclose(lam, ref, rtol=1e-4)
  np.testing.assert_allclose(vecs @ vecs.T, np.eye(10), atol=1e-5)


def test_bad_inputs(rng):
  with pytest.raises(ValueError, match="same number of samples"):
    A.align_features(np.ones((10, 3), np.float32), np.ones((9, 3), np.float32))
  with pytest.raises(TypeError, match="floating"):
    A.procrustes(np.ones((3, 3), np.int32))
  with pytest.raises(ValueError, match="matrix"):
    A.procrustes(np.ones(3, np.float32))
  with pytest.raises(ValueError, match=r"a must have shape \(\.\.\., 4, 3\).*\[d_ψ, d_φ\]"):
    A.stability(np.eye(3, dtype=np.float32), np.eye(4, dtype=np.float32),
                np.ones((3, 4), np.float32))
