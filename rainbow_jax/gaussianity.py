"""Is a trained layer Gaussian? Its neurons against N(0, C) of their own C.

The rainbow model says the neurons of a trained layer (the rows w_i of its
weight matrix, in the basis of its input) are i.i.d. samples of a
distribution π; the Gaussian rainbow model says π = N(0, C) with C = WᵀW/n.
`layer_test` checks the second claim on one layer: it projects the n rows onto P
unit directions u (random, or C's leading eigenvectors), standardises each
projection by its root mean square (the model's √(uᵀCu), zero mean), and
measures its distance from N(0, 1):

* the Kolmogorov–Smirnov distance sup_t |F_n(t) − Φ(t)|, and
* the excess kurtosis E[t⁴] − 3 (0 for a Gaussian; > 0 heavy tails, < 0
  light ones such as the uniform initialisers), averaged with its sign (a
  layer's directions tend to err the same way) and tested two-sided.

The null distribution of their averages over the P directions comes from
`num_null` layers drawn exactly from N(0, C) with the same n, d and
directions (a parametric bootstrap, vmapped), so the p-values account for
the estimated C and for n; a layer that is exactly Gaussian gets uniform
p-values (tested at the nominal rate).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import ndtr
from jaxtyping import Float

from rainbow_jax import _precision
from rainbow_jax import _checks
from rainbow_jax import _linalg

Array = jax.Array
_HI = _precision.STATS  # float32-exact products on every backend


class Gaussianity(NamedTuple):
  """Result of `layer_test`.

  Attributes:
    ks: ``[P]`` KS distance of each standardised projection from N(0, 1).
    kurtosis: ``[P]`` excess kurtosis of each projection.
    ks_mean: ``[]`` mean of `ks` (the KS statistic).
    kurtosis_mean: ``[]`` mean of `kurtosis` (the kurtosis statistic; its
      sign says heavy (> 0) or light (< 0) tails).
    null_ks_mean: ``[num_null]`` the KS statistic of exact Gaussian layers.
    null_kurtosis_mean: ``[num_null]`` their kurtosis statistic.
    pvalue_ks: ``[]`` (1 + #null ≥ observed) / (1 + num_null).
    pvalue_kurtosis: ``[]`` the same for |kurtosis statistic| (two-sided).
  """

  ks: Array
  kurtosis: Array
  ks_mean: Array
  kurtosis_mean: Array
  null_ks_mean: Array
  null_kurtosis_mean: Array
  pvalue_ks: Array
  pvalue_kurtosis: Array

  def zscore_ks(self) -> Array:
    """How many null standard deviations the KS statistic lies above the null mean."""
    return _z(self.ks_mean, self.null_ks_mean)

  def zscore_kurtosis(self) -> Array:
    """The kurtosis statistic in null standard deviations from the null mean
    (signed: > 0 heavier tails than Gaussian)."""
    return _z(self.kurtosis_mean, self.null_kurtosis_mean)


def _z(value, null):
  sd = jnp.std(null)
  return (value - jnp.mean(null)) / jnp.where(sd > 0, sd, 1.0)


def _statistics(rows: Array, directions: Array) -> tuple[Array, Array]:
  """Per direction: KS distance from N(0, 1) and excess kurtosis of the
  projections of the rows, standardised by their root mean square."""
  z = jnp.matmul(rows, directions, precision=_HI)  # [n, P]
  rms = jnp.sqrt(jnp.mean(z * z, axis=0))
  t = z / jnp.where(rms > 0, rms, 1.0)[None, :]
  n = t.shape[0]
  cdf = ndtr(jnp.sort(t, axis=0))
  i = jnp.arange(1, n + 1, dtype=t.dtype)[:, None]
  ks = jnp.max(jnp.maximum(i / n - cdf, cdf - (i - 1) / n), axis=0)
  kurt = jnp.mean(t ** 4, axis=0) - 3.0
  return ks, kurt


def _directions(key, factor, num, kind):
  """``[d, P]`` unit directions: uniform on the sphere, or C's leading
  eigenvectors (the rows of the factor F = S Vᵀ/√n, normalised)."""
  if kind == "random":
    u = jax.random.normal(key, (factor.shape[1], num), factor.dtype)
  else:
    u = factor[:num].T
  norm = jnp.linalg.norm(u, axis=0, keepdims=True)
  return u / jnp.where(norm > 0, norm, 1.0)


@functools.partial(jax.jit, static_argnames=("num_directions", "num_null", "directions"))
def _test(key, rows, num_directions, num_null, directions):
  n = rows.shape[0]
  k_dir, k_null = jax.random.split(key)
  # N(0, C), C = WᵀW/n: draws G F with G white and FᵀF = C.
  factor = _linalg.weight_factor([rows])
  u = _directions(k_dir, factor, num_directions, directions)
  ks, kurt = _statistics(rows, u)

  def null(k):
    g = jax.random.normal(k, (n, factor.shape[0]), rows.dtype)
    nks, nkurt = _statistics(jnp.matmul(g, factor, precision=_HI), u)
    return jnp.mean(nks), jnp.mean(nkurt)

  null_ks, null_kurt = lax.map(null, jax.random.split(k_null, num_null), batch_size=32)
  ks_mean, kurt_mean = jnp.mean(ks), jnp.mean(kurt)
  p = lambda obs, nul: (1.0 + jnp.sum(nul >= obs)) / (1.0 + num_null)
  return Gaussianity(ks, kurt, ks_mean, kurt_mean, null_ks, null_kurt,
                     p(ks_mean, null_ks), p(jnp.abs(kurt_mean), jnp.abs(null_kurt)))


def layer_test(key: Array, rows: Float[Array, "n d"], *, num_directions: int = 32,
         num_null: int = 199, directions: str = "random") -> Gaussianity:
  """Tests the rows of a layer against the Gaussian N(0, WᵀW/n).

  Args:
    key: PRNG key (directions and null draws).
    rows: ``[n, d]`` the layer's neurons as rows: a PyTorch weight, the
      transpose of a Flax Dense kernel, or a conv kernel reshaped to
      ``[C_out, k·k·C_in]`` (``rainbow_jax.spectra.weight_matrix(kernel).T``);
      with a bias, its ``(weights, bias)`` rows
      (``rainbow_jax.rainbow.neuron_matrix``).
    num_directions: P, projections tested (at most d for
      ``directions="principal"``).
    num_null: exact Gaussian layers drawn for the null distribution.
    directions: ``"random"`` (uniform on the sphere) or ``"principal"`` (C's
      leading eigenvectors, where training put its structure).

  Returns:
    `Gaussianity`: the statistics, their null draws and p-values.

  Raises:
    ValueError: fewer than 8 rows, NaN/Inf, too many principal directions,
      an unknown ``directions``.
  """
  _checks.check_array(rows, "rows", 2, "[n, d] (neurons as rows)")
  n, d = rows.shape
  if n < 8:
    raise ValueError(f"rows has {n} neurons; a distribution test needs at least 8.")
  if directions not in ("random", "principal"):
    raise ValueError(f"directions must be 'random' or 'principal', got {directions!r}.")
  if directions == "principal" and num_directions > min(n, d):
    raise ValueError(f"num_directions={num_directions} principal directions, but rows"
                     f" {rows.shape} has at most {min(n, d)}.")
  if num_directions < 1 or num_null < 1:
    raise ValueError("num_directions and num_null must be positive.")
  return _test(key, rows, int(num_directions), int(num_null), directions)


__all__ = ["Gaussianity", "layer_test"]
