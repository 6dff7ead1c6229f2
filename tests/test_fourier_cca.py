"""CCA per spatial frequency (google/svcca's ``dft_ccas.fourier_ccas``):
against the reference's outputs, and, on translation-invariant data, against
the float64 CCA of the flattened maps, which it then equals exactly."""

import os

import numpy as np
import pytest

from rainbow_jax import similarity

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "fourier_ccas_reference.npz")


@pytest.mark.parametrize("case", ["same_size", "resized", "vector"])
def test_fourier_cca_equals_the_reference(case):
  ref = np.load(FIXTURE)
  x, y = ref[f"{case}/x"], ref[f"{case}/y"]
  got = similarity.fourier_cca(x, y, batch_size=100)  # three batches, the last padded
  np.testing.assert_allclose(got.coefficients, ref[f"{case}/coefficients"], atol=2e-4)
  np.testing.assert_allclose(got.mean, ref[f"{case}/mean"], atol=2e-4)
  np.testing.assert_allclose(got.sum, ref[f"{case}/sum"], atol=5e-4)
  if case == "vector":  # a vector per datapoint, as [n, d] too
    flat = similarity.fourier_cca(x, y[:, 0, 0])
    np.testing.assert_allclose(flat.coefficients, got.coefficients, atol=1e-6)


def _cca64(a, b):
  """Canonical correlations of two [n, d] arrays in float64 (QR and SVD)."""
  qa = np.linalg.qr(a - a.mean(0))[0]
  qb = np.linalg.qr(b - b.mean(0))[0]
  return np.linalg.svd(qa.T @ qb, compute_uv=False)


def test_on_translation_invariant_data_it_is_the_cca_of_the_flattened_maps():
  rng = np.random.default_rng(1)
  x0 = rng.normal(size=(120, 4, 4, 3))
  y0 = np.maximum(x0 @ rng.normal(size=(3, 2)), 0) + rng.normal(size=(120, 4, 4, 2))
  y0 = y0 + 0.5 * np.roll(y0, 1, axis=1)
  # Every circular shift of every datapoint: the covariance is exactly
  # circulant over positions, so the DFT diagonalises it.
  shifts = [(i, j) for i in range(4) for j in range(4)]
  x = np.concatenate([np.roll(x0, s, axis=(1, 2)) for s in shifts])
  y = np.concatenate([np.roll(y0, s, axis=(1, 2)) for s in shifts])
  got = similarity.fourier_cca(x.astype(np.float32), y.astype(np.float32))
  per_freq = np.sort(np.asarray(got.coefficients).ravel())
  want = np.sort(_cca64(x.reshape(len(x), -1), y.reshape(len(y), -1)))
  np.testing.assert_allclose(per_freq, want, atol=2e-5)
  # and the DC component is the CCA of the maps' sums over positions
  np.testing.assert_allclose(got.coefficients[0, 0], _cca64(x.sum((1, 2)), y.sum((1, 2))),
                             atol=2e-5)


def test_bad_inputs():
  x = np.zeros((10, 4, 4, 2), np.float32)
  with pytest.raises(ValueError, match="datapoints"):
    similarity.fourier_cca(x, x[:5])
  with pytest.raises(ValueError, match="y"):
    similarity.fourier_cca(x, np.zeros((10, 4, 2), np.float32))
  odd = similarity.fourier_cca(np.random.default_rng(0).normal(size=(10, 5, 5, 2)), x + 1)
  assert [list(f) for f in odd.frequencies] == [[0, 1, -2, -1]] * 2  # 5 resized to 4
  bad = x.copy()
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="x"):
    similarity.fourier_cca(bad, x)
