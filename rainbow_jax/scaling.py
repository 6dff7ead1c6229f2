"""Power laws in the width: y ≈ c · xᵃ fitted in log–log space.

The rainbow paper's theorem says aligned activations of two finite-width
networks converge to the infinite-width network polynomially in the widths;
`fit_power_law` measures the rate from a sweep, e.g. 1 − r² between seeds
against the width, with a standard error for the exponent.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from rainbow_jax import _checks

Array = jax.Array


class PowerLaw(NamedTuple):
  """Result of `fit_power_law`: y ≈ prefactor · x^exponent.

  Attributes:
    exponent: ``[]`` the slope a of log y against log x.
    exponent_se: ``[]`` its standard error (from the residuals, or from
      `y_err` when given).
    prefactor: ``[]`` c.
    residual_sd: ``[]`` root mean square residual in log y (0 for an exact
      power law).
  """

  exponent: Array
  exponent_se: Array
  prefactor: Array
  residual_sd: Array

  def __call__(self, x: Array) -> Array:
    """The fitted law at `x`."""
    return self.prefactor * jnp.asarray(x) ** self.exponent


def fit_power_law(x: Float[Array, "m"], y: Float[Array, "m"],
              y_err: Float[Array, "m"] | None = None) -> PowerLaw:
  """Least-squares fit of log y = log c + a log x.

  Args:
    x: ``[m]`` positive abscissae (widths), at least 3 distinct values.
    y: ``[m]`` positive values.
    y_err: optional ``[m]`` standard errors of y; points are then weighted by
      (y / y_err)² (the variance of log y is (y_err / y)²) and the exponent's
      error follows from them; without, from the residuals (m − 2 degrees
      of freedom).

  Returns:
    `PowerLaw`.

  Raises:
    ValueError: shapes differ, fewer than 3 points, non-positive or
      non-finite values.

  Examples:
    >>> import jax.numpy as jnp
    >>> fit = fit_power_law(jnp.array([1., 2., 4., 8.]), 3 * jnp.array([1., 2., 4., 8.]) ** -0.5)
    >>> round(float(fit.exponent), 4), round(float(fit.prefactor), 4)
    (-0.5, 3.0)
  """
  names = ("x", "y") if y_err is None else ("x", "y", "y_err")
  arrays = (x, y) if y_err is None else (x, y, y_err)
  for a, name in zip(arrays, names):
    _checks.check_array(a, name, 1, "[m] (one value per width)")
  shapes = {jnp.shape(a) for a in arrays}
  if len(shapes) != 1:
    raise ValueError(f"{', '.join(names)} must have the same length, got"
                     f" {[jnp.shape(a) for a in arrays]}.")
  if jnp.shape(x)[0] < 3:
    raise ValueError(f"a power law with an error bar needs at least 3 points, got"
                     f" {jnp.shape(x)[0]}.")
  for a, name in zip(arrays, names):
    if not np.all(np.asarray(a) > 0):
      raise ValueError(f"{name} must be positive for a fit in log–log space.")
  return _fit(jnp.asarray(x), jnp.asarray(y), None if y_err is None else jnp.asarray(y_err))


@jax.jit
def _fit(x, y, y_err):
  lx, ly = jnp.log(x), jnp.log(y)
  w = jnp.ones_like(lx) if y_err is None else (y / y_err) ** 2
  sw = jnp.sum(w)
  mx, my = jnp.sum(w * lx) / sw, jnp.sum(w * ly) / sw
  sxx = jnp.sum(w * (lx - mx) ** 2)
  slope = jnp.sum(w * (lx - mx) * (ly - my)) / sxx
  intercept = my - slope * mx
  res = ly - intercept - slope * lx
  m = lx.shape[0]
  if y_err is None:
    se = jnp.sqrt(jnp.sum(res ** 2) / (m - 2) / sxx)
  else:
    se = jnp.sqrt(1.0 / sxx)
  return PowerLaw(slope, se, jnp.exp(intercept), jnp.sqrt(jnp.mean(res ** 2)))


__all__ = ["PowerLaw", "fit_power_law"]
