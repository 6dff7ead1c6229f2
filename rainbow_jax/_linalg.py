"""Linear algebra shared by the statistics and the analyses (float32-exact
products on every backend, `rainbow_jax._precision.STATS`), so that no
analysis imports another for a helper."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import _checks
from rainbow_jax import _precision

Array = jax.Array


def mm(a: Array, b: Array) -> Array:
  """``a @ b`` at the statistics' precision."""
  return jnp.matmul(a, b, precision=_precision.STATS)


def gram(x: Array) -> Array:
  """``xᵀx`` computing only the upper block triangle (symmetry).

  XLA has no symmetric rank-k kernel; splitting the columns into three
  blocks and forming each block row ``x_iᵀ [x_i … x_k]`` once costs 2/3 of
  the full product's flops and measured 1.2–1.8× faster than ``x.T @ x``
  for 256 ≤ d ≤ 2048 on a 2-core CPU (batch 1 024). The lower triangle is the
  mirror of the upper one (off-diagonal blocks are exactly symmetric).
  """
  d = x.shape[1]
  if d < 192:
    return mm(x.T, x)
  e = [0, d // 3, 2 * d // 3, d]
  rows = [mm(x[:, e[i]:e[i + 1]].T, x[:, e[i]:]) for i in range(3)]  # blocks (i, j ≥ i)
  full = []
  for i in range(3):
    left = [rows[j][:, e[i] - e[j]:e[i + 1] - e[j]].T for j in range(i)]
    full.append(jnp.concatenate(left + [rows[i]], axis=1))
  return jnp.concatenate(full, axis=0)


def weight_factor(matrices: Sequence[Array]) -> Array:
  """F ``[R, fan_in]`` with FᵀF = the second moment of the rows of the
  stacked ``[n_k, fan_in]`` weight matrices (one reference: WᵀW/n; several
  seeds in the reference's input basis: their averaged covariance)."""
  if not matrices:
    raise ValueError("matrices is empty: pass at least one [n, fan_in] weight matrix.")
  for i, m in enumerate(matrices):
    _checks.check_array(m, f"matrices[{i}]", 2, "[n_out, fan_in]")
  for i, m in enumerate(matrices[1:], 1):
    _checks.check_shape(m, (None, np.shape(matrices[0])[1]), f"matrices[{i}]",
                        "Every matrix needs the same fan-in (one input basis).")
  return _factor([jnp.asarray(m) for m in matrices])


@jax.jit
def _factor(matrices: list) -> Array:
  w = jnp.concatenate(matrices, axis=0)
  _, s, vh = jnp.linalg.svd(w, full_matrices=False)
  return s[:, None] * vh / jnp.sqrt(jnp.asarray(w.shape[0], w.dtype))


def reorder_flatten(w, channels: int, *, channels_first: bool, name: str = "w"):
  """A dense layer's ``[out, in]`` matrix after a conv layer of `channels`
  channels, its input order switched between the two flattens of a conv
  map: channels-first ``c·P + position`` (PyTorch's NCHW flatten, the SVR's
  native layout) and channels-last ``position·C + c`` (Flax's NHWC).
  ``channels_first=True``: `w` reads channels-first and the result reads
  channels-last; False: the reverse. numpy or JAX arrays."""
  if w.shape[1] % channels:
    raise ValueError(f"{name} has {w.shape[1]} inputs, not a multiple of the previous"
                     f" conv's {channels} channels.")
  p = w.shape[1] // channels
  src = (w.shape[0], channels, p) if channels_first else (w.shape[0], p, channels)
  return w.reshape(src).transpose(0, 2, 1).reshape(w.shape[0], -1)
