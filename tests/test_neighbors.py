"""Mutual k-NN and CKNNA: against scikit-learn's neighbour search, debiased
CKA (the k = n − 1 limit), chance level and invariances."""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neighbors import NearestNeighbors

from rainbow_jax.similarity import neighbors as N
from rainbow_jax import similarity as S


@pytest.fixture(scope="module")
def layers():
  """Two ReLU layers of a random network on 600 real digits (continuous,
  so neighbour ranks have no ties)."""
  x = load_digits().data[:600].astype(np.float32) / 16
  rng = np.random.default_rng(0)
  h1 = np.maximum(x @ rng.normal(size=(64, 48)).astype(np.float32), 0) + 1e-3
  h2 = np.maximum(h1 @ rng.normal(size=(48, 32)).astype(np.float32), 0) + 1e-3
  return h1, h2


def _sklearn_knn(x, k, metric):
  return NearestNeighbors(n_neighbors=k, metric=metric).fit(x).kneighbors(
      return_distance=False)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbours_and_mutual_knn_match_sklearn(layers, metric):
  h1, h2 = layers
  k = 10
  _, ours = N.knn(h1, k, metric=metric, block=128)  # several blocks, a ragged last one
  theirs = _sklearn_knn(h1, k, metric)
  assert np.mean([set(a) == set(b) for a, b in zip(np.asarray(ours), theirs)]) > 0.99
  want = np.mean([len(set(a) & set(b)) for a, b in
                  zip(theirs, _sklearn_knn(h2, k, metric))]) / k
  got = float(N.mutual_knn(h1, h2, k, metric=metric, block=128))
  assert abs(got - want) < 2e-3
  assert 0.2 < got < 1


def test_invariances_and_chance_level(layers):
  h1, _ = layers
  q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(48, 48)))
  moved = (3.0 * h1 @ q).astype(np.float32)
  assert float(N.mutual_knn(h1, moved, 10)) == pytest.approx(1.0)
  assert float(N.cknna(h1, moved, 10)) == pytest.approx(1.0, abs=1e-4)
  # Unrelated representations share k/(n − 1) of their neighbours on average.
  rng = np.random.default_rng(2)
  a, b = (rng.normal(size=(800, 16)).astype(np.float32) for _ in range(2))
  k = 20
  got = float(N.mutual_knn(a, b, k))
  chance = k / (800 - 1)
  assert abs(got - chance) < 4 * np.sqrt(chance / (800 * k))


def test_cknna_all_neighbours_is_debiased_cka(layers):
  """With k = n − 1 every pair is kept: CKNNA is debiased CKA of the
  cosine-normalised representations."""
  h1, h2 = (h[:120] for h in layers)
  unit = lambda h: h / np.linalg.norm(h, axis=1, keepdims=True)
  want = float(S.linear_cka_debiased(unit(h1), unit(h2)))
  assert float(N.cknna(h1, h2, 119, block=32)) == pytest.approx(want, abs=1e-4)
  local = float(N.cknna(*layers, 10))
  assert np.isfinite(local) and local != pytest.approx(want, abs=1e-2)


def test_z_score_against_null_baseline(layers):
  h1, h2 = (h[:300] for h in layers)
  fn = lambda a, b: N.mutual_knn(a, b, 5)
  null = S.null_baseline(fn, h1, h2, jax.random.key(0), num_samples=20)
  assert float(null.zscore(fn(h1, h2))) > 10
  assert abs(float(null.mean) - 5 / 299) < 0.01


def test_bad_inputs(layers):
  h1, h2 = layers
  with pytest.raises(ValueError, match="k must be"):
    N.mutual_knn(h1, h2, 600)
  with pytest.raises(ValueError, match="datapoints"):
    N.cknna(h1, h2[:10], 5)
  with pytest.raises(ValueError, match="metric"):
    N.knn(h1, 3, metric="manhattan")
  bad = h1.copy()
  bad[3, 2] = np.nan
  with pytest.raises(ValueError, match="NaN|finite"):
    N.mutual_knn(bad, h2, 5)
  with pytest.raises(ValueError, match="k ≥ 2"):
    N.cknna(h1, h2, 1)
