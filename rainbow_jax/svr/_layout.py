"""Weight layouts: Flax kernels ↔ the SVR's native (PyTorch) layout, and
the flattening of conv weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from rainbow_jax import _compile
from rainbow_jax import _precision
from rainbow_jax import _checks
from rainbow_jax import _linalg


Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


# --------------------------------------------------------------------------
# Layouts.


def from_flax(kernels: Sequence[Any]) -> list[Array]:
  """Flax kernels (Dense ``[in, out]``, Conv ``[K, K, C_in, C_out]``) in
  forward order → native layout.

  A Dense layer right after a Conv layer reads Flax's NHWC flatten (index
  ``position · C + c``); it is reordered to the native channels-first
  ``c · P + position``, so the SVR does not depend on the framework. Use
  ``net.kernels(variables)`` of a `rainbow_jax.network.Network` for any Flax model.
  """
  return _relayout(kernels, "kernels", native_out=True)


def to_flax(weights: Sequence[Any]) -> list[Array]:
  """Native-layout weights → Flax kernels; the inverse of `from_flax`
  (a dense layer after a conv layer gets Flax's NHWC flatten order back)."""
  return _relayout(weights, "weights", native_out=False)


def _relayout(arrays: Sequence[Any], name: str, *, native_out: bool) -> list[Array]:
  """Flax ↔ native layouts; a dense layer after a conv layer swaps its input
  order between Flax's ``position · C + c`` and native ``c · P + position``."""
  for i, a in enumerate(arrays):
    _checks.check_array(a, f"{name}[{i}]", (2, 4))
  return _relayout_all([jnp.asarray(a) for a in arrays], name, native_out)


@_compile.once(static_argnums=(1, 2))
def _relayout_all(arrays: list[Array], name: str, native_out: bool) -> list[Array]:
  """Every layer's new layout in one program (eagerly, one per layer)."""
  out, prev_c = [], None
  for i, a in enumerate(arrays):
    if a.ndim == 4:
      out.append(jnp.transpose(a, (3, 2, 0, 1) if native_out else (2, 3, 1, 0)))
      prev_c = a.shape[3] if native_out else a.shape[0]
      continue
    w = a.T if native_out else a  # native [out, in]
    if prev_c is not None and w.shape[1] != prev_c:
      w = _linalg.reorder_flatten(w, prev_c, channels_first=not native_out, name=f"{name}[{i}]")
    out.append(w if native_out else w.T)
    prev_c = None
  return out


def flatten(w: Array, *, co: bool = False) -> Array:
  """Native weight → the matrix whose SVD defines the spectral neurons.

  Dense ``[out, in]`` unchanged; conv ``[out, in, K, K]`` → ``[out, in·K²]``
  (SVR) or, with ``co=True``, ``[out·K², in]`` (co-SVR, section 5.2).
  """
  if w.ndim == 2:
    return w
  o, i, k1, k2 = w.shape
  if co:
    return jnp.transpose(w, (0, 2, 3, 1)).reshape(o * k1 * k2, i)
  return w.reshape(o, i * k1 * k2)
