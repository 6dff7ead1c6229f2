"""The adjacency between the spectral neurons of consecutive layers, and
the effective filters of conv layers."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import _precision
from rainbow_jax.svr._spectral import Spectral

Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


# --------------------------------------------------------------------------
# Adjacency.


def _positions(prev: Spectral, nxt: Spectral, channels: int | None = None
               ) -> tuple[int, int, int]:
  """(c, Q, P): shared channels, taps of the previous layer's output
  representations (1 but in the co-SVR), positions of the next layer's
  input representations."""
  out, rows = prev.u.shape[0], nxt.v.shape[0]
  c = out if channels is None else int(channels)
  if c < 1 or out % c:
    raise ValueError(f"channels={c} does not divide the previous layer's {out} output rows.")
  if rows % c:
    raise ValueError(f"layer with {rows} inputs cannot follow one with {c} outputs"
                     " (need inputs = outputs · positions).")
  return c, out // c, rows // c


@functools.partial(jax.jit, static_argnames=("channels",))
def _filters(u: Array, v: Array, channels: int | None = None) -> Array:
  """``[M', M, P, Q]``: Σ_k v_{k,p,n} u_{k,q,m}."""
  c = u.shape[0] if channels is None else channels
  uu = u.reshape(c, u.shape[0] // c, u.shape[1])  # [c, Q, M]
  vv = v.reshape(c, v.shape[0] // c, v.shape[1])  # [c, P, M']
  return jnp.einsum("cqm,cpn->nmpq", uu, vv, precision=_HP)


@functools.partial(jax.jit, static_argnames=("channels",))
def _adjacency(u: Array, v: Array, channels: int | None = None) -> Array:
  t = _filters(u, v, channels)
  return jnp.sum(t * t, axis=(2, 3))


def adjacency(prev: Spectral, nxt: Spectral, *, channels: int | None = None) -> Array:
  """``[M_next, M_prev]`` edge weights a_{n,m} = Σ_p (Σ_k u_{k,m} V_{k,p,n})².

  Dense → dense: |V_nextᵀ U_prev|². Conv → conv: the squared Frobenius norm
  of the effective K×K filter between the spectral neurons. Conv → dense:
  the positions of the flattened map play the role of the kernel taps.
  Every entry lies in [0, 1]; each column of a square orthogonal case sums to 1.

  ``channels``: the shared dimension c, needed only when the previous
  layer's output representations carry taps too (co-SVR spectra of a conv
  layer, ``u`` of ``[c · K², M]``); default ``prev.u.shape[0]``.
  """
  c, _, _ = _positions(prev, nxt, channels)
  return _adjacency(prev.u, nxt.v, c)


def effective_filters(prev: Spectral, nxt: Spectral, *, channels: int | None = None,
                      kernel: Sequence[int] | None = None) -> Array:
  """The effective filters A_{n,m} between spectral neurons (section 4.2).

  With no nonlinearity, the next layer's spectral activation n is
  z_n = Σ_m A_{n,m} ⋆ y_m: the previous layer's spectral activations y_m,
  each convolved with A_{n,m} = Σ_k u_{k,m} V_{k,n}. Its squared Frobenius
  norm is the edge weight (`adjacency`).

  Args:
    prev, nxt: `Spectral` of consecutive layers (both from ``spectra`` or
      both from ``spectra(..., co=True)``).
    channels: the shared dimension, as in `adjacency` (needed for co-SVR
      spectra of a conv layer).
    kernel: reshape the taps to this spatial shape, e.g. ``(K, K)``
      (conv → conv), or ``(H, W)`` (conv → dense: the flattened map).

  Returns:
    ``[M_next, M_prev, P]`` (P taps; ``[M_next, M_prev, *kernel]`` with
    `kernel`). The taps belong to the next layer in the SVR, to the previous
    one in the co-SVR; where both carry taps (a co-SVR conv → dense edge) P
    is their product, the next layer's positions major.
  """
  c, _, _ = _positions(prev, nxt, channels)
  f = _filters(prev.u, nxt.v, c)
  f = f.reshape(f.shape[0], f.shape[1], -1)
  if kernel is None:
    return f
  kernel = tuple(int(k) for k in kernel)
  if int(np.prod(kernel)) != f.shape[2]:
    raise ValueError(f"kernel={kernel} does not hold the edge's {f.shape[2]} taps.")
  return f.reshape(*f.shape[:2], *kernel)


def svr_to_co_svr(prev: Spectral, nxt_co: Spectral) -> Array:
  """``[M_next, M_prev]`` signed matrix Ṽ_nextᵀ U_prev between the SVR of a
  layer and the co-SVR of the next (section 5.2, Figure 7 shows its
  absolute value). The next layer's co-SVR input representations live in
  its input channels, so this needs a conv/dense → conv/dense edge without
  a flatten in between."""
  if nxt_co.v.shape[0] != prev.u.shape[0]:
    raise ValueError(f"co-SVR inputs {nxt_co.v.shape[0]} ≠ previous outputs {prev.u.shape[0]}.")
  return jnp.matmul(nxt_co.v.T, prev.u, precision=_HP)
