"""Neurons the SVR lets one prune without data (section 5.2.2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rainbow_jax import _checks
from rainbow_jax.svr._layout import flatten

Array = jax.Array


@jax.jit
def _gains(m: Array) -> Array:
  u, s, _ = jnp.linalg.svd(m, full_matrices=False)
  rows = jnp.sqrt(jnp.sum(jnp.square(u * s[None, :]), axis=1))
  return rows / jnp.where(s[0] > 0, s[0], 1.0)


def neuron_gains(weight: Array) -> Array:
  """``[out]`` each neuron's row of ``U diag(s)`` in the layer's SVR, in units
  of the top singular value: ``g_j = ‖U_j diag(s)‖ / s_0 = ‖W_j‖ / ‖W‖₂``
  (Meller & Berkouk, section 5.2.2, Figure 8).

  The paper maps each neuron to the block of spectral neurons that holds its
  row of U, and prunes those mapped to blocks of negligible singular values:
  "their output will be zeroed by negligible singular values". Weighting
  the row by the singular values makes that assignment scale-aware: a
  neuron with ``g_j < rtol`` lives in the near-kernel ``{s_m < rtol · s_0}``
  up to ``rtol``, and zeroing it changes the layer's output by at most
  ``rtol · s_0 · ‖x‖`` for any input x (n such neurons: ``√n · rtol · s_0 ·
  ‖x‖``), with no data needed to find them.
  (The unweighted row mass flags half the neurons of a layer with more
  outputs than inputs: 70 of 128 in a digits MLP with 38 dead neurons.)

  Prune a neuron by zeroing its weights and, behind a BatchNorm, its scale
  (it then outputs the BatchNorm's offset). Fold a BatchNorm's
  ``scale / sqrt(var + eps)`` into `weight` first, or the normalisation
  hides a neuron's small weights.

  Args:
    weight: native ``[out, in]`` or ``[out, in, K, K]`` (see `from_flax`).

  Returns:
    ``[out]`` gains in [0, 1] (float32 SVD; 0 for every neuron of a zero
    layer).
  """
  _checks.check_array(weight, "weight", (2, 4), "([out, in] or [out, in, K, K])")
  return _gains(flatten(jnp.asarray(weight)).astype(jnp.float32))
