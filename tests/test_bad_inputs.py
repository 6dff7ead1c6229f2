"""Every public entry point × bad input → a clear error (or a documented
finite answer), never a silent NaN or wrong number."""

import jax.numpy as jnp
import numpy as np
import pytest

import jax

from rainbow_jax import (align, ensembles, models, moments, network, rainbow, similarity,
                         spectra, svr)

_X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
_Y = np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32)
_NAN = _X.copy()
_NAN[3, 2] = np.nan
_INF = _Y.copy()
_INF[0, 0] = np.inf

_PAIR = {
    "linear_cka": similarity.linear_cka,
    "linear_cka_debiased": similarity.linear_cka_debiased,
    "rbf_cka": similarity.rbf_cka,
    "cca": similarity.cca,
    "svcca": lambda x, y: similarity.svcca(x, y, keep=3),
    "pwcca": similarity.pwcca,
    "procrustes_distance": similarity.procrustes_distance,
    "cca_distance": similarity.cca_distance,
    "align_features": align.align_features,
    "pairwise": lambda x, y: similarity.pairwise([x], [y]),
}
_BAD = {
    "datapoints differ": (ValueError, lambda: (_X, _Y[:30])),
    "integer dtype": (TypeError, lambda: (_X.astype(np.int32), _Y)),
    "NaN": (ValueError, lambda: (_NAN, _Y)),
    "Inf": (ValueError, lambda: (_X, _INF)),
    "one datapoint": (ValueError, lambda: (_X[:1], _Y[:1])),
    "empty": (ValueError, lambda: (_X[:0], _Y[:0])),
    "rank 1": (ValueError, lambda: (_X[:, 0], _Y[:, 0])),
}
_OK_ONE = {"align_features"}  # an alignment of one datapoint is defined


@pytest.mark.parametrize("bad", list(_BAD))
@pytest.mark.parametrize("name", list(_PAIR))
def test_pair_measures_refuse_bad_inputs(name, bad):
  err, make = _BAD[bad]
  if bad == "one datapoint" and name in _OK_ONE:
    res = _PAIR[name](*make())
    assert np.all(np.isfinite(np.asarray(res.r2)))
    return
  with pytest.raises(err):
    _PAIR[name](*make())


# One-array entry points: (call on the array, a good array, its rank).
_R = np.random.default_rng(2)
_W = _R.normal(size=(6, 5)).astype(np.float32)          # a Dense kernel [in, out]
_C = (lambda a: (a.T @ a / 30).astype(np.float32))(_R.normal(size=(30, 5)))  # covariance
_Z = _R.normal(size=(50, 3, 4)).astype(np.float32)      # [inits, inputs, neurons]
_KEY = jax.random.key(0)
_MP = spectra.marchenko_pastur(6, 5, 1.0)
_NET_MODEL = models.MLP(dims=(6, 5, 3))
_NET_VARS = _NET_MODEL.init(_KEY, jnp.zeros((1, 6)))
_NET_X = np.random.default_rng(3).normal(size=(10, 6)).astype(np.float32)
_NET = network.from_linen(_NET_MODEL, _NET_VARS, _NET_X[:2])
_SINGLE = {
    "spectra.weight_matrix": (spectra.weight_matrix, _W, 2),
    "spectra.weight_spectrum": (spectra.weight_spectrum, _W, 2),
    "spectra.activation_spectrum": (spectra.activation_spectrum, _C, 2),
    "spectra.layer_law": (spectra.layer_law, _W, 2),
    "spectra.learned_components": (lambda e: spectra.learned_components(e, _MP), np.linspace(3, .1, 5, dtype=np.float32), 1),
    "spectra.explained_variance": (spectra.explained_variance, np.linspace(3, .1, 5, dtype=np.float32), 1),
    "spectra.clip_kernel": (lambda k: spectra.clip_kernel(k, np.eye(6, dtype=np.float32), 2), _W, 2),
    "spectra.clip_sweep": (lambda b: spectra.clip_sweep(_NET, _NET_VARS, 0, [np.eye(6, dtype=np.float32), b], [[6], [1, 2]], _NET_X, np.arange(10) % 3), np.eye(6, dtype=np.float32), 2),
    "align.procrustes": (align.procrustes, _C, 2),
    "align.eigh_descending": (align.eigh_descending, _C, 2),
    "align.weight_eigenvectors": (align.weight_eigenvectors, _W.T, 2),
    "align.stability": (lambda e: align.stability(e, e), np.eye(5, dtype=np.float32), 2),
    "similarity.gram_linear": (similarity.gram_linear, _W, 2),
    "similarity.gram_rbf": (similarity.gram_rbf, _W, 2),
    "similarity.cka_from_gram": (lambda k: similarity.cka_from_gram(k, k), _C, 2),
    "similarity.linear_cka_from_covariance": (lambda c: similarity.linear_cka_from_covariance(c, c, c), _C, 2),
    "similarity.cca_from_covariance": (lambda c: similarity.cca_from_covariance(c, c, c), _C, 2),
    "similarity.procrustes_distance_from_covariance": (lambda c: similarity.procrustes_distance_from_covariance(c, c, c), _C, 2),
    "similarity.minibatch_cka": (lambda z: similarity.minibatch_cka(z, z), _Z.reshape(6, 25, 4), 3),
    "ensembles.kernel": (ensembles.kernel, _Z, 3),
    "ensembles.four_point": (ensembles.four_point, _Z, 3),
    "ensembles.sample": (lambda x: ensembles.sample(_KEY, x, [4], num_inits=8), _W, 2),
    "ensembles.linear_theory": (lambda x: ensembles.linear_theory(x, [4]), _W, 2),
    "rainbow.neuron_matrix": (rainbow.neuron_matrix, _W, 2),
    "rainbow.realign": (lambda k: rainbow.realign(k, np.eye(6, dtype=np.float32)), _W, 2),
    "rainbow.weight_factor": (lambda k: rainbow.weight_factor([k]), _W, 2),
    "svr.svr": (lambda w: svr.svr([w, _W.T]), _W, 2),
    "svr.neuron_gains": (svr.neuron_gains, _W, 2),
}


def _bad_variants(good, rank):
  nan, inf = good.copy(), good.copy()
  nan.flat[1], inf.flat[0] = np.nan, np.inf
  return {"integer dtype": (TypeError, good.astype(np.int32)),
          "NaN": (ValueError, nan), "Inf": (ValueError, inf),
          "wrong rank": (ValueError, good.reshape(-1) if rank > 1 else good[0]),
          "empty": (ValueError, good[:0])}


@pytest.mark.parametrize("bad", ["integer dtype", "NaN", "Inf", "wrong rank", "empty"])
@pytest.mark.parametrize("name", list(_SINGLE))
def test_array_entry_points_refuse_bad_inputs(name, bad):
  fn, good, rank = _SINGLE[name]
  jax.block_until_ready(fn(good))  # the good input works: only the defect differs
  err, x = _bad_variants(good, rank)[bad]
  with pytest.raises(err, match=r"must|need|holds|empty|rank|shape"):
    fn(x)


def test_moments_update_documents_nan_and_empty_batches():
  """`update` runs inside jitted scans, so it cannot raise on values:
  non-finite batches are reported by `moments.check`; an empty batch adds
  nothing."""
  st = moments.update(moments.init([5]), jnp.asarray(_W[:, :5]))
  nan = _W[:, :5].copy()
  nan[0, 0] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    moments.check(moments.update(st, jnp.asarray(nan)))
  same = moments.update(st, jnp.asarray(_W[:0, :5]))
  moments.check(same)
  np.testing.assert_array_equal(moments.covariance(same, 0), moments.covariance(st, 0))


def test_degenerate_inputs_give_documented_finite_answers():
  z = np.zeros_like(_X)
  assert float(align.align_features(z, _Y).r2) == 0.0
  assert float(similarity.linear_cka(z, _Y)) == 0.0
  np.testing.assert_array_equal(spectra.explained_variance(jnp.zeros(4)), np.zeros(4))


def test_moments_and_svr_refuse_bad_inputs():
  st = moments.init([5])
  with pytest.raises(ValueError):
    moments.update(st, jnp.ones((4, 6)))
  with pytest.raises(TypeError):
    moments.update(st, jnp.ones((4, 5), jnp.int32))
  with pytest.raises(ValueError, match="non-finite"):
    moments.check(moments.update(st, jnp.asarray(_NAN)))
  w = [np.ones((4, 5), np.float32), np.ones((3, 4), np.float32)]
  w[1][0, 0] = np.nan
  with pytest.raises(ValueError, match=r"weights\[1\] holds NaN"):
    svr.svr(w)
  with pytest.raises(ValueError, match="at least two layers"):
    svr.svr(w[:1])
  with pytest.raises(ValueError, match="NaN"):
    similarity.minibatch_cka(jnp.full((2, 8, 3), jnp.nan), jnp.ones((2, 8, 3)))
