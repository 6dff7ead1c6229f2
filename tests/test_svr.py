"""SVR: null laws by Monte Carlo, invariances, appendix B.1, layouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from rainbow_jax import models, network
from rainbow_jax import svr as V
from rainbow_jax.svr._adjacency import _adjacency


def _edge_samples(key, c, k, draws, init):
  """One fixed edge (0, 0) of the SVR of `draws` independent random pairs of
  layers: c shared channels, K×K kernels (K = 1: dense)."""
  def pair(key):
    k1, k2 = jax.random.split(key)
    if init == "normal":
      w1 = jax.random.normal(k1, (c, 7 * k * k))
      w2 = jax.random.normal(k2, (5, c * k * k))
    else:
      w1 = jax.random.uniform(k1, (c, 7 * k * k), minval=-1, maxval=1)
      w2 = jax.random.uniform(k2, (5, c * k * k), minval=-1, maxval=1)
    u = jnp.linalg.svd(w1, full_matrices=False)[0]
    v = jnp.linalg.svd(w2, full_matrices=False)[2].T
    return _adjacency(u, v)[0, 0]
  return np.asarray(jax.jit(jax.vmap(pair))(jax.random.split(key, draws)), np.float64)


@pytest.mark.parametrize("c,k", [(6, 1), (40, 1), (8, 3)])
@pytest.mark.parametrize("init", ["normal", "uniform"])
def test_exact_null_law_by_monte_carlo(c, k, init):
  a = _edge_samples(jax.random.key(c * 10 + k), c, k, 3000, init)
  assert np.all(a >= 0) and np.all(a <= 1 + 1e-5)
  exact = V.null_law(c, k * k)
  p_exact = scipy.stats.kstest(a, exact.cdf).pvalue
  assert p_exact > 1e-3, (c, k, init, p_exact)
  p_asym = scipy.stats.kstest(a, V.null_law(c, k * k, exact=False).cdf).pvalue
  if c <= 8:  # few channels: the paper's χ² law is rejected, the exact one not
    assert p_asym < 1e-2 < p_exact, (c, k, p_asym)
  # p-values of the exact law are uniform under the null.
  pv = np.asarray(V.pvalues(jnp.asarray(a, jnp.float32), c, k * k))
  assert scipy.stats.kstest(pv, "uniform").pvalue > 1e-3
  np.testing.assert_allclose(pv[:50], exact.sf(a[:50]), atol=2e-5)
  np.testing.assert_allclose(np.asarray(V.pvalues(jnp.asarray(a[:50], jnp.float32), c, k * k,
                                                  exact=False)),
                             V.null_law(c, k * k, exact=False).sf(a[:50]), atol=2e-5)


def _net(rng):
  return [rng.normal(size=s).astype(np.float32)
          for s in [(16, 3, 3, 3), (12, 16, 3, 3), (10, 12 * 4), (10, 10), (4, 10)]]


def test_adjacency_bounds_and_positive_scale_invariance(rng):
  ws = _net(rng)
  base = V.svr(ws)
  scaled = V.svr([w * s for w, s in zip(ws, [0.01, 3.0, 250.0, 1.0, 0.5])])
  for a, b in zip(base.adjacency, scaled.adjacency):
    a = np.asarray(a)
    assert a.max() <= 1 + 1e-5 and a.min() >= 0
    # float32 SVDs of rescaled weights: near-degenerate singular pairs rotate by ~1e-4.
    np.testing.assert_allclose(np.asarray(b), a, atol=5e-4)
  assert base.positions == [9, 4, 1, 1] and base.channels == [16, 12, 10, 10]
  # Orthonormal columns: each previous spectral neuron's weights over a full
  # basis of the next layer's inputs sum to 1 (dense 10 → 10: square).
  np.testing.assert_allclose(np.asarray(base.adjacency[2]).sum(0), 1.0, atol=1e-4)


def _reference_adjacency(w1, w2):
  """Plain numpy, from the paper: A_{n,m} = Σ_k u_{k,m} V_{k,n} ∈ ℝ^{K×K}."""
  u = np.linalg.svd(w1.reshape(w1.shape[0], -1), full_matrices=False)[0]
  vh = np.linalg.svd(w2.reshape(w2.shape[0], -1), full_matrices=False)[2]
  c = w1.shape[0]
  vk = vh.reshape(vh.shape[0], c, -1)  # [n, k, positions]
  a = np.einsum("km,nkp->nmp", u, vk)
  return np.sum(a ** 2, axis=-1)


def test_adjacency_matches_reference_and_spectra_batched(rng):
  ws = _net(rng)
  res = V.svr(ws)
  for i in range(len(ws) - 1):
    np.testing.assert_allclose(np.asarray(res.adjacency[i]),
                               _reference_adjacency(ws[i].astype(np.float64),
                                                    ws[i + 1].astype(np.float64)), atol=1e-4)
  for w, sp in zip(ws, res.spectra):
    s = np.linalg.svd(w.reshape(w.shape[0], -1).astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(np.asarray(sp.s), s, rtol=1e-4)


def test_internal_dimensions_recover_block_size_appendix_b1():
  n = 100
  for p in (15, 40, 70):
    for eps in (0.002, 0.01):
      m = V.noisy_block_orthogonal(jax.random.key(p), n, p, eps)
      np.testing.assert_allclose(np.asarray(m @ m.T), np.eye(n), atol=1e-4)
      d_out, d_in = V.internal_dimensions(m * m, n)
      assert (int(d_out), int(d_in)) == (p, p), (p, eps)
  # Pure noise: no block to find; the estimate wanders (the paper: ≈ n/2).
  m = V.noisy_block_orthogonal(jax.random.key(0), n, 30, 5.0)
  assert int(V.internal_dimensions(m * m, n)[0]) != 30


def test_flax_and_torch_layouts_give_the_same_graph(rng):
  model = models.make("cnn", (28, 28, 1), 10, widths=[4, 6])
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  net = network.from_linen(model, params, jnp.zeros((1, 28, 28, 1)))
  kernels = net.kernels(params)
  native = V.from_flax(kernels)
  # Independently: the converted dense weight applied to the NCHW flatten of
  # the conv output reproduces Flax's dense output.
  x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
  feats = net.layer_inputs(params, x)[-1]  # input to the classifier (flattened NHWC)
  logits = model.apply({"params": params}, x)
  h = int(np.sqrt(feats.shape[1] // 6))
  nchw = np.transpose(np.asarray(feats).reshape(3, h, h, 6), (0, 3, 1, 2)).reshape(3, -1)
  np.testing.assert_allclose(nchw @ np.asarray(native[-1]).T, logits, atol=1e-4)
  # The same network written by hand in PyTorch's layout.
  torch_layout = [np.transpose(np.asarray(k), (3, 2, 0, 1)) for k in kernels[:2]]
  dense = np.asarray(kernels[2]).T.reshape(10, h, h, 6).transpose(0, 3, 1, 2).reshape(10, -1)
  a, b = V.svr(native), V.svr(V.from_flax(network.from_torch(torch_layout + [dense]).kernels))
  for x1, x2 in zip(a.adjacency, b.adjacency):
    np.testing.assert_allclose(np.asarray(x1), np.asarray(x2), atol=1e-5)
  assert a.positions == [25, h * h]


def test_significance_fdr_edges_and_graph(rng):
  ws = _net(rng)
  res = V.svr(ws, alpha=0.15)
  for p, m in zip(res.pvalues, res.significant):
    np.testing.assert_array_equal(np.asarray(m), np.asarray(p) < 0.15)
  # Benjamini–Hochberg against a direct numpy implementation.
  flat = np.concatenate([np.ravel(np.asarray(p)) for p in res.pvalues])
  order = np.sort(flat)
  ok = np.nonzero(order <= 0.2 * np.arange(1, flat.size + 1) / flat.size)[0]
  cut = order[ok.max()] if ok.size else -1
  fdr = V.svr(ws, fdr=0.2)
  for p, m in zip(fdr.pvalues, fdr.significant):
    np.testing.assert_array_equal(np.asarray(m), np.asarray(p) <= cut)
  # Without p-values, significance comes from the critical value alone.
  bare = V.svr(ws, alpha=0.15, with_pvalues=False)
  assert all(p is None for p in bare.pvalues)
  for m1, m2 in zip(bare.significant, res.significant):
    np.testing.assert_array_equal(np.asarray(m1), np.asarray(m2))
  # ... in a program compiled quickly on CPU (`_compile.once`): same graph.
  assert bare.internal_dims == res.internal_dims
  for a1, a2, c1, c2 in zip(bare.adjacency, res.adjacency, bare.intensity, res.intensity):
    np.testing.assert_allclose(np.asarray(a1), np.asarray(a2), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(c1), np.asarray(c2), rtol=1e-6, atol=1e-7)
  assert np.all(np.isnan(V.edges(bare)["pvalue"]))
  with pytest.raises(ValueError, match="fdr"):
    V.svr(ws, fdr=0.1, with_pvalues=False)
  e = V.edges(res)
  assert e["layer"].size == sum(int(np.sum(m)) for m in res.significant)
  assert np.all(e["pvalue"] < 0.15)
  i = 7
  np.testing.assert_allclose(e["weight"][i],
                             np.asarray(res.adjacency[e["layer"][i]])[e["target"][i], e["source"][i]])
  import networkx as nx  # in the test extra: this runs in CI
  g = V.to_networkx(res)
  assert isinstance(g, nx.DiGraph) and g.number_of_edges() == e["layer"].size


def test_co_svr_and_randomized_svd(rng):
  w1 = rng.normal(size=(12, 5, 1, 1)).astype(np.float32)
  w2 = rng.normal(size=(9, 12, 1, 1)).astype(np.float32)
  s = V.spectra([w1, w2])
  co = V.spectra([w2], co=True)[0]
  # 1×1 kernels: the co-SVR is the SVR, so |Ṽᵀ U|² is the adjacency.
  np.testing.assert_allclose(np.asarray(V.svr_to_co_svr(s[0], co)) ** 2,
                             np.asarray(V.adjacency(s[0], s[1])), atol=1e-5)
  w3 = rng.normal(size=(6, 12, 3, 3)).astype(np.float32)
  assert V.svr_to_co_svr(s[0], V.spectra([w3], co=True)[0]).shape == (12, 5)
  # Randomized top-k on a low-rank-plus-noise matrix.
  m = (rng.normal(size=(300, 8)) * np.arange(8, 0, -1)) @ rng.normal(size=(8, 200))
  m = (m + 0.01 * rng.normal(size=m.shape)).astype(np.float32)
  top = V.randomized_svd(jnp.asarray(m), jax.random.key(0), 5)
  np.testing.assert_allclose(np.asarray(top.s), np.linalg.svd(m, compute_uv=False)[:5], rtol=1e-4)
  full = V.spectra([m, m.T], top_k=5, key=jax.random.key(1))
  assert full[0].u.shape == (300, 5) and full[1].v.shape == (300, 5)
  with pytest.raises(ValueError, match="key"):
    V.spectra([m], top_k=5)


def test_bad_inputs():
  with pytest.raises(ValueError, match="rank"):
    V.svr([np.ones((3, 3, 3), np.float32), np.ones((3, 3), np.float32)])
  with pytest.raises(TypeError, match="floating"):
    V.svr([np.ones((3, 3), np.int32), np.ones((3, 3), np.int32)])
  with pytest.raises(ValueError, match="cannot follow"):
    V.svr([np.ones((4, 3), np.float32), np.ones((2, 5), np.float32)])


def test_figures(rng, tmp_path):
  pytest.importorskip("matplotlib")
  from rainbow_jax import plots
  res = V.svr(_net(rng))
  ax = plots.svr_graph(res, title="random")
  assert len(ax.collections) >= len(res.spectra)  # edges + one scatter per layer
  assert plots.save(ax, str(tmp_path / "svr.png"))
  ax = plots.adjacency(res.adjacency[2], dims=res.internal_dims[2])
  assert plots.save(ax, str(tmp_path / "adj.png"))
  assert (tmp_path / "svr.png").stat().st_size > 1000


def test_to_flax_inverts_from_flax_and_low_rank_compresses(rng):
  model = models.make("cnn", (28, 28, 1), 10, widths=[4, 6])
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  kernels = network.from_linen(model, params, jnp.zeros((1, 28, 28, 1))).kernels(params)
  native = V.from_flax(kernels)
  for k, back in zip(kernels, V.to_flax(native)):
    np.testing.assert_array_equal(np.asarray(k), np.asarray(back))
  # Full rank changes nothing; rank r leaves exactly r nonzero singular
  # values, and the error is the discarded tail (Eckart–Young).
  full = V.low_rank(native, [min(V.flatten(w).shape) for w in native])
  for w, f in zip(native, full):
    np.testing.assert_allclose(np.asarray(f), np.asarray(w), atol=1e-5)
  ws = _net(rng)
  ranks = [2, 5, 1, 10, 3]
  for w, c, r in zip(ws, V.low_rank(ws, ranks), ranks):
    assert c.shape == w.shape
    s_w = np.linalg.svd(np.asarray(V.flatten(jnp.asarray(w)), np.float64), compute_uv=False)
    s_c = np.linalg.svd(np.asarray(V.flatten(c), np.float64), compute_uv=False)
    np.testing.assert_allclose(s_c[:r], s_w[:r], rtol=1e-4)
    assert np.all(s_c[r:] < 1e-4 * s_w[0])
    err = np.linalg.norm(np.asarray(V.flatten(c)) - np.asarray(V.flatten(jnp.asarray(w))))
    np.testing.assert_allclose(err, np.sqrt(np.sum(s_w[r:] ** 2)), rtol=1e-3, atol=1e-4)
  with pytest.raises(ValueError, match="ranks for"):
    V.low_rank(ws, ranks[:2])
  with pytest.raises(ValueError, match="outside"):
    V.low_rank(ws, [99] * 5)


def test_keep_ranks_reads_the_blocks():
  # W0 = S, W1 = S Qaᵀ, W2 = S Qbᵀ: U = I everywhere and V1 = Qa, V2 = Qb,
  # so the adjacencies are Qaᵀ∘Qaᵀ and Qbᵀ∘Qbᵀ, blocks of 12 and 20.
  n = 60
  qa = V.noisy_block_orthogonal(jax.random.key(3), n, 12, 0.02)
  qb = V.noisy_block_orthogonal(jax.random.key(4), n, 20, 0.02)
  s = jnp.diag(jnp.linspace(2.0, 1.0, n))
  res = V.svr([s, s @ qa.T, s @ qb.T])
  assert res.internal_dims == [(12, 12), (20, 20)]
  assert V.keep_ranks(res) == [12, 20, 20]


def test_gram_method_agrees_with_svd(rng):
  ws = _net(rng) + [rng.normal(size=(300, 4)).astype(np.float32)]  # a tall layer too
  a, b = V.svr(ws), V.svr(ws, solver="gram")
  for x, y in zip(a.spectra, b.spectra):
    np.testing.assert_allclose(np.asarray(y.s), np.asarray(x.s), rtol=1e-4, atol=1e-5)
  for x, y in zip(a.adjacency, b.adjacency):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=2e-4)
  assert a.internal_dims == b.internal_dims
  with pytest.raises(ValueError, match="solver"):
    V.spectra(ws, solver="qr")
