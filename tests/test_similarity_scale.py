"""The CCA family at the widths researchers use (256 … 2 048 neurons) in
float32, against float64 numpy and an analytic law.

Data: low-rank signal plus unit noise, ``x = z A + e``, ``y = z B + f``
(k shared latents), with ReLU-like means: the shared directions carry
variances up to ~10³–10⁴ beside unit-variance noise directions, whose
canonical correlations sit at the Wachter-law edge. float32 resolves every
one of them (`similarity.resolution_floor`); a pseudo-inverse cut-off of
10·d·eps·λ_max threw the noise directions away (mean CCA 0.04 for 0.32).

References: float64 numpy — QR of each centred side and the singular values
of Q_xᵀQ_y (no covariance, no code of ours), and `svcca_reference` (float64
numpy reading of google/svcca, anchored to its real outputs) for PWCCA —
and the Wachter law for independent data.
"""

import numpy as np
import pytest

import rainbow_jax.compat.svcca as cca_core
from rainbow_jax import similarity as S

import svcca_reference as ref


def signal_plus_noise(d, n, k, seed=0, scale=1.0, offset=True):
  """``[n, d]`` float64 pair; numpy's legacy `RandomState` stream is frozen,
  so the fixture's reference outputs stay valid on any numpy."""
  rs = np.random.RandomState(seed)
  z = rs.standard_normal((n, k))
  a = scale * rs.standard_normal((k, d))
  b = scale * rs.standard_normal((k, d))
  x = z @ a + rs.standard_normal((n, d))
  y = z @ b + rs.standard_normal((n, d))
  if offset:
    x += rs.uniform(0, 5, d)
    y += rs.uniform(0, 5, d)
  return x, y


def qr_cca(x, y):
  """Canonical correlations in float64 from the data (QR, then SVD)."""
  qx, _ = np.linalg.qr(x - x.mean(0))
  qy, _ = np.linalg.qr(y - y.mean(0))
  return np.linalg.svd(qx.T @ qy, compute_uv=False)


@pytest.mark.parametrize("d,n,k,scale", [
    (256, 4000, 16, 1.0), (1024, 8000, 32, 3.0),
    pytest.param(2048, 8000, 64, 1.0, marks=pytest.mark.slow)])
def test_every_coefficient_matches_float64_at_width(d, n, k, scale):
  x, y = signal_plus_noise(d, n, k, scale=scale)
  want = qr_cca(x, y)
  x32, y32 = x.astype(np.float32), y.astype(np.float32)
  out = S.cca(x32, y32)
  assert int(out.num_coefficients) == d
  np.testing.assert_allclose(out.coefficients, want, atol=1e-3)
  assert float(out.sum) == pytest.approx(want.sum(), rel=1e-4)
  # The drop-in: neurons × datapoints, float32 in.
  got = cca_core.get_cca_similarity(x32.T, y32.T, compute_coefs=False)
  np.testing.assert_allclose(got["cca_coef1"], want, atol=1e-3)
  assert abs(got["mean"][0] - float(out.mean)) < 1e-4
  # The noise directions are resolved: their coefficients (past the k
  # shared ones) are at noise level, not zeroed.
  assert np.all(np.asarray(out.coefficients)[k:d // 2] > 0.05)


@pytest.mark.parametrize("d,n,k", [(256, 4000, 16),
                                   pytest.param(1024, 8000, 32, marks=pytest.mark.slow)])
def test_pwcca_and_svcca_match_float64_at_width(d, n, k):
  x, y = signal_plus_noise(d, n, k)
  x32, y32 = x.astype(np.float32), y.astype(np.float32)
  value, weights, coefs = ref.pwcca(x.T, y.T, signs=True)  # the deterministic orientation
  out = S.pwcca(x32, y32, signs="largest_positive")
  assert int(out.num_resolved) == d
  np.testing.assert_allclose(out.weights, weights, atol=1e-3)
  assert float(out.value) == pytest.approx(value, abs=1e-3)
  # SVCCA on the top 2k principal directions of each side, against numpy's
  # SVD-then-QR pipeline in float64.
  def top(a, m):
    a = a - a.mean(0)
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    return u[:, :m] * s[:m]
  want = qr_cca(top(x, 2 * k), top(y, 2 * k))
  got = S.svcca(x32, y32, keep=2 * k)
  np.testing.assert_allclose(got.coefficients[:2 * k], want, atol=1e-3)


def _wachter_edges(p, q, n):
  """Edges of the limiting law of squared canonical correlations of
  independent p- and q-dimensional Gaussian data (Wachter 1980), p ≤ q."""
  g1, g2 = p / n, q / n
  a, b = np.sqrt(g1 * (1 - g2)), np.sqrt(g2 * (1 - g1))
  return (a - b) ** 2, (a + b) ** 2


@pytest.mark.parametrize("p,q,n", [(512, 512, 4096), (256, 768, 4096)])
def test_pure_noise_follows_the_wachter_law(p, q, n):
  rs = np.random.RandomState(1)
  x = rs.standard_normal((n, p)).astype(np.float32)
  y = rs.standard_normal((n, q)).astype(np.float32)
  rho = np.asarray(S.cca(x, y).coefficients)
  lo, hi = _wachter_edges(p, q, n)
  assert rho.max() == pytest.approx(np.sqrt(hi), abs=0.02)
  assert rho.min() == pytest.approx(np.sqrt(lo), abs=0.03)
  # E Σρ² = p·q/(n − 1) exactly for independent Gaussian data (centred).
  assert np.sum(rho ** 2) == pytest.approx(p * q / (n - 1), rel=0.01)
