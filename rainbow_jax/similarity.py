"""Representational similarity: CCA (google/svcca semantics) and linear CKA.

Everything here works from covariance matrices, so the same functions serve
in-memory activations (`cca`, `linear_cka`) and streamed statistics of any
dataset size (`cca_moments`, `linear_cka_moments` on `rainbow_jax.moments`).
Inputs of the native API are **datapoints × neurons** (``[n, d]``); the
google/svcca convention (neurons × datapoints) is the caller's transpose.

CCA follows `cca_core.get_cca_similarity` of google/svcca step by step:
the centred joint covariance; Σxx, Σyy divided by their largest absolute
entry and Σxy by the square root of both; neurons whose rescaled variance is
below `epsilon` removed; `epsilon` added to the kept diagonals; inverse
square roots from the eigendecomposition of the pseudo-inverse; coefficients
the singular values of Σxx^-½ Σxy Σyy^-½, descending; `mean` the mean of the
first i coefficients, i the first index with sum(s[:i]) / sum(s) ≥
`threshold` (all when there is none), and `sum` their sum.

Differences from the reference, all where it fails:
  * removal is a mask, so shapes stay static under `jit`: ``coefficients`` has
    ``min(d_x, d_y)`` entries, the last ``min(d_x, d_y) − num_coefficients``
    of them exactly 0 (the reference's array is shorter by that much);
  * the whitening is computed on the diagonally rescaled covariance (same
    coefficients, float32-accurate for badly scaled neurons), and eigenvalues
    that rounding made slightly negative are dropped like pinv's small ones
    (the reference takes their square root: NaN);
  * all neurons removed gives zero coefficients, as the reference's zero dict.

Numerics: float32 resolves directions whose variance is above roughly
1e-5 of the largest (the coefficients of weaker directions are float32
rounding noise); pass float64 arrays with x64 enabled for finer structure.

References:
  Raghu et al., "SVCCA", NeurIPS 2017. Kornblith et al., "Similarity of
  neural network representations revisited", ICML 2019.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rainbow_jax import _checks
from rainbow_jax import moments as _moments

Array = jax.Array
_HP = lax.Precision.HIGHEST


class CCAResult(NamedTuple):
  """Result of `cca`.

  Attributes:
    coefficients: ``[min(d_x, d_y)]`` canonical correlations, descending;
      entries past `num_coefficients` are 0.
    num_coefficients: ``[]`` int, ``min(#kept x neurons, #kept y neurons)``.
    mean: ``[]`` mean of the leading coefficients holding `threshold` of
      their sum (svcca's ``mean``); a similarity in [0, 1].
    sum: ``[]`` sum of all coefficients (svcca's ``sum``).
    x_keep: ``[d_x]`` bool, neurons of x kept (svcca's ``x_idxs``).
    y_keep: ``[d_y]`` bool, neurons of y kept.
  """

  coefficients: Array
  num_coefficients: Array
  mean: Array
  sum: Array
  x_keep: Array
  y_keep: Array


def _check_covs(sxx, syy, sxy):
  """Dtypes and shapes of a covariance triple ``[dx, dx], [dy, dy], [dx, dy]``."""
  for c, name in ((sxx, "sxx"), (syy, "syy"), (sxy, "sxy")):
    _checks.check_floating(c, name)
    if jnp.ndim(c) != 2:
      raise ValueError(f"{name} must be a matrix, got shape {jnp.shape(c)}.")
  dx, dy = sxx.shape[0], syy.shape[0]
  if sxx.shape != (dx, dx) or syy.shape != (dy, dy) or sxy.shape != (dx, dy):
    raise ValueError(f"need sxx [dx, dx], syy [dy, dy], sxy [dx, dy]; got {sxx.shape},"
                     f" {syy.shape}, {sxy.shape}.")


def _whitener(s: Array, keep: Array, epsilon: float) -> Array:
  """W with WᵀW = pinv(S_kept + εI) on the kept block, zero elsewhere.

  The reference's symmetric (S + εI)^-½ is one such W; any other gives the
  same canonical correlations. We whiten the unit-diagonal matrix D(S + εI)D,
  D = diag(S + εI)^-½, and use W = (D(S + εI)D)^-½ D: badly scaled neurons
  then cost no float32 accuracy (the symmetric root of a covariance whose
  variances span 10⁶ lost 6e-4 on the coefficients; this keeps 1e-5).
  """
  both = keep[:, None] & keep[None, :]
  a = jnp.where(both, s, 0.0) + jnp.diag(jnp.where(keep, epsilon, 0.0).astype(s.dtype))
  diag = jnp.diagonal(a)
  d = jnp.where(keep & (diag > 0), lax.rsqrt(jnp.where(diag > 0, diag, 1.0)), 0.0)
  c = a * d[:, None] * d[None, :]
  w, v = jnp.linalg.eigh(c)
  # Pseudo-inverse cut-off relative to the largest eigenvalue (as pinv).
  cutoff = 10.0 * s.shape[0] * jnp.finfo(s.dtype).eps * jnp.max(jnp.abs(w))
  root = jnp.where(w > cutoff, lax.rsqrt(jnp.where(w > cutoff, w, 1.0)), 0.0)
  return jnp.matmul(v * root[None, :], v.T, precision=_HP) * d[None, :]


def cca_from_covariance(sxx: Array, syy: Array, sxy: Array, *, epsilon: float = 0.0,
                        threshold: float = 0.98, x_mask: Array | None = None,
                        y_mask: Array | None = None) -> CCAResult:
  """CCA from centred covariances (any common normalisation).

  Args:
    sxx: ``[d_x, d_x]`` covariance of x.
    syy: ``[d_y, d_y]`` covariance of y.
    sxy: ``[d_x, d_y]`` cross-covariance.
    epsilon: neurons with rescaled variance below it are removed, and it is
      added to the kept diagonals (svcca's ``epsilon``).
    threshold: fraction of the coefficients' sum that `mean` covers, in (0, 1].
    x_mask, y_mask: optional ``[d]`` bool, neurons to consider at all (the
      others are treated as absent; used by `svcca`).

  Returns:
    `CCAResult`. Jittable and vmappable over leading axes of equal shape.
  """
  _check_covs(sxx, syy, sxy)
  if not 0.0 < threshold <= 1.0:
    raise ValueError(f"threshold must lie in (0, 1], got {threshold}.")
  if x_mask is not None:
    sxx = jnp.where(x_mask[:, None] & x_mask[None, :], sxx, 0.0)
    sxy = jnp.where(x_mask[:, None], sxy, 0.0)
  if y_mask is not None:
    syy = jnp.where(y_mask[:, None] & y_mask[None, :], syy, 0.0)
    sxy = jnp.where(y_mask[None, :], sxy, 0.0)
  xmax = jnp.max(jnp.abs(sxx))
  ymax = jnp.max(jnp.abs(syy))
  safe = lambda m: jnp.where(m > 0, m, 1.0)
  sxx = sxx / safe(xmax)
  syy = syy / safe(ymax)
  sxy = sxy / jnp.sqrt(safe(xmax) * safe(ymax))
  x_keep = (jnp.abs(jnp.diagonal(sxx)) >= epsilon) & (xmax > 0)
  y_keep = (jnp.abs(jnp.diagonal(syy)) >= epsilon) & (ymax > 0)
  if x_mask is not None:
    x_keep = x_keep & x_mask
  if y_mask is not None:
    y_keep = y_keep & y_mask
  wx = _whitener(sxx, x_keep, epsilon)
  wy = _whitener(syy, y_keep, epsilon)
  sxy = jnp.where(x_keep[:, None] & y_keep[None, :], sxy, 0.0)
  arr = jnp.matmul(wx, jnp.matmul(sxy, wy.T, precision=_HP), precision=_HP)
  s = jnp.abs(jnp.linalg.svd(arr, compute_uv=False))
  k = jnp.minimum(jnp.sum(x_keep), jnp.sum(y_keep))
  s = jnp.where(jnp.arange(s.shape[0]) < k, s, 0.0)
  total = jnp.sum(s)
  before = jnp.cumsum(s) - s  # sum(s[:i])
  hit = (before / jnp.where(total > 0, total, 1.0) >= threshold) & (jnp.arange(s.shape[0]) < k)
  idx = jnp.where(jnp.any(hit), jnp.argmax(hit), k)
  mean = jnp.where(idx > 0, jnp.sum(jnp.where(jnp.arange(s.shape[0]) < idx, s, 0.0))
                   / jnp.maximum(idx, 1), 0.0)
  return CCAResult(s, k, mean, total, x_keep, y_keep)


def _centred_covs(x: Array, y: Array):
  xf, yf = _moments.fold_pair(x, y, noun="datapoints")
  if xf.shape[0] < 2:
    raise ValueError(f"need at least 2 datapoints, got {xf.shape[0]}.")
  xc = xf - jnp.mean(xf, axis=0)[None, :]
  yc = yf - jnp.mean(yf, axis=0)[None, :]
  n = xf.shape[0] - 1
  return (jnp.matmul(xc.T, xc, precision=_HP) / n, jnp.matmul(yc.T, yc, precision=_HP) / n,
          jnp.matmul(xc.T, yc, precision=_HP) / n)


def cca(x: Array, y: Array, *, epsilon: float = 0.0, threshold: float = 0.98) -> CCAResult:
  """CCA of two in-memory representations (svcca semantics).

  Args:
    x: ``[n, d_x]`` (or ``[n, H, W, d_x]``, positions as datapoints).
    y: ``[n, d_y]`` on the same datapoints.
    epsilon, threshold: as in `cca_from_covariance`.

  Returns:
    `CCAResult`. With fewer datapoints than neurons the result is finite
    (the reference refuses such inputs) but CCA is then high by chance.

  Examples:
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (500, 4))
    >>> float(cca(x, x @ jax.random.normal(jax.random.key(1), (4, 4))).mean) > 0.999
    True
  """
  sxx, syy, sxy = _centred_covs(x, y)
  return cca_from_covariance(sxx, syy, sxy, epsilon=epsilon, threshold=threshold)


def _moment_covs(state: _moments.Moments, i: int, j: int):
  """Centred (Σii, Σjj, Σij) of two maps of streamed `Moments`."""
  cov = lambda a, b=None: _moments.covariance(state, a, b, centered=True)
  return cov(i), cov(j), cov(i, j)


def cca_moments(state: _moments.Moments, i: int, j: int, *, epsilon: float = 0.0,
                threshold: float = 0.98) -> CCAResult:
  """CCA of maps `i` and `j` from streamed `Moments` (their cross pair kept)."""
  return cca_from_covariance(*_moment_covs(state, i, j), epsilon=epsilon,
                             threshold=threshold)


def _top_directions(cov: Array, keep: int | None, variance: float):
  """Eigenvectors (columns, descending) and a mask of the kept leading ones."""
  w, v = jnp.linalg.eigh(cov)
  w, v = w[::-1], v[:, ::-1]
  if keep is not None:
    mask = jnp.arange(w.shape[0]) < keep
  else:
    frac = jnp.cumsum(jnp.maximum(w, 0)) / jnp.maximum(jnp.sum(jnp.maximum(w, 0)), 1e-30)
    count = jnp.sum(frac < variance) + 1  # fewest leading directions reaching it
    mask = jnp.arange(w.shape[0]) < count
  return v, mask


def svcca_from_covariance(sxx: Array, syy: Array, sxy: Array, *, keep: int | None = None,
                          variance: float = 0.99, epsilon: float = 0.0,
                          threshold: float = 0.98) -> CCAResult:
  """SVCCA: CCA between the leading principal directions of x and of y.

  Each side is rotated to its covariance eigenbasis and reduced to its top
  `keep` directions, or (``keep=None``) to the fewest leading directions that
  hold `variance` of its total variance; then `cca_from_covariance` with the
  rest masked out. This is the SVCCA tutorial's ``svd → keep k → cca`` done on
  covariances, so it streams.

  Args:
    sxx, syy, sxy: centred covariances as in `cca_from_covariance`.
    keep: number of directions per side (same for both), or None.
    variance: variance fraction to keep when ``keep`` is None, in (0, 1].
    epsilon, threshold: passed to `cca_from_covariance`.
  """
  if keep is not None and keep < 1:
    raise ValueError(f"keep must be a positive number of directions, got {keep}.")
  if not 0.0 < variance <= 1.0:
    raise ValueError(f"variance must lie in (0, 1], got {variance}.")
  vx, mx = _top_directions(sxx, keep, variance)
  vy, my = _top_directions(syy, keep, variance)
  rot = lambda a, b, c: jnp.matmul(a.T, jnp.matmul(b, c, precision=_HP), precision=_HP)
  return cca_from_covariance(rot(vx, sxx, vx), rot(vy, syy, vy), rot(vx, sxy, vy),
                             epsilon=epsilon, threshold=threshold, x_mask=mx, y_mask=my)


def svcca(x: Array, y: Array, *, keep: int | None = None, variance: float = 0.99,
          epsilon: float = 0.0, threshold: float = 0.98) -> CCAResult:
  """SVCCA of ``[n, d_x]`` and ``[n, d_y]`` representations (see
  `svcca_from_covariance`)."""
  return svcca_from_covariance(*_centred_covs(x, y), keep=keep, variance=variance,
                               epsilon=epsilon, threshold=threshold)


def linear_cka_from_covariance(sxx: Array, syy: Array, sxy: Array) -> Array:
  """Linear CKA ‖Σxy‖²_F / (‖Σxx‖_F ‖Σyy‖_F) from centred covariances.

  Equals the biased-HSIC linear CKA of Kornblith et al.; a similarity in
  [0, 1], 1 for a representation against itself. Zero-variance inputs give 0.
  """
  _check_covs(sxx, syy, sxy)
  num = jnp.sum(sxy * sxy)
  den = jnp.sqrt(jnp.sum(sxx * sxx)) * jnp.sqrt(jnp.sum(syy * syy))
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def linear_cka(x: Array, y: Array) -> Array:
  """Linear CKA of ``[n, d_x]`` and ``[n, d_y]`` representations.

  Examples:
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (100, 5))
    >>> round(float(linear_cka(x, 3 * x)), 5)
    1.0
  """
  return linear_cka_from_covariance(*_centred_covs(x, y))


def linear_cka_debiased(x: Array, y: Array) -> Array:
  """Linear CKA with the unbiased HSIC estimator (Song et al. 2012).

  Biased CKA of independent representations is far above 0 when datapoints
  are few relative to neurons; the debiased estimate is centred at 0 there.
  It can be slightly negative; it is never NaN (a non-positive self-HSIC,
  only possible for degenerate inputs, gives 0). Memory is O(n²).

  Args:
    x: ``[n, d_x]``, y: ``[n, d_y]``, n ≥ 4.

  Returns:
    ``[]`` debiased linear CKA, ≤ 1, 1 for a representation against itself.
  """
  xf, yf = _moments.fold_pair(x, y, noun="datapoints")
  n = xf.shape[0]
  if n < 4:
    raise ValueError(f"the unbiased HSIC estimator needs n ≥ 4 datapoints, got {n}.")

  def gram(a):
    k = jnp.matmul(a, a.T, precision=_HP)
    return k - jnp.diag(jnp.diagonal(k))

  def hsic(k, l):
    ones_k, ones_l = jnp.sum(k, axis=1), jnp.sum(l, axis=1)
    t = (jnp.sum(k * l) + jnp.sum(ones_k) * jnp.sum(ones_l) / ((n - 1) * (n - 2))
         - 2.0 * jnp.dot(ones_k, ones_l) / (n - 2))
    return t / (n * (n - 3))

  k, l = gram(xf), gram(yf)
  kk, ll = hsic(k, k), hsic(l, l)
  den = jnp.sqrt(jnp.maximum(kk, 0.0) * jnp.maximum(ll, 0.0))
  return jnp.where(den > 0, hsic(k, l) / jnp.where(den > 0, den, 1.0), 0.0)


def procrustes_distance_from_covariance(sxx: Array, syy: Array, sxy: Array) -> Array:
  """Orthogonal Procrustes distance between centred, unit-norm representations.

  ``min_Q ‖X̂ − ŶQ‖²_F = 2 − 2 ‖Σxy‖_* / √(tr Σxx · tr Σyy)`` (Williams et
  al. 2021), with X̂, Ŷ centred and scaled to unit Frobenius norm (widths may
  differ). A distance in [0, 2]: 0 exactly when one representation is a
  rotation (and scaling) of the other.
  """
  _check_covs(sxx, syy, sxy)
  nuc = jnp.sum(jnp.linalg.svd(sxy, compute_uv=False))
  den = jnp.sqrt(jnp.trace(sxx) * jnp.trace(syy))
  sim = jnp.where(den > 0, nuc / jnp.where(den > 0, den, 1.0), 0.0)
  return jnp.clip(2.0 - 2.0 * sim, 0.0, 2.0)


def procrustes_distance(x: Array, y: Array) -> Array:
  """Procrustes distance of ``[n, d_x]`` and ``[n, d_y]`` representations."""
  return procrustes_distance_from_covariance(*_centred_covs(x, y))


def linear_cka_moments(state: _moments.Moments, i: int, j: int) -> Array:
  """Linear CKA of maps `i` and `j` from streamed `Moments`."""
  return linear_cka_from_covariance(*_moment_covs(state, i, j))


__all__ = ["CCAResult", "cca", "cca_from_covariance", "cca_moments", "svcca",
           "svcca_from_covariance", "linear_cka", "linear_cka_debiased",
           "procrustes_distance", "procrustes_distance_from_covariance",
           "linear_cka_from_covariance", "linear_cka_moments"]
