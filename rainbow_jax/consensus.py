"""K trained seeds aligned to one mean network, and their averaged covariances.

The rainbow model says the seeds of a training run are random-feature
discretisations of one deterministic network: once each seed's layer is
rotated into a common basis, the activations and the weight covariances of
the seeds agree up to finite-width fluctuations. `align_to_mean` finds that
basis for one layer by generalised Procrustes analysis: starting from seed
0's features as the mean M, it repeats

    A_k = UVᵀ of E[M φ_kᵀ]   for every seed k (vmapped),
    M   = (1/K) Σ_k A_k φ_k,

until the alignments stop moving, then rotates everything so that A_0 = I
(the mean is expressed in seed 0's basis; a global rotation is free). Each
step decreases Σ_k E‖A_k φ_k − M‖². Only the K × K cross second moments
C_jk = E[φ_j φ_kᵀ] are needed — E[M φ_kᵀ] = (1/K) Σ_j A_j C_jk — so it runs
on `seed_cross_moments` of in-memory features or on streamed `rainbow_jax.moments`
alike, in O(K² d²) memory.

`mean_covariance` averages the seeds' aligned second moments, C̄ =
(1/K) Σ_k A_k C_kk A_kᵀ, and `covariance_distances` measures each seed's
relative distance to it, ‖A_k C_kk A_kᵀ − C̄‖_F / ‖C̄‖_F — the quantity the
rainbow paper expects to shrink with the width.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Float

from rainbow_jax import _precision
from rainbow_jax import _checks
from rainbow_jax import align as _align

Array = jax.Array
_HI = _precision.STATS  # float32-exact products on every backend


class MeanAlignment(NamedTuple):
  """Result of `align_to_mean`.

  Attributes:
    alignments: ``[K, d, d]`` A_k with A_k φ_k ≈ M; ``alignments[0]`` is I.
    r2: ``[K]`` each seed's alignment r² to the mean,
      tr Σ(E[M φ_kᵀ]) / √(E‖φ_k‖² E‖M‖²) (as `rainbow_jax.align.align`).
    mean_second_moment: ``[d, d]`` E[M Mᵀ] of the mean features.
    iterations: ``[]`` int, alternating steps taken.
    change: ``[]`` largest ‖A_k − A_k(previous)‖_F / √d at the last step.
  """

  alignments: Array
  r2: Array
  mean_second_moment: Array
  iterations: Array
  change: Array


def _check_cross(cross):
  _checks.check_array(cross, "cross", 4, "[K, K, d, d] cross second moments E[φ_j φ_kᵀ]")
  k1, k2, d1, d2 = cross.shape
  if k1 != k2 or d1 != d2:
    raise ValueError(f"cross must be [K, K, d, d] (every seed against every seed, one width);"
                     f" got shape {cross.shape}.")
  if k1 < 2:
    raise ValueError(f"align_to_mean needs at least 2 seeds, got {k1}.")


def seed_cross_moments(features: Float[Array, "K n d"]) -> Float[Array, "K K d d"]:
  """``[K, K, d, d]`` uncentred cross second moments E[φ_j φ_kᵀ] of K seeds'
  features on the same ``n`` inputs (``[K, n, d]``, or ``[K, n, H, W, d]``
  with positions counted as datapoints)."""
  _checks.check_array(features, "features", None, "[K, n, d] features of K seeds",
                      min_rank=3)
  f = features.reshape(features.shape[0], -1, features.shape[-1])
  return jnp.einsum("jnd,kne->jkde", f, f, precision=_HI) / f.shape[1]


def _mean_cross(a: Array, cross: Array) -> Array:
  """E[M φ_kᵀ] = (1/K) Σ_j A_j C_jk for every k: ``[K, d, d]``."""
  return jnp.einsum("jab,jkbc->kac", a, cross, precision=_HI) / a.shape[0]


def _mean_moment(a: Array, cross: Array) -> Array:
  """E[M Mᵀ] = (1/K²) Σ_jk A_j C_jk A_kᵀ."""
  return jnp.einsum("jab,jkbc,kdc->ad", a, cross, a, precision=_HI) / a.shape[0] ** 2


def align_to_mean(cross: Float[Array, "K K d d"], *, max_iterations: int = 100,
                  tolerance: float = 1e-6) -> MeanAlignment:
  """Aligns K seeds' features of one layer to their mean (see the module doc).

  Args:
    cross: ``[K, K, d, d]`` C_jk = E[φ_j φ_kᵀ] (`seed_cross_moments`, or
      `rainbow_jax.moments.covariance` of every seed pair); any common
      positive scale.
    max_iterations: at most this many alternating steps.
    tolerance: stop when no alignment moves by more than this
      (‖ΔA_k‖_F / √d).

  Returns:
    `MeanAlignment`. Jittable (``max_iterations`` and ``tolerance`` static).

  Raises:
    ValueError: a shape other than ``[K, K, d, d]``, fewer than 2 seeds,
      NaN/Inf.
  """
  _check_cross(cross)
  return _align_to_mean(cross, int(max_iterations), float(tolerance))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _align_to_mean(cross, max_iterations, tolerance):
  d = cross.shape[-1]
  eye = jnp.eye(d, dtype=cross.dtype)
  # Start from seed 0 as the mean: A_k = procrustes(C_0k).
  a0 = _align.procrustes(cross[0])

  def body(carry):
    a, _, i = carry
    new = _align.procrustes(_mean_cross(a, cross))
    change = jnp.max(jnp.linalg.norm(new - a, axis=(1, 2))) / jnp.sqrt(d)
    return new, change, i + 1

  def cond(carry):
    _, change, i = carry
    return (change > tolerance) & (i < max_iterations)

  a, change, iters = lax.while_loop(
      cond, body, (a0, jnp.asarray(jnp.inf, cross.dtype), jnp.asarray(0)))
  a = jnp.einsum("ba,kbc->kac", a[0], a, precision=_HI)  # gauge: A_0 = I
  a = a.at[0].set(eye)
  mean_cross = _mean_cross(a, cross)
  mm = _mean_moment(a, cross)
  traces = jnp.trace(_diagonal_blocks(cross), axis1=1, axis2=2)
  r2 = jax.vmap(lambda c, t: _align.align(c, t, jnp.trace(mm)).r2)(mean_cross, traces)
  return MeanAlignment(a, r2, mm, iters, change)


def mean_covariance(cross: Float[Array, "K K d d"],
                    alignments: Float[Array, "K d d"]) -> Float[Array, "d d"]:
  """``[d, d]`` C̄ = (1/K) Σ_k A_k C_kk A_kᵀ: the seeds' second moments of
  these features, averaged in the mean's basis."""
  return jnp.mean(aligned_covariances(_diagonal_blocks(cross), alignments), axis=0)


def _diagonal_blocks(cross):
  """``[K, d, d]`` each seed's own second moment C_kk."""
  k = cross.shape[0]
  return cross[jnp.arange(k), jnp.arange(k)]


def aligned_covariances(covs: Float[Array, "K d d"],
                        alignments: Float[Array, "K d d"]) -> Float[Array, "K d d"]:
  """``[K, d, d]`` A_k C_k A_kᵀ: each seed's matrix in the common basis.

  For the features' second moments C_k = E[φ_k φ_kᵀ]. For the weights of the
  next layer, which read φ_k: W_k φ_k = (W_k A_kᵀ)(A_k φ_k), so their rows
  in the mean's basis are W_k A_kᵀ, and C_k = W_kᵀ W_k / n (Flax kernel
  ``K``: ``K Kᵀ / n``) gives those rows' covariance.
  """
  _checks.check_array(covs, "covs", 3, "[K, d, d]")
  _checks.check_array(alignments, "alignments", 3, "[K, d, d]")
  if covs.shape != alignments.shape:
    raise ValueError(f"covs {covs.shape} and alignments {alignments.shape} must both be"
                     " [K, d, d].")
  return jnp.einsum("kab,kbc,kdc->kad", alignments, covs, alignments, precision=_HI)


def covariance_distances(covs: Float[Array, "K d d"],
                         alignments: Float[Array, "K d d"]) -> Float[Array, "K"]:
  """``[K]`` ‖A_k C_k A_kᵀ − C̄‖_F / ‖C̄‖_F, C̄ the mean of the aligned C_k."""
  al = aligned_covariances(covs, alignments)
  mean = jnp.mean(al, axis=0)
  den = jnp.linalg.norm(mean)
  return jnp.linalg.norm(al - mean[None], axis=(1, 2)) / jnp.where(den > 0, den, 1.0)


__all__ = ["MeanAlignment", "align_to_mean", "aligned_covariances", "covariance_distances",
           "seed_cross_moments", "mean_covariance"]
