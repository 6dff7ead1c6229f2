"""Every public entry point × bad input → a clear error (or a documented
finite answer), never a silent NaN or wrong number."""

import jax.numpy as jnp
import numpy as np
import pytest

from rainbow_jax import align, moments, similarity, spectra, svr

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
