"""Which edges are significant: exact Beta and asymptotic χ² null laws,
p-values, Benjamini–Hochberg."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from rainbow_jax import _precision


Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


# --------------------------------------------------------------------------
# Significance.


def null_law(channels: int, positions: int = 1, *, exact: bool = True):
  """scipy.stats distribution of an edge weight under the null hypothesis.

  ``exact``: Beta(P/2, (c − 1)P/2), exact for uniformly random unit
  representations. Otherwise the paper's asymptotic χ²(P)/(cP).
  """
  c, p = int(channels), int(positions)
  if c < 2 or p < 1:
    raise ValueError(f"need channels ≥ 2 and positions ≥ 1, got {c}, {p}.")
  if exact:
    return scipy.stats.beta(p / 2, (c - 1) * p / 2)
  return scipy.stats.chi2(p, scale=1.0 / (c * p))


def _beta_sf(a: Array, al: float, be: float) -> Array:
  """P(Beta(α, β) > a) = 1 − I_a(α, β) = I_{1−a}(β, α); the first form is
  accurate for small a, the second in the upper tail. One betainc call with
  per-entry parameters evaluates whichever applies."""
  a = jnp.clip(a, 0.0, 1.0)
  low = a < al / (al + be)
  r = jax.scipy.special.betainc(jnp.where(low, al, be), jnp.where(low, be, al),
                                jnp.where(low, a, 1.0 - a))
  return jnp.where(low, 1.0 - r, r)


@functools.partial(jax.jit, static_argnames=("channels", "positions", "exact"))
def pvalues(a: Array, channels: int, positions: int = 1, *, exact: bool = True) -> Array:
  """Survival function of `null_law` at each edge weight (jittable)."""
  c, p = channels, positions
  if exact:
    return _beta_sf(a, p / 2, (c - 1) * p / 2)
  return jax.scipy.special.gammaincc(p / 2, c * p * jnp.clip(a, 0.0, 1.0) / 2)


def _chi2_draws(seed: Sequence[int], channels: int, taps: int, positions: int,
                draws: int) -> tuple[np.ndarray, np.ndarray]:
  """``([draws, r], [draws])``: the X_j ~ χ²(P) and R ~ χ²((c − r)P) of a
  two-sided edge's null law (module docstring), r = min(c, Q). Drawn by
  numpy on the host (data-independent, like the Beta laws' critical values)."""
  c, r, p = channels, min(channels, taps), positions
  gen = np.random.default_rng(list(seed))
  x = 2.0 * gen.standard_gamma(p / 2, (draws, r))
  rest = 2.0 * gen.standard_gamma((c - r) * p / 2, draws) if c > r else np.zeros(draws)
  return x.astype(np.float32), rest.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("channels",))
def _sampled_pvalues(a: Array, u: Array, x: Array, rest: Array, *, channels: int) -> Array:
  """Monte Carlo p-values of a two-sided edge (module docstring): ``a``
  ``[M', M]``, ``u`` ``[c · Q, M]``, the χ² draws of `_chi2_draws` (the
  same draws serve every column)."""
  c = channels
  uu = jnp.moveaxis(u.reshape(c, u.shape[0] // c, u.shape[1]), -1, 0)  # [M, c, Q]
  lam2 = jnp.linalg.svd(uu, compute_uv=False) ** 2  # [M, r]
  x, rest = x.astype(a.dtype), rest.astype(a.dtype)
  null = jnp.sort(jnp.matmul(lam2, x.T, precision=_HP)
                  / (jnp.sum(x, axis=1) + rest)[None, :], axis=1)  # [M, draws]
  below = jax.vmap(jnp.searchsorted, in_axes=(0, 1), out_axes=1)(null, a)  # [M', M]
  draws = x.shape[0]
  return (1.0 + draws - below) / (1.0 + draws)


def benjamini_hochberg(pvals: Sequence[Array], q: float) -> list[Array]:
  """Benjamini–Hochberg at false-discovery rate `q` across all edges of all
  layers; returns a boolean mask per array."""
  if not 0 < q < 1:
    raise ValueError(f"q must lie in (0, 1), got {q}.")
  flat = jnp.concatenate([jnp.ravel(p) for p in pvals])
  m = flat.shape[0]
  order = jnp.sort(flat)
  ok = order <= q * jnp.arange(1, m + 1) / m
  cut = jnp.where(jnp.any(ok), jnp.max(jnp.where(ok, order, -1.0)), -1.0)
  return [p <= cut for p in pvals]
