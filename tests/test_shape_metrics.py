"""Generalised shape metrics: the α = 1 and α = 0 ends against scipy's
orthogonal Procrustes and numpy's canonical correlations, metric axioms,
invariances, cross-validation and the Fréchet mean."""

import itertools

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from sklearn.datasets import load_digits

from rainbow_jax.similarity import shape_metrics as SM


@pytest.fixture(scope="module")
def layers():
  """Six ReLU layers (two widths) of random networks on 300 real digits."""
  x = load_digits().data[:300].astype(np.float64) / 16
  rng = np.random.default_rng(0)
  out = []
  for k in range(6):
    w = rng.normal(size=(64, 20 if k % 2 else 16))
    out.append(np.maximum(x @ w, 0) + 0.1 * rng.normal(size=(300, w.shape[1])))
  return [o.astype(np.float32) for o in out]


def _angle(a, b):
  return np.arccos(np.clip(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))


def test_procrustes_end_equals_scipy(layers):
  x, y = layers[0], layers[2]  # same width
  xc, yc = (a.astype(np.float64) - a.mean(0) for a in (x, y))
  r, _ = orthogonal_procrustes(xc, yc)
  want = _angle(xc @ r, yc)
  assert float(SM.distance(x, y, alpha=1.0)) == pytest.approx(want, abs=1e-4)
  assert float(SM.distance(x, y, alpha=1.0, score="euclidean")) == pytest.approx(
      np.linalg.norm(xc @ r - yc), rel=1e-4)


def test_cca_end_is_the_angle_of_the_mean_canonical_correlation(layers):
  x, y = layers[0], layers[2]
  qx, _ = np.linalg.qr(x.astype(np.float64) - x.mean(0))
  qy, _ = np.linalg.qr(y.astype(np.float64) - y.mean(0))
  rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
  assert float(SM.distance(x, y, alpha=0.0)) == pytest.approx(np.arccos(rho.mean()), abs=2e-4)


def test_metric_axioms_and_invariances(layers):
  rng = np.random.default_rng(1)
  x = layers[1]
  q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
  moved = (2.5 * x @ q + 3.0).astype(np.float32)  # rotated, scaled, shifted
  assert float(SM.distance(x, moved, alpha=1.0)) == pytest.approx(0, abs=2e-3)
  mixed = (x @ rng.normal(size=(20, 20)) - 1.0).astype(np.float32)  # any invertible map
  assert float(SM.distance(x, mixed, alpha=0.0)) == pytest.approx(0, abs=2e-3)
  assert float(SM.distance(x, mixed, alpha=1.0)) > 0.05  # Procrustes sees it
  for alpha in (0.0, 0.5, 1.0):
    d = np.asarray(SM.pairwise(layers, alpha=alpha), np.float64)
    np.testing.assert_allclose(d, d.T)
    assert np.all(np.diag(d) == 0) and np.all(d[~np.eye(6, dtype=bool)] > 0)
    for i, j, k in itertools.permutations(range(6), 3):
      assert d[i, k] <= d[i, j] + d[j, k] + 1e-4
    # The one-program matrix equals pair by pair (padding the narrower).
    for i, j in ((0, 1), (2, 5)):
      assert d[i, j] == pytest.approx(float(SM.distance(layers[i], layers[j], alpha=alpha)),
                                      abs=1e-4)


def test_cross_validation_removes_the_optimism_of_cca():
  """Unrelated representations with few inputs per neuron look close when
  scored where the alignment was fitted, and are ~orthogonal held out."""
  rng = np.random.default_rng(2)
  a, b = (rng.normal(size=(120, 30)).astype(np.float32) for _ in range(2))
  fit, held = slice(0, 60), slice(60, 120)
  inside = float(SM.distance(a[fit], b[fit], alpha=0.0))
  outside = float(SM.distance(a[fit], b[fit], alpha=0.0, x_test=a[held], y_test=b[held]))
  assert inside < 1.2 and outside > 1.4  # π/2 ≈ 1.571 is orthogonal
  d = np.asarray(SM.pairwise([a[fit], b[fit]], alpha=0.0, test=[a[held], b[held]]))
  assert d[0, 1] == pytest.approx(outside, abs=1e-4)


def test_frechet_mean_of_rotated_copies_and_of_a_set(layers):
  rng = np.random.default_rng(3)
  x = layers[1]
  copies = [(x @ np.linalg.qr(rng.normal(size=(20, 20)))[0]).astype(np.float32)
            for _ in range(4)]
  mean, spread = SM.frechet_mean(copies)
  assert float(spread[-1]) < 1e-6 * float(np.sum((x - x.mean(0)) ** 2))
  assert float(SM.distance(mean, x)) == pytest.approx(0, abs=2e-3)
  reps = [layers[i] for i in (1, 3, 5)]
  mean, spread = SM.frechet_mean(reps, iterations=30)
  spread = np.asarray(spread)
  assert np.all(np.diff(spread) <= 1e-3 * spread[0])  # never increases
  to_mean = sum(float(SM.distance(mean, r, score="euclidean")) ** 2 for r in reps)
  for c in reps:  # the mean beats every member as a centre
    assert to_mean <= sum(float(SM.distance(c, r, score="euclidean")) ** 2 for r in reps)


def test_bad_inputs(layers):
  x, y = layers[0], layers[1]
  with pytest.raises(ValueError, match="alpha"):
    SM.distance(x, y, alpha=1.5)
  with pytest.raises(ValueError, match="score"):
    SM.distance(x, y, score="cosine")
  with pytest.raises(ValueError, match="inputs"):
    SM.distance(x, y[:-1])
  with pytest.raises(ValueError, match="both"):
    SM.distance(x, y, x_test=x)
  with pytest.raises(ValueError, match="at least 2"):
    SM.pairwise([x])
  bad = x.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN|finite"):
    SM.pairwise([bad, y])
