"""PWCCA and the google/svcca-compatible module against the independent
float64 numpy reference in `svcca_reference`."""

import os

import numpy as np
import pytest

import rainbow_jax.compat.svcca as cca_core
from rainbow_jax import moments as M
from rainbow_jax import similarity as S

import svcca_reference as ref


def _pair(rng, kind, n=1500, dx=14, dy=10, offset=True):
  if kind == "random":
    x = rng.normal(size=(n, dx))
    y = x[:, :dy] @ rng.normal(size=(dy, dy)) + 0.8 * rng.normal(size=(n, dy))
  elif kind == "ill":  # variances spanning 10³, nonlinear relation
    x = rng.normal(size=(n, dx)) * np.logspace(0, -1.5, dx)
    y = np.tanh(3 * x[:, :dy] @ rng.normal(size=(dy, dy))) + 0.1 * rng.normal(size=(n, dy))
  elif kind == "dead_neurons":  # near-constant neurons, removed by epsilon
    x = rng.normal(size=(n, dx))
    x[:, :3] = 5 + 1e-4 * rng.normal(size=(n, 3))
    y = x[:, 3:3 + dy] + 0.5 * rng.normal(size=(n, dy))
  elif kind == "low_rank":  # exactly rank 5
    z = rng.normal(size=(n, 5))
    x = z @ rng.normal(size=(5, dx))
    y = z[:, :4] @ rng.normal(size=(4, dy)) + 0.3 * rng.normal(size=(n, dy))
  if offset:  # ReLU-like nonzero means
    x = x + rng.uniform(0.5, 2.0, size=dx)
    y = y + rng.uniform(0.5, 2.0, size=dy)
  return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("kind,epsilon", [("random", 0.0), ("ill", 0.0), ("ill", 1e-6),
                                          ("dead_neurons", 1e-6)])
@pytest.mark.parametrize("swap", [False, True])  # x side and y side
def test_pwcca_matches_reference(rng, kind, epsilon, swap):
  x, y = _pair(rng, kind)
  if swap:
    x, y = y, x
  value, weights, coefs = ref.pwcca(x.T, y.T, epsilon=epsilon)
  out = S.pwcca(x, y, epsilon=epsilon, signs="largest_positive")
  k = int(out.num_coefficients)
  assert k == len(coefs)
  assert bool(out.x_side) == swap  # the narrower side (y: 10 < 14 neurons) is weighted
  np.testing.assert_allclose(out.coefficients[:k], coefs, atol=1e-4)
  np.testing.assert_allclose(out.weights[:k], weights, atol=1e-4)
  assert float(out.value) == pytest.approx(value, abs=1e-4)
  assert float(np.sum(out.weights)) == pytest.approx(1.0, abs=1e-5)


def test_pwcca_centred_needs_no_sign_convention(rng):
  x, y = _pair(rng, "random", offset=False)
  x, y = x - x.mean(0), y - y.mean(0)
  for a, b in ((x, y), (y, x)):
    value, _, _ = ref.pwcca(a.T, b.T, signs=False)
    assert float(S.pwcca(a, b).value) == pytest.approx(value, abs=1e-4)


def test_pwcca_invariants_and_degenerate_inputs(rng):
  x, y = _pair(rng, "random")
  assert float(S.pwcca(x, 3 * x - 1).value) == pytest.approx(1.0, abs=1e-4)
  v = float(S.pwcca(x, y).value)
  assert 0.0 < v < 1.0
  # Rank-deficient and n < d: finite, in [0, 1], weights a distribution.
  for a, b in (_pair(rng, "low_rank"), (x[:8], y[:8])):
    out = S.pwcca(a, b)
    assert np.isfinite(float(out.value)) and -1e-6 <= float(out.value) <= 1 + 1e-4
    assert float(np.sum(out.weights)) == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.asarray(out.weights) >= 0)


def test_pwcca_streamed_equals_in_memory(rng):
  x, y = _pair(rng, "ill")
  s = M.accumulate([(x[i:i + 200], y[i:i + 200]) for i in range(0, len(x), 200)],
                   lambda b: list(b), cross=[(0, 1)])
  streamed, direct = S.pwcca_moments(s, 0, 1), S.pwcca(x, y)
  assert float(streamed.value) == pytest.approx(float(direct.value), abs=1e-5)
  np.testing.assert_allclose(streamed.weights, direct.weights, atol=1e-5)


def _match_rows(ours, theirs):
  """Signs that map our directions (rows) onto the reference's."""
  return np.sign(np.sum(ours * theirs, axis=1, keepdims=True))


@pytest.mark.parametrize("kind,epsilon", [("random", 0.0), ("dead_neurons", 1e-6)])
def test_compat_get_cca_similarity_matches_reference(rng, kind, epsilon):
  x, y = _pair(rng, kind)
  a1, a2 = x.T.astype(np.float64), y.T.astype(np.float64)  # what svcca users pass
  got = cca_core.get_cca_similarity(a1, a2, epsilon=epsilon, compute_dirns=True)
  u, s, vh, ix, iy, kx, ky = ref.cca_parts(a1, a2, epsilon)
  mean, total = ref.summary(s, 0.98)
  k = len(s)
  np.testing.assert_allclose(got["cca_coef1"], s, atol=1e-4)
  np.testing.assert_array_equal(got["cca_coef2"], got["cca_coef1"])
  np.testing.assert_array_equal(got["x_idxs"], kx)
  np.testing.assert_array_equal(got["y_idxs"], ky)
  assert float(got["mean"][0]) == pytest.approx(mean, abs=1e-4)
  assert float(got["sum"][1]) == pytest.approx(total, abs=1e-3)
  np.testing.assert_allclose(got["invsqrt_xx"], ix, rtol=1e-3, atol=1e-3 * np.abs(ix).max())
  np.testing.assert_allclose(got["invsqrt_yy"], iy, rtol=1e-3, atol=1e-3 * np.abs(iy).max())
  assert got["coef_x"].shape == (kx.sum(), kx.sum()) and got["coef_y"].shape == (ky.sum(),) * 2
  assert got["full_coef_x"].shape == (len(kx), len(kx))
  assert np.all(got["full_coef_x"][~kx] == 0) and np.all(got["full_invsqrt_xx"][:, ~kx] == 0)
  sx = _match_rows(got["coef_x"][:k], u.T[:k])
  np.testing.assert_allclose(sx * got["coef_x"][:k], u.T[:k], atol=2e-3)
  sy = _match_rows(got["coef_y"][:k], vh[:k])
  np.testing.assert_allclose(sy * got["coef_y"][:k], vh[:k], atol=2e-3)
  np.testing.assert_allclose(got["neuron_means1"], a1.mean(1, keepdims=True), rtol=1e-5)
  # Directions over datapoints: (coef · invsqrt)(acts − μ) + μ, up to each sign.
  m1 = a1.mean(1, keepdims=True)
  full_u = np.zeros((len(kx),) * 2)
  full_u[np.ix_(kx, kx)] = u.T
  full_i = np.zeros((len(kx),) * 2)
  full_i[np.ix_(kx, kx)] = ix
  want = (full_u @ full_i @ (a1 - m1))
  rows = np.flatnonzero(kx)[:k]
  have = (got["cca_dirns1"] - m1)[rows]
  np.testing.assert_allclose(_match_rows(have, want[rows]) * have, want[rows],
                             atol=2e-3 * np.abs(want).max())


_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                         "svcca_reference.npz")
CASES = ["lowrank_7_decades", "relu_large_means", "equal_width_dead_y", "epsilon_removal"]


@pytest.mark.parametrize("case", CASES)
def test_compat_reproduces_google_svcca_outputs(case):
  """The real google/svcca's outputs (``tests/fixtures``), not our reading."""
  f = np.load(_FIXTURES)
  get = lambda k: f[f"{case}/{k}"]
  x, y, eps = get("x"), get("y"), float(get("epsilon"))
  got = cca_core.get_cca_similarity(x, y, epsilon=eps)
  np.testing.assert_array_equal(got["x_idxs"], get("x_idxs"))
  np.testing.assert_array_equal(got["y_idxs"], get("y_idxs"))
  ref_coef = get("cca_coef1")
  assert got["cca_coef1"].shape == ref_coef.shape
  value, weights, coefs = cca_core.compute_pwcca(x, y, epsilon=eps)
  if case == "lowrank_7_decades":
    # Covariance eigenvalues over 7 decades: the small canonical correlations
    # of the low-variance directions survive (float64 inputs run in float64).
    tail = ref_coef < 0.5
    np.testing.assert_allclose(got["cca_coef1"][tail], ref_coef[tail], atol=1e-4)
    # The reference's leading coefficients are numerically wrong here (its
    # pinv-then-sqrt whitening squares the condition number): they exceed 1,
    # up to 1.019, where a 40-digit computation gives 0.99987–0.99999. Ours
    # stay within 1e-4 of those.
    assert ref_coef.max() > 1.01
    assert np.all(got["cca_coef1"][~tail] <= 1 + 1e-9)
    assert np.all(got["cca_coef1"][~tail] > 0.9998)
    return
  tol = 1e-4
  np.testing.assert_allclose(got["cca_coef1"], ref_coef, atol=tol)
  np.testing.assert_allclose(got["mean"][0], get("mean")[0], atol=tol)
  np.testing.assert_allclose(got["sum"][0], get("sum")[0], atol=tol * len(ref_coef))
  if f"{case}/pwcca" not in f:  # the reference's compute_pwcca raises on these inputs
    return
  assert float(value) == pytest.approx(float(get("pwcca")), abs=tol)
  np.testing.assert_allclose(weights, get("pwcca_weights"), atol=tol)
  np.testing.assert_allclose(coefs, ref_coef, atol=tol)


@pytest.mark.parametrize("case", CASES)
def test_numpy_reading_of_the_reference_reproduces_its_coefficients(case):
  """`svcca_reference` (the benchmark's peer and the reference for
  `similarity.pwcca`'s conventions) is anchored to the real reference's
  outputs, the leading coefficients above 1 of its pinv whitening included."""
  f = np.load(_FIXTURES)
  get = lambda k: f[f"{case}/{k}"]
  _, s, _, _, _, kx, ky = ref.cca_parts(get("x"), get("y"), float(get("epsilon")))
  np.testing.assert_array_equal(kx, get("x_idxs"))
  np.testing.assert_array_equal(ky, get("y_idxs"))
  want = get("cca_coef1")
  if case == "lowrank_7_decades":
    # The reference's leading coefficients here are float64 rounding of a
    # squared condition number (above 1, up to 1.026): they differ from one
    # LAPACK build to another by ~1e-2 (AMD EPYC vs Intel Xeon). The tail is
    # well determined.
    tail = want < 0.5
    s, want = s[tail], want[tail]
  np.testing.assert_allclose(s, want, atol=1e-6)


def test_compat_errors(rng):
  x, y = _pair(rng, "random")
  with pytest.raises(ValueError, match="fewer neurons than datapoints"):
    cca_core.get_cca_similarity(x[:10].T, y[:10].T)
  with pytest.raises(ValueError, match="same number of datapoints"):
    cca_core.get_cca_similarity(x.T, y[:-1].T)
  bad = x.T.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    cca_core.compute_pwcca(bad, y.T)
  # Every neuron removed: the reference's zero dict.
  zero = cca_core.get_cca_similarity(x.T, y.T, epsilon=2.0, compute_dirns=True)
  assert set(zero) == {"mean", "sum", "cca_coef1", "cca_coef2", "idx1", "idx2",
                       "cca_dirns1", "cca_dirns2"}
  assert zero["cca_dirns1"].shape == (1, x.shape[0])


@pytest.fixture(scope="module")
def wide():
  return np.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                              "svcca_wide.npz"))


def _regenerated(wide, case, d, n, k, offset):
  from test_similarity_scale import signal_plus_noise
  x, y = (a.astype(np.float32) for a in signal_plus_noise(d, n, k, offset=offset))
  checksum = x[:, 0].astype(np.float64).sum() + y[-1].astype(np.float64).sum()
  assert checksum == pytest.approx(float(wide[f"{case}/checksum"]), rel=1e-9)
  return x, y


def test_compat_equals_google_svcca_at_width_512_in_float32(wide):
  """google/svcca's own outputs on float32 activations of 2 × 512 neurons ×
  6 000 datapoints (low rank + unit noise, ReLU-like means): the drop-in,
  computing in float32, gives its coefficients, mean, sum and PWCCA."""
  x, y = _regenerated(wide, "wide", 512, 6000, 16, True)
  got = cca_core.get_cca_similarity(x.T, y.T)
  np.testing.assert_allclose(got["cca_coef1"], wide["wide/coef"], atol=1e-3)
  assert abs(got["mean"][0] - float(wide["wide/mean"])) < 1e-4
  assert got["sum"][0] == pytest.approx(float(wide["wide/sum"]), rel=1e-5)
  value, _, _ = cca_core.compute_pwcca(x.T, y.T)
  assert abs(float(value) - float(wide["wide/pwcca"])) < 1e-3
  # The native API gives the same numbers on datapoints × neurons.
  assert abs(float(S.cca(x, y).mean) - float(wide["wide/mean"])) < 1e-4
  assert abs(float(S.pwcca(x, y).value) - float(wide["wide/pwcca"])) < 1e-3


@pytest.mark.slow
def test_compat_equals_google_svcca_at_2048_by_50000_in_float32(wide):
  """The drop-in's benchmark case, 2 × 2 048 neurons × 50 000 datapoints of
  float32 (64 shared latents + unit noise): google/svcca's mean 0.22690;
  before the resolution floor the drop-in returned 0.9995."""
  x, y = _regenerated(wide, "big", 2048, 50000, 64, False)
  got = cca_core.get_cca_similarity(x.T, y.T, compute_coefs=False)
  np.testing.assert_allclose(got["cca_coef1"], wide["big/coef"], atol=1e-3)
  assert abs(got["mean"][0] - float(wide["big/mean"])) < 1e-4
  value, _, _ = cca_core.compute_pwcca(x.T, y.T)
  assert abs(float(value) - float(wide["big/pwcca"])) < 1e-3
