"""The public functions under jit and without it (`chex.variants`), traced
once per shape (`chex.assert_max_traces`), and the library's own jitted
programs compiled once per shape.

Expected values are invariants or numpy's LAPACK, never our own code.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rainbow_jax import align, ensembles, moments, similarity, spectra, svr
from rainbow_jax.compat import svcca as compat
from rainbow_jax.similarity import svcca_compat
from rainbow_jax.svr import _graph as svr_graph

_Q = np.linalg.qr(np.random.default_rng(9).normal(size=(6, 6)))[0].astype(np.float32)


def _data(seed, n=64, d=6):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


class InvariantsUnderJitAndWithout(chex.TestCase):
  """The same invariant with and without `jax.jit`; the eager variant runs
  the value checks (NaN/Inf), the jitted one traces past them."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_similarities_of_a_rotated_rescaled_shifted_copy_are_one(self):
    x = jnp.asarray(_data(0))
    y = 3.0 * x @ _Q + 1.0
    for fn in (similarity.linear_cka, similarity.rbf_cka):
      chex.assert_trees_all_close(self.variant(fn)(x, y), 1.0, atol=1e-4)
    out = self.variant(lambda a, b: similarity.cca(a, b).coefficients)(x, y)
    chex.assert_trees_all_close(out, jnp.ones(6), atol=1e-4)
    dist = self.variant(similarity.procrustes_distance)(x, x @ _Q)
    chex.assert_trees_all_close(dist, 0.0, atol=2e-3)

  @chex.variants(with_jit=True, without_jit=True)
  def test_alignment_recovers_a_rotation(self):
    x = jnp.asarray(_data(1))
    res = self.variant(align.align_features)(x, x @ _Q)
    chex.assert_trees_all_close(res.r2, 1.0, atol=1e-5)
    chex.assert_trees_all_close(res.matrix, _Q.T, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_spectra_equal_lapack(self):
    w = _data(2, 20, 6)
    lam, _ = self.variant(align.weight_eigenvectors)(jnp.asarray(w.T))
    want = np.sort(np.linalg.eigvalsh(w.astype(np.float64) @ w.T / 6))[::-1][:6]
    np.testing.assert_allclose(lam, want, rtol=1e-4)
    ev = self.variant(spectra.explained_variance)(jnp.asarray([3.0, 1.0, 0.0]))
    chex.assert_trees_all_close(ev, jnp.asarray([0.75, 1.0, 1.0]))

  @chex.variants(with_jit=True, without_jit=True)
  def test_streamed_moments_equal_numpy(self):
    x = _data(3, 300, 4) + 5.0
    st = moments.init([4])
    upd = self.variant(moments.update)
    for i in range(0, 300, 100):
      st = upd(st, jnp.asarray(x[i:i + 100]))
    np.testing.assert_allclose(moments.covariance(st, 0, centered=True),
                               np.cov(x.T.astype(np.float64), ddof=0), rtol=1e-5, atol=1e-6)


_ARGS = {
    "linear_cka": (similarity.linear_cka, lambda s: (_data(s), _data(s + 1))),
    "cca": (lambda x, y: similarity.cca(x, y).mean, lambda s: (_data(s), _data(s + 1))),
    "pwcca": (lambda x, y: similarity.pwcca(x, y).value, lambda s: (_data(s), _data(s + 1))),
    "procrustes_distance": (similarity.procrustes_distance,
                            lambda s: (_data(s), _data(s + 1))),
    "align_features": (align.align_features, lambda s: (_data(s), _data(s + 1))),
    "weight_spectrum": (spectra.weight_spectrum, lambda s: (_data(s, 6, 5),)),
    "ensembles.kernel": (ensembles.kernel, lambda s: (_data(s, 24, 8).reshape(4, 6, 8),)),
    "moments.update": (lambda x: moments.update(moments.init([6]), x), lambda s: (_data(s),)),
}


@pytest.mark.parametrize("name", list(_ARGS))
def test_public_functions_trace_once_per_shape(name):
  fn, make = _ARGS[name]
  jitted = jax.jit(chex.assert_max_traces(fn, n=1))
  first = jax.block_until_ready(jitted(*make(0)))
  second = jax.block_until_ready(jitted(*make(5)))  # new values, same shapes
  assert jax.tree.structure(first) == jax.tree.structure(second)
  chex.clear_trace_counter()


def test_library_programs_compile_once_per_shape():
  """Repeated calls on new values reuse each internal program."""
  rng = np.random.default_rng(0)
  w = [rng.normal(size=(12, 10)).astype(np.float32), rng.normal(size=(8, 12)).astype(np.float32)]
  batches = lambda s: jnp.asarray(_data(s, 48, 6).reshape(3, 16, 6))
  a1 = rng.normal(size=(5, 200))
  programs = [
      (lambda s: similarity.minibatch_cka(batches(s), batches(s + 1)),
       similarity._cka._minibatch_cka),
      (lambda s: svr.svr([m + s for m in w]), svr_graph._edge_full),
      (lambda s: compat.get_cca_similarity(a1.astype(np.float32) + s,
                                           a1[::-1].astype(np.float32), compute_coefs=False),
       svcca_compat._cca),
  ]
  for call, program in programs:
    call(0)
    size = program._cache_size()
    call(1)
    call(2)
    assert program._cache_size() == size, program
