"""The orthogonal Procrustes distance between two representations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Float

from rainbow_jax import _precision
from rainbow_jax.similarity._base import (_check_covs, _centred_covs, _ratio, _unit_covs)

Array = jax.Array


# --------------------------------------------------------------------------
# Procrustes.


def procrustes_distance_from_covariance(sxx: Float[Array, "dx dx"], syy: Float[Array, "dy dy"],
                                        sxy: Float[Array, "dx dy"]) -> Float[Array, ""]:
  """Orthogonal Procrustes distance between centred, unit-norm representations.

  ``min_Q ‖X̂ − ŶQ‖²_F = 2 − 2 ‖Σxy‖_* / √(tr Σxx · tr Σyy)`` (Williams et
  al. 2021), with X̂, Ŷ centred and scaled to unit Frobenius norm (widths may
  differ). A distance in [0, 2]: 0 exactly when one representation is a
  rotation (and scaling) of the other.
  """
  _check_covs(sxx, syy, sxy)
  sxx, syy, sxy = _unit_covs(sxx, syy, sxy)
  nuc = jnp.sum(jnp.linalg.svd(sxy, compute_uv=False))
  sim = _ratio(nuc, jnp.sqrt(jnp.trace(sxx) * jnp.trace(syy)))
  return jnp.clip(2.0 - 2.0 * sim, 0.0, 2.0)


@_precision.follow_inputs
def procrustes_distance(x: Float[Array, "n dx"], y: Float[Array, "n dy"]) -> Float[Array, ""]:
  """Procrustes distance of ``[n, d_x]`` and ``[n, d_y]`` representations."""
  sxx, syy, sxy, _, _ = _centred_covs(x, y)
  return procrustes_distance_from_covariance(sxx, syy, sxy)
