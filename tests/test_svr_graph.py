"""The full SVR: co-SVR, path metric, entropy and effective filters, against
the reference code's outputs (tests/fixtures/svr_reference.npz), scipy's
convolution, and the reference's statement that the co-SVR is the SVR of the
reversed, transposed network."""

import os

import jax
import numpy as np
import pytest
import scipy.signal

from rainbow_jax import svr as V

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "svr_reference.npz")


@pytest.fixture(scope="module")
def ref():
  return dict(np.load(FIXTURE))


def _weights(ref):
  return [ref[f"w{i}"].astype(np.float32) for i in range(4)]


@pytest.mark.parametrize("method", ["svr", "cosvr"])
def test_matches_the_reference_code(ref, method):
  res = V.svr(_weights(ref), method=method)
  assert res.method == method
  for i, sp in enumerate(res.spectra):
    np.testing.assert_allclose(np.asarray(sp.s), ref[f"{method}_s{i}"], rtol=1e-5)
  for i, a in enumerate(res.adjacency):
    np.testing.assert_allclose(np.asarray(a), ref[f"{method}_adjacency{i}"], atol=2e-5)
  np.testing.assert_allclose(float(V.path_metric(res)), ref[f"{method}_path"], rtol=1e-5)
  np.testing.assert_allclose(float(V.path_metric(res, scale=False)),
                             ref[f"{method}_path_unscaled"], rtol=1e-5)
  np.testing.assert_allclose(float(V.path_metric(res, threshold=1.0)),
                             ref[f"{method}_path_threshold"], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(V.entropy(res)), ref[f"{method}_entropy"], rtol=1e-5)
  # Effective filters of the conv → conv edge, [M1, M0, 3, 3] against the
  # reference's [M1, 3, 3, M0], each up to the signs of its two vectors.
  f = np.asarray(V.effective_filters(res.spectra[0], res.spectra[1], channels=6,
                                     kernel=(3, 3)), np.float64)
  want = np.transpose(ref[f"{method}_filters0"], (0, 3, 1, 2))
  sign = np.sign(np.sum(f * want, axis=(2, 3), keepdims=True))
  np.testing.assert_allclose(f * sign, want, atol=2e-5)
  # The squared norm of each filter is the edge weight.
  np.testing.assert_allclose(np.sum(f ** 2, axis=(2, 3)), np.asarray(res.adjacency[0]),
                             atol=1e-5)


def _reverse_transpose(ws):
  out = []
  for w in ws[::-1]:
    out.append(w.T if w.ndim == 2 else np.transpose(w, (1, 0, 2, 3))[:, :, ::-1, ::-1])
  return out


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_cosvr_is_the_svr_of_the_reversed_transposed_network(rng, kind):
  if kind == "conv":
    ws = [rng.normal(size=s).astype(np.float32)
          for s in [(7, 3, 3, 3), (9, 7, 3, 3), (5, 9, 1, 1)]]
  else:
    ws = [rng.normal(size=s).astype(np.float32) for s in [(7, 12), (9, 7), (5, 9)]]
  co = V.svr(ws, method="cosvr")
  back = V.svr(_reverse_transpose(ws))
  n = len(ws)
  for i in range(n):
    np.testing.assert_allclose(np.asarray(co.spectra[i].s),
                               np.asarray(back.spectra[n - 1 - i].s), rtol=1e-5)
  for i in range(n - 1):
    np.testing.assert_allclose(np.asarray(co.adjacency[i]),
                               np.asarray(back.adjacency[n - 2 - i]).T, atol=1e-5)
    np.testing.assert_allclose(np.asarray(co.pvalues[i]),
                               np.asarray(back.pvalues[n - 2 - i]).T, rtol=1e-3, atol=1e-6)
    assert not co.sampled[i]
  if kind == "dense":  # no taps: both graphs are the SVR
    plain = V.svr(ws)
    for a, b in zip(plain.adjacency, co.adjacency):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def _correlate(x, f):
  return scipy.signal.correlate2d(x, f, mode="same")


def test_effective_filters_carry_the_spectral_activations(rng):
  """z_n = Σ_m A_{n,m} ⋆ y_m (section 4.2), checked with scipy's correlation on
  the native weights, for the SVR and the co-SVR of two conv layers."""
  t1 = rng.normal(size=(6, 2, 3, 3))
  t2 = rng.normal(size=(4, 6, 3, 3))
  h = 9
  # SVR: layer 1 with spectral activations y feeds layer 2; layer 2's output
  # is Σ_n U2_{:,n} s2_n z_n.
  s1, s2 = V.spectra([t1.astype(np.float32), t2.astype(np.float32)])
  u1, u2, sv2 = (np.asarray(a, np.float64) for a in (s1.u, s2.u, s2.s))
  y = rng.normal(size=(u1.shape[1], h, h))
  x = np.einsum("km,mhw->khw", u1, y)
  out = np.stack([sum(_correlate(x[k], t2[j, k]) for k in range(6)) for j in range(4)])
  a = np.asarray(V.effective_filters(s1, s2, kernel=(3, 3)), np.float64)
  z = np.stack([sum(_correlate(y[m], a[n, m]) for m in range(y.shape[0]))
                for n in range(a.shape[0])])
  np.testing.assert_allclose(np.einsum("jn,n,nhw->jhw", u2, sv2, z), out, atol=1e-4)
  # co-SVR: layer 1 mixes its inputs into y_m = s_m Σ_i v_{i,m} in_i, then
  # convolves; layer 2's co-spectral activation n reads z_n = Σ_k v2_{k,n} x_k.
  c1, c2 = V.spectra([t1.astype(np.float32), t2.astype(np.float32)], co=True)
  inp = rng.normal(size=(2, h, h))
  x = np.stack([sum(_correlate(inp[i], t1[k, i]) for i in range(2)) for k in range(6)])
  y = np.einsum("im,ihw->mhw", np.asarray(c1.v, np.float64) * np.asarray(c1.s)[None], inp)
  z_direct = np.einsum("kn,khw->nhw", np.asarray(c2.v, np.float64), x)
  a = np.asarray(V.effective_filters(c1, c2, channels=6, kernel=(3, 3)), np.float64)
  z = np.stack([sum(_correlate(y[m], a[n, m]) for m in range(y.shape[0]))
                for n in range(a.shape[0])])
  np.testing.assert_allclose(z, z_direct, atol=1e-4)
  np.testing.assert_allclose(np.sum(a ** 2, axis=(2, 3)),
                             np.asarray(V.adjacency(c1, c2, channels=6)), atol=1e-5)
  with pytest.raises(ValueError, match="taps"):
    V.effective_filters(s1, s2, kernel=(2, 2))


def test_cosvr_conv_to_dense_sampled_null_is_calibrated_and_finds_a_planted_edge(rng):
  """A co-SVR conv → dense edge (taps on both sides) samples its null law:
  between independent Gaussian layers (Haar-distributed singular vectors)
  its p-values are uniform."""
  c, k, p = 12, 3, 16  # 12 channels, 3×3 taps, a 4×4 map read by the dense layer

  keys = jax.random.split(jax.random.key(0), 100)
  pv = []
  for key in keys:
    k1, k2 = jax.random.split(key)
    conv = jax.random.normal(k1, (c, 5, k, k))
    dense = jax.random.normal(k2, (7, c * p))
    pv.append(np.asarray(V.svr([conv, dense], method="cosvr", null_draws=2048).pvalues[0]))
  pv = np.stack(pv)
  for alpha in (0.01, 0.05, 0.15, 0.3, 0.6):
    assert abs(np.mean(pv < alpha) - alpha) < 0.2 * alpha + 0.005, alpha
  # With 64 channels, a dense layer whose first row reads
  # spectral neuron 0's output representation (its 9 taps on 9 of the map's
  # 16 positions) is found.
  c = 64
  conv = rng.normal(size=(c, 5, k, k)).astype(np.float32)
  u0 = np.asarray(V.spectra([conv], co=True)[0].u)[:, 0].reshape(c, k * k)
  dense = rng.normal(size=(7, c, p)) * 0.05
  dense[0, :, :k * k] = 10 * u0
  res = V.svr([conv, dense.reshape(7, c * p).astype(np.float32)], method="cosvr")
  assert res.sampled == [True] and res.positions == [k * k * p]
  assert bool(res.significant[0][0, 0]) and float(res.pvalues[0][0, 0]) < 1e-3
  assert float(np.mean(np.asarray(res.significant[0]))) < 0.3


def test_entropy_of_exact_zeros_and_bad_method(rng):
  # Block-diagonal weights: the cross-block edges are exactly 0; the
  # reference's −Σ a log a gives NaN there, ours counts 0 log 0 = 0.
  w1 = np.zeros((4, 4), np.float32)
  w1[:2, :2], w1[2:, 2:] = rng.normal(size=(2, 2)), rng.normal(size=(2, 2)) + 5
  res = V.svr([w1, w1.copy()])
  a = np.asarray(res.adjacency[0], np.float64)
  assert np.sum(a == 0) >= 4
  nz = a[a > 0]
  np.testing.assert_allclose(float(V.entropy(res)[0]), -np.sum(nz * np.log(nz)), rtol=1e-5)
  with pytest.raises(ValueError, match="cosvr"):
    V.svr([w1, w1], method="co")


def test_svr_stack_equals_one_network_at_a_time(rng):
  """N networks in one program give each network's `svr`."""
  shapes = [(6, 3, 3, 3), (8, 6, 3, 3), (10, 8 * 4 * 4), (5, 10)]
  nets = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(3)]
  stacked = V.svr_stack([np.stack([net[l] for net in nets]) for l in range(len(shapes))])
  assert stacked.internal_dims[0].shape == (3, 2)
  for i, net in enumerate(nets):
    one, got = V.svr(net), V.take(stacked, i)
    for a, b in zip(got.spectra, one.spectra):
      np.testing.assert_allclose(np.asarray(a.s), np.asarray(b.s), rtol=1e-5)
    for a, b in zip(got.adjacency, one.adjacency):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    for a, b in zip(got.pvalues, one.pvalues):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-6)
    assert got.internal_dims == one.internal_dims
    assert float(V.path_metric(got)) == pytest.approx(float(V.path_metric(one)), rel=1e-5)
  with pytest.raises(ValueError, match="same number of networks"):
    V.svr_stack([np.zeros((3, 4, 5), np.float32) + 1, np.ones((2, 6, 4), np.float32)])
