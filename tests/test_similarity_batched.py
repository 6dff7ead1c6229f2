"""RBF and minibatch CKA, layer × layer matrices, null baselines."""

import itertools

import jax
import numpy as np
import pytest
from scipy.stats import ortho_group

from rainbow_jax import moments as M
from rainbow_jax import similarity as S


def _centred_cka(k, l):
  h = np.eye(len(k)) - 1.0 / len(k)
  kc, lc = h @ k @ h, h @ l @ h
  return np.sum(kc * lc) / np.sqrt(np.sum(kc * kc) * np.sum(lc * lc))


def _rbf(x, scale):
  """Kornblith et al.'s rule, float64: σ² = scale² · median of squared distances."""
  d2 = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
  return np.exp(-d2 / (2 * scale**2 * np.median(d2)))


def _unbiased_hsic(k, l):
  n = len(k)
  k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
  one = np.ones(n)
  return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
          - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


def _related(rng, n=300, dx=10, dy=7):
  x = rng.normal(size=(n, dx))
  y = np.tanh(x[:, :dy] @ rng.normal(size=(dy, dy))) + 0.5 * rng.normal(size=(n, dy))
  return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_rbf_cka_matches_reference_and_invariances(rng, scale):
  x, y = _related(rng)
  k, l = _rbf(x.astype(np.float64), scale), _rbf(y.astype(np.float64), scale)
  got = float(S.rbf_cka(x, y, scale=scale))
  assert got == pytest.approx(_centred_cka(k, l), abs=1e-4)
  deb = _unbiased_hsic(k, l) / np.sqrt(_unbiased_hsic(k, k) * _unbiased_hsic(l, l))
  assert float(S.rbf_cka(x, y, scale=scale, debiased=True)) == pytest.approx(deb, abs=1e-4)
  assert float(S.rbf_cka(x, x, scale=scale)) == pytest.approx(1.0, abs=1e-5)
  assert float(S.rbf_cka(y, x, scale=scale)) == pytest.approx(got, abs=1e-5)
  q = ortho_group.rvs(7, random_state=1).astype(np.float32)
  assert float(S.rbf_cka(x, 5.0 * y @ q - 2.0, scale=scale)) == pytest.approx(got, abs=1e-4)
  t = np.diag(np.logspace(0, 1.5, 7)).astype(np.float32)
  assert abs(float(S.rbf_cka(x, y @ t, scale=scale)) - got) > 1e-2


def test_minibatch_cka_matches_reference_and_never_nans(rng):
  x, y = _related(rng, n=320)
  xs, ys = x.reshape(10, 32, -1), y.reshape(10, 32, -1)
  hs = np.array([[_unbiased_hsic(a @ a.T, b @ b.T), _unbiased_hsic(a @ a.T, a @ a.T),
                  _unbiased_hsic(b @ b.T, b @ b.T)]
                 for a, b in zip(xs.astype(np.float64), ys.astype(np.float64))]).sum(0)
  want = hs[0] / np.sqrt(hs[1] * hs[2])
  got = float(S.minibatch_cka(xs, ys))
  assert got == pytest.approx(want, abs=1e-4)
  assert float(S.minibatch_cka(xs, xs)) == pytest.approx(1.0, abs=1e-5)
  # Host-iterator form: the same.
  state = S.minibatch_cka_init()
  for a, b in zip(xs, ys):
    state = S.minibatch_cka_update(state, a, b)
  assert float(S.minibatch_cka_value(state)) == pytest.approx(got, abs=1e-6)
  # Tiny batches and activations near float32's limits: finite, and scale-free.
  tiny_x, tiny_y = x[:40].reshape(10, 4, -1), y[:40].reshape(10, 4, -1)
  ref_tiny = float(S.minibatch_cka(tiny_x, tiny_y))
  for sx, sy in ((1e-30, 1e25), (1e18, 1e-18)):
    v = float(S.minibatch_cka(tiny_x * np.float32(sx), tiny_y * np.float32(sy)))
    assert np.isfinite(v) and v == pytest.approx(ref_tiny, abs=1e-4)
  assert float(S.minibatch_cka_value(S.minibatch_cka_init())) == 0.0
  with pytest.raises(ValueError, match="n ≥ 4|at least 4"):
    S.minibatch_cka(x[:30].reshape(10, 3, -1), y[:30].reshape(10, 3, -1))


def _layers(rng, n=400, widths=(6, 11, 4)):
  z = rng.normal(size=(n, 8))
  out = []
  for w in widths:
    a = np.maximum(z @ rng.normal(size=(8, w)), 0) + 0.3 * rng.normal(size=(n, w))
    out.append(a.astype(np.float32))
  return out


DIRECT = {
    "cca": lambda a, b: S.cca(a, b, epsilon=1e-6).mean,
    "svcca": lambda a, b: S.svcca(a, b, keep=3, epsilon=1e-6).mean,
    "pwcca": lambda a, b: S.pwcca(a, b, epsilon=1e-6, signs="largest_positive").value,
    "linear_cka": S.linear_cka,
    "procrustes_distance": S.procrustes_distance,
}


@pytest.mark.parametrize("measure", S.MEASURES)
def test_pairwise_equals_pair_by_pair(rng, measure):
  xs, ys = _layers(rng), _layers(rng, widths=(9, 5))
  kw = dict(epsilon=1e-6, keep=3 if measure == "svcca" else None, signs="largest_positive")
  mat = np.asarray(S.pairwise(xs, ys, measure=measure, **kw))
  assert mat.shape == (3, 2)
  for i, j in ((0, 0), (2, 1)):  # both of y's widths, two of x's; each pair compiles
    assert mat[i, j] == pytest.approx(float(DIRECT[measure](xs[i], ys[j])), abs=2e-5), (i, j)
  # Streamed: all pairs from one pass of moments.
  state = M.accumulate([tuple(a[k:k + 128] for a in xs + ys) for k in range(0, 400, 128)],
                       lambda b: list(b), cross=list(itertools.combinations(range(5), 2)))
  streamed = S.pairwise_moments(state, range(3), range(3, 5), measure=measure, **kw)
  np.testing.assert_allclose(streamed, mat, atol=1e-4)
  same = np.asarray(S.pairwise(xs, measure=measure, **kw))
  np.testing.assert_allclose(same, same.T, atol=1e-4)
  if measure != "procrustes_distance":
    np.testing.assert_allclose(np.diag(same), 1.0, atol=1e-4)


def test_pairwise_errors(rng):
  xs = _layers(rng)
  with pytest.raises(ValueError, match="measure must be one of"):
    S.pairwise(xs, measure="cka")
  with pytest.raises(ValueError, match=r"xs\[2\]: 400, ys\[0\]: 399"):
    S.pairwise(xs, [xs[0][:-1]])
  with pytest.raises(ValueError, match="conv must be one of"):
    S.pairwise(xs, conv="pool")
  state = M.accumulate([tuple(xs)], lambda b: list(b), cross=[(0, 1)])
  with pytest.raises(ValueError, match="no cross moments"):
    S.pairwise_moments(state, [0], [2])


def test_conv_maps_compare_by_one_documented_convention(rng):
  """Conv maps of different spatial sizes beside a dense layer: by default
  averaged over positions (`features`), each entry equal to the measure on
  those [n, C] arrays; 'flatten' equals per-image vectors; 'positions'
  refuses maps of different sizes and names them."""
  n = 64
  maps = [rng.normal(size=(n, 6, 6, 3)), rng.normal(size=(n, 3, 3, 5)), rng.normal(size=(n, 7))]
  maps = [m.astype(np.float32) for m in maps]
  mat = np.asarray(S.pairwise(maps, measure="linear_cka"))
  mean = [m.reshape(n, -1, m.shape[-1]).mean(1) if m.ndim > 2 else m for m in maps]
  for i, j in itertools.product(range(3), repeat=2):
    assert mat[i, j] == pytest.approx(float(S.linear_cka(mean[i], mean[j])), abs=1e-5)
  flat = np.asarray(S.pairwise(maps, measure="linear_cka", conv="flatten"))
  assert flat[0, 1] == pytest.approx(
      float(S.linear_cka(maps[0].reshape(n, -1), maps[1].reshape(n, -1))), abs=1e-5)
  with pytest.raises(ValueError, match=r"xs\[0\]: 2304, xs\[1\]: 576, xs\[2\]: 64.*conv='mean'"):
    S.pairwise(maps, conv="positions")


def test_null_baselines(rng):
  # Few datapoints per neuron: CCA of unrelated data is high by chance.
  n, d = 60, 20
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.normal(size=(n, d)).astype(np.float32)
  fn = lambda a, b: S.cca(a, b).mean
  for method in ("permutation", "gaussian"):
    null = S.null_baseline(fn, x, y, jax.random.key(0), num_samples=64, method=method)
    assert null.samples.shape == (64,)
    assert float(null.mean) > 0.3 and float(null.std) > 0
    # Independent data lands on the baseline ...
    assert abs(float(null.zscore(fn(x, y)))) < 4
  # ... related data far above it.
  related = x @ rng.normal(size=(d, d)).astype(np.float32) + 0.5 * y
  assert float(null.zscore(fn(x, related))) > 10
  # Independent Gaussian data drawn repeatedly: the observed mean matches.
  obs = [float(fn(rng.normal(size=(n, d)).astype(np.float32),
                  rng.normal(size=(n, d)).astype(np.float32))) for _ in range(16)]
  assert abs(np.mean(obs) - float(null.mean)) < 3 * float(null.std) / 4 + 0.01
  with pytest.raises(ValueError, match="method"):
    S.null_baseline(fn, x, y, jax.random.key(0), method="bootstrap")


def test_null_baseline_scores_the_real_pairing_in_its_program(rng):
  """The baseline carries ``fn(x, y)`` (its default z-score), and calls with
  the same `fn` and shapes reuse one compiled program."""
  from rainbow_jax.similarity import _null
  n, d = 50, 8
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = x @ rng.normal(size=(d, d)).astype(np.float32) + rng.normal(size=(n, d)).astype(np.float32)
  fn = lambda a, b: S.linear_cka(a, b)
  null = S.null_baseline(fn, x, y, jax.random.key(1), num_samples=16)
  np.testing.assert_allclose(float(null.score), float(fn(x, y)), rtol=1e-6)
  np.testing.assert_allclose(float(null.zscore()), float(null.zscore(fn(x, y))), rtol=1e-6)
  assert float(null.zscore()) > 5
  size = _null._draws._cache_size()
  for k in range(3):
    S.null_baseline(fn, x + k, y, jax.random.key(k), num_samples=16)
  assert _null._draws._cache_size() == size


def test_cca_distance(rng):
  x, y = _related(rng)
  t = rng.normal(size=(10, 10)).astype(np.float32)
  assert float(S.cca_distance(x, x @ t)) == pytest.approx(0.0, abs=1e-4)
  d = float(S.cca_distance(x, y))
  out = S.cca(x, y)
  assert 0 < d < 1
  assert d == pytest.approx(1 - float(out.sum) / int(out.num_coefficients), abs=1e-6)


def test_nan_inputs_raise(rng):
  x, y = _related(rng)
  x[3, 2] = np.inf
  for f in (S.cca, S.pwcca, S.linear_cka, S.linear_cka_debiased, S.rbf_cka):
    with pytest.raises(ValueError, match="NaN or Inf"):
      f(x, y)
