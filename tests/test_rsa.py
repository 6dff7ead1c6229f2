"""RDMs and their comparison against rsatoolbox (installed from PyPI), run
side by side on activations of real digits."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from rainbow_jax.similarity import rsa

rsatoolbox = pytest.importorskip("rsatoolbox")

# rsatoolbox 0.3.2 computes with NaN placeholders (np.nan * np.empty, NaN cast
# to int) while it builds crossnobis RDMs.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@pytest.fixture(scope="module")
def digits_layers():
  d = load_digits()
  x = d.data.astype(np.float32) / 16
  rng = np.random.default_rng(0)
  w1 = rng.normal(size=(64, 40)).astype(np.float32)
  w2 = rng.normal(size=(40, 24)).astype(np.float32)
  h1 = np.maximum(x @ w1, 0)
  h2 = np.maximum(h1 @ w2, 0)
  return x, h1, h2, d.target


def _dataset(x, **obs):
  return rsatoolbox.data.Dataset(np.asarray(x, np.float64), obs_descriptors=obs or None)


def _theirs(x, method, **kw):
  return rsatoolbox.rdm.calc_rdm(_dataset(x), method=method, **kw)


@pytest.mark.parametrize("method", ["euclidean", "correlation"])
def test_rdm_equals_rsatoolbox(digits_layers, method):
  _, h1, _, _ = digits_layers
  patterns = h1[:150]
  want = _theirs(patterns, method).get_matrices()[0]
  got = np.asarray(rsa.rdm(patterns, method))
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
  np.testing.assert_allclose(np.asarray(rsa.upper(got)),
                             _theirs(patterns, method).dissimilarities[0],
                             rtol=2e-4, atol=2e-4 * np.abs(want).max())


def _folds(h, target, k=4):
  """Class means of k disjoint groups of images: [k, 10 classes, channels]."""
  out = np.zeros((k, 10, h.shape[1]), np.float32)
  for c in range(10):
    idx = np.flatnonzero(target == c)
    for f, part in enumerate(np.array_split(idx, k)):
      out[f, c] = h[part].mean(0)
  return out


def test_crossvalidated_rdm_equals_crossnobis(digits_layers):
  _, h1, _, target = digits_layers
  folds = _folds(h1, target)
  k, n, p = folds.shape
  ds = _dataset(folds.reshape(k * n, p), conds=np.tile(np.arange(n), k),
                fold=np.repeat(np.arange(k), n))
  want = rsatoolbox.rdm.calc_rdm(ds, method="crossnobis", descriptor="conds",
                                 cv_descriptor="fold").get_matrices()[0]
  got = np.asarray(rsa.rdm(folds, "crossvalidated"))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  # Pure noise: unbiased, so near 0 and sometimes negative (a plain RDM is > 0).
  noise = np.random.default_rng(3).normal(size=(6, 12, 50)).astype(np.float32)
  cv = rsa.upper(rsa.rdm(noise, "crossvalidated"))
  assert float(cv.min()) < 0 and abs(float(cv.mean())) < 0.1
  assert float(rsa.upper(rsa.rdm(noise[0])).min()) > 1.0


@pytest.mark.parametrize("method", ["cosine", "corr", "cosine_cov", "spearman"])
@pytest.mark.parametrize("rdm_method", ["euclidean", "correlation"])
def test_compare_equals_rsatoolbox(digits_layers, method, rdm_method):
  x, h1, h2, _ = digits_layers
  a, b = h1[:200], h2[:200]
  want = rsatoolbox.rdm.compare(_theirs(a, rdm_method), _theirs(b, rdm_method),
                                method=method)[0, 0]
  got = float(rsa.compare(a, b, method=method, rdm1=rdm_method, block=64))
  assert got == pytest.approx(want, abs=2e-4)
  assert float(rsa.compare(a, a, method=method, rdm1=rdm_method)) == pytest.approx(1, abs=1e-4)


def test_compare_crossvalidated_blocked(digits_layers):
  _, h1, h2, target = digits_layers
  f1, f2 = _folds(h1, target), _folds(h2, target)
  def theirs(f):
    k, n, p = f.shape
    ds = _dataset(f.reshape(k * n, p), conds=np.tile(np.arange(n), k),
                  fold=np.repeat(np.arange(k), n))
    return rsatoolbox.rdm.calc_rdm(ds, method="crossnobis", descriptor="conds",
                                   cv_descriptor="fold")
  for method in ("corr", "cosine_cov"):
    want = rsatoolbox.rdm.compare(theirs(f1), theirs(f2), method=method)[0, 0]
    got = float(rsa.compare(f1, f2, method=method, rdm1="crossvalidated", block=3))
    assert got == pytest.approx(want, abs=2e-4)


def test_cosine_cov_of_euclidean_rdms_is_linear_cka(digits_layers):
  """Whitening squared-Euclidean RDMs gives back centred Gram matrices:
  the whitened cosine is linear CKA (Diedrichsen et al. 2021)."""
  from rainbow_jax import similarity as S
  _, h1, h2, _ = digits_layers
  got = float(rsa.compare(h1, h2, method="cosine_cov", block=256))
  assert got == pytest.approx(float(S.linear_cka(h1, h2)), abs=1e-4)


def test_bad_inputs(digits_layers):
  _, h1, h2, _ = digits_layers
  with pytest.raises(ValueError, match="conditions"):
    rsa.compare(h1[:10], h2[:12])
  with pytest.raises(ValueError, match="method"):
    rsa.compare(h1[:10], h2[:10], method="kendall")
  with pytest.raises(ValueError, match="rdm method"):
    rsa.rdm(h1[:10], "mahalanobis")
  with pytest.raises(ValueError, match="folds|rank"):
    rsa.rdm(h1[:10], "crossvalidated")
  bad = h1[:10].copy()
  bad[0, 0] = np.inf
  with pytest.raises(ValueError, match="NaN|finite"):
    rsa.rdm(bad)
  with pytest.raises(ValueError, match="spearman"):
    rsa.compare(np.zeros((9000, 2), np.float32), np.zeros((9000, 2), np.float32),
                method="spearman")
