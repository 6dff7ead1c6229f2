"""The precision policy (`rainbow_jax._precision`): every product a statistic
computes is float32-exact on every backend, and a model's forward pass
follows `Network.precision`.

Checked on CPU by tracing the public entry points and reading the
``precision`` of every ``dot_general`` / ``conv_general_dilated`` in the
jaxpr (sub-jaxprs of jit, scan, while, cond and custom derivatives
included): on a GPU an unset precision means TF32, ~1e-3 relative error.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rainbow_jax import align, consensus, moments, network, rainbow
from rainbow_jax import similarity, spectra, svr
from rainbow_jax.similarity import neighbors, rsa, shape_metrics

HIGHEST = lax.Precision.HIGHEST
PRODUCTS = ("dot_general", "conv_general_dilated")


def _subjaxprs(eqn):
  for v in eqn.params.values():
    for item in (v if isinstance(v, (tuple, list)) else (v,)):
      if hasattr(item, "eqns"):
        yield item
      elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
        yield item.jaxpr


def products(jaxpr):
  """(primitive name, precision) of every product in `jaxpr`, recursively."""
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in PRODUCTS:
      out.append((eqn.primitive.name, eqn.params.get("precision")))
    for sub in _subjaxprs(eqn):
      out.extend(products(sub))
  return out


def exact(precision):
  return precision is not None and all(p == HIGHEST for p in (
      precision if isinstance(precision, tuple) else (precision,)))


def assert_exact(fn, *args):
  found = products(jax.make_jaxpr(fn)(*args).jaxpr)
  assert found, "no product traced: the check would pass vacuously"
  bad = [f for f in found if not exact(f[1])]
  assert not bad, f"{len(bad)} of {len(found)} products not float32-exact: {bad[:5]}"


class _CNN(nn.Module):
  """A user's model with default names: conv, BatchNorm, dense."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.BatchNorm(use_running_average=True)(x)
    x = nn.relu(nn.Conv(6, (3, 3), strides=2)(x))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def cnn():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8, 8, 2)), jnp.float32)
  module = _CNN()
  variables = module.init(jax.random.key(0), x)
  return network.from_linen(module, variables, x), variables, x


_rng = np.random.default_rng(1)
X = jnp.asarray(_rng.normal(size=(64, 12)), jnp.float32)
Y = jnp.asarray(_rng.normal(size=(64, 9)), jnp.float32)
C = X.T @ X / 64

STATISTICS = {
    "similarity.cca": lambda: (lambda a, b: similarity.cca(a, b).coefficients, X, Y),
    "similarity.svcca": lambda: (lambda a, b: similarity.svcca(a, b, keep=5).mean, X, Y),
    "similarity.pwcca": lambda: (lambda a, b: similarity.pwcca(a, b).value, X, Y),
    "similarity.linear_cka": lambda: (similarity.linear_cka, X, Y),
    "similarity.linear_cka_debiased": lambda: (similarity.linear_cka_debiased, X, Y),
    "similarity.rbf_cka": lambda: (similarity.rbf_cka, X, Y),
    "similarity.procrustes_distance": lambda: (similarity.procrustes_distance, X, Y),
    "similarity.minibatch_cka": lambda: (similarity.minibatch_cka, X.reshape(4, 16, 12),
                                         Y.reshape(4, 16, 9)),
    "similarity.pairwise": lambda: (
        lambda a, b: similarity.pairwise([a, a[:, :5]], [b], measure="pwcca"), X, Y),
    "moments.update": lambda: (
        lambda a, b: moments.update(moments.init([12, 9], cross=[(0, 1)]), [a, b]), X, Y),
    "moments.covariance": lambda: (
        lambda a: moments.covariance(moments.update(moments.init([12]), [a]), 0,
                                     centered=True), X),
    "align.align_features": lambda: (lambda a, b: align.align_features(a, b).r2, X, Y),
    "align.weight_stability": lambda: (align.weight_stability, X[:9], Y.T[:, :12]),
    "spectra.clip_kernel": lambda: (lambda k, b: spectra.clip_kernel(k, b, 3), X.T, C),
    "svr.adjacency": lambda: (lambda a: svr.adjacency(*svr.spectra([a, a.T])), X),
    "shape_metrics.distance": lambda: (lambda a, b: shape_metrics.distance(a, b, alpha=0.5),
                                       X, Y),
    "neighbors.mutual_knn": lambda: (lambda a, b: neighbors.mutual_knn(a, b, 5), X, Y),
    "rsa.compare": lambda: (lambda a, b: rsa.compare(a, b, method="cosine_cov"), X, Y),
    "consensus.seed_cross_moments": lambda: (consensus.seed_cross_moments, jnp.stack([X, X + 1])),
    "rainbow.realign": lambda: (rainbow.realign, X.T, C),
}


@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_statistics_products_are_float32_exact(name):
  fn, *args = STATISTICS[name]()
  assert_exact(fn, *args)


def test_model_statistics_are_float32_exact_by_default(cnn):
  """Layer moments run the user's model (no precision of its own) and
  compute covariances: all float32-exact."""
  net, variables, x = cnn
  assert net.precision == "float32"
  dims = [a.shape[-1] for a in net.layer_inputs(variables, x)]
  assert_exact(lambda v, a: moments.update(moments.init(dims, cross=[(0, 1)]),
                                           net.layer_inputs(v, a)), variables, x)
  assert_exact(lambda v, a: net.layer_inputs(v, a)[-1], variables, x)
  assert_exact(lambda v, a: net.estimate_batch_stats(v, a), variables, x)
  # Rainbow's alignment pass: S = 2 generated networks against the reference.
  stack = jax.tree.map(lambda a: jnp.stack([a, a]), variables)
  for axis in ("map", "vmap"):
    assert_exact(lambda v, s, xb: rainbow.cross_moments(net, net, 2, v, s, xb, jnp.ones(
        xb.shape[:2]), stack_axis=axis), variables, stack, x[None])


def test_forward_precision_is_the_users_choice(cnn):
  net, variables, x = cnn
  fast = net.with_precision("tensorfloat32")
  found = products(jax.make_jaxpr(lambda v, a: fast.apply(v, a))(variables, x).jaxpr)
  assert found and all(p == (lax.Precision.HIGH,) * 2 for _, p in found), found
  # The same numbers on CPU (XLA:CPU computes float32 either way).
  np.testing.assert_allclose(fast.apply(variables, x), net.apply(variables, x), rtol=1e-6)
  with pytest.raises(ValueError, match="precision must be one of"):
    net.with_precision("fp8")


def test_float64_numpy_inputs_run_in_float64_without_the_global_flag():
  """x and a copy perturbed at 1e-9: float32 cannot see the difference,
  float64 does. The global flag stays off; results come back in float32."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(500, 6))
  y = x @ rng.normal(size=(6, 6))
  y[:, -1] = x[:, 0] + 1e-5 * rng.normal(size=500)  # one direction correlated at 1 − 5e-11
  out = similarity.cca(x, y)
  assert not jax.config.jax_enable_x64
  assert out.coefficients.dtype == jnp.float32
  qx, _ = np.linalg.qr(x - x.mean(0))
  qy, _ = np.linalg.qr(y - y.mean(0))
  want = np.linalg.svd(qx.T @ qy, compute_uv=False)
  np.testing.assert_allclose(out.coefficients, want, atol=1e-6)
