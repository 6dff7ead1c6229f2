"""What every similarity measure shares: scale-safe helpers, input checks,
and the centred covariances of in-memory or streamed activations."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rainbow_jax import _checks
from rainbow_jax import _linalg
from rainbow_jax import _precision
from rainbow_jax import moments as _moments

Array = jax.Array

_HP = _precision.STATS  # float32-exact products on every backend
_mm = _linalg.mm


def _safe(m: Array) -> Array:
  return jnp.where(m > 0, m, 1.0)


def _ratio(num: Array, den: Array) -> Array:
  """num / den, 0 where den ≤ 0 (degenerate inputs give 0, never NaN)."""
  return jnp.where(den > 0, num / _safe(den), 0.0)


def _rms(x: Array) -> Array:
  """Root-mean-square entry, without under/overflow for any float32 scale."""
  top = _safe(jnp.max(jnp.abs(x)))
  return top * jnp.sqrt(jnp.mean(jnp.square(x / top)))


def _rms_scaled(x: Array) -> Array:
  """x divided by its root-mean-square entry (gram entries stay O(d))."""
  return x / _safe(_rms(x))

# --------------------------------------------------------------------------
# Input checks and covariances.


def _check_covs(sxx, syy, sxy):
  """Dtypes and shapes of a covariance triple ``[dx, dx], [dy, dy], [dx, dy]``."""
  for c, name in ((sxx, "sxx"), (syy, "syy"), (sxy, "sxy")):
    _checks.check_array(c, name, 2)
  dim = _checks.dims(x=sxx.shape[0], y=syy.shape[0])
  hint = "Pass Σxx [dx, dx], Σyy [dy, dy], Σxy [dx, dy]."
  for c, name, axes in ((sxx, "sxx", "xx"), (syy, "syy", "yy"), (sxy, "sxy", "xy")):
    _checks.check_shape(c, dim[axes], name, hint)


def _unit_covs(sxx: Array, syy: Array, sxy: Array) -> tuple[Array, Array, Array]:
  """The triple rescaled to Σxx/a, Σyy/b, Σxy/√(ab) with a, b the largest
  |entries| of Σxx, Σyy: x/√a and y/√b have the same similarity (every
  measure here ignores a scale on either side), and norms of the rescaled
  matrices neither underflow nor overflow in float32 at any input scale."""
  a = _safe(jnp.max(jnp.abs(sxx)))
  b = _safe(jnp.max(jnp.abs(syy)))
  return sxx / a, syy / b, sxy / jnp.sqrt(a) / jnp.sqrt(b)


def _folded(x: Array, y: Array, min_n: int = 2) -> tuple[Array, Array]:
  """Both inputs as ``[n, d]`` (positions folded into datapoints), checked."""
  xf, yf = _moments.fold_pair(x, y, noun="datapoints")
  if xf.shape[0] < min_n:
    raise ValueError(f"need at least {min_n} datapoints, got {xf.shape[0]}.")
  _checks.check_finite(xf, "x")
  _checks.check_finite(yf, "y")
  return xf, yf


def _centred_covs(x: Array, y: Array, ddof: int = 1):
  """(Σxx, Σyy, Σxy, μx, μy) of in-memory activations."""
  xf, yf = _folded(x, y)
  mx, my = jnp.mean(xf, axis=0), jnp.mean(yf, axis=0)
  xc, yc = xf - mx[None, :], yf - my[None, :]
  # One scale per side (every measure ignores it): products of activations
  # of any float32 magnitude neither underflow nor overflow.
  rx, ry = _safe(_rms(xc)), _safe(_rms(yc))
  xc, yc, mx, my = xc / rx, yc / ry, mx / rx, my / ry
  n = xf.shape[0] - ddof
  # Self terms by the block-triangle Gram (2/3 of the flops of xᵀx).
  gram = _linalg.gram
  return gram(xc) / n, gram(yc) / n, _mm(xc.T, yc) / n, mx, my


def _moment_covs(state: _moments.Moments, i: int, j: int):
  """Centred (Σii, Σjj, Σij, μi, μj) (ddof 0) of two maps of streamed `Moments`."""
  cov = lambda a, b=None: _moments.covariance(state, a, b, centered=True)
  return cov(i), cov(j), cov(i, j), _moments.mean(state, i), _moments.mean(state, j)


