"""Representational similarity: CCA, SVCCA, PWCCA (google/svcca semantics),
CKA (linear, RBF, debiased, minibatch) and the Procrustes distance.

The CCA family and linear CKA work from covariance matrices, so the same
functions serve in-memory activations (`cca`, `pwcca`, `linear_cka`, …) and
streamed statistics of any dataset size (`cca_moments`, `pwcca_moments`,
`linear_cka_moments` on `rainbow_jax.moments`: O(d²) memory, conv layers with
positions as datapoints). `pairwise` computes the whole layer × layer matrix
of a measure between two models in one jitted call, and `null_baseline`
the score of unrelated data of the same shapes. Inputs of this native API are
**datapoints × neurons** (``[n, d]``); `rainbow_jax.compat.svcca` takes the
google/svcca convention (neurons × datapoints) and returns its dict.

Similarities lie in [0, 1] (1: a representation against itself); the
debiased CKA estimators lie in [-1, 1] and are centred at 0 for unrelated
data. Distances (`procrustes_distance`, `cca_distance`) are 0 for identical
representations.

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
  * `cca` whitens the diagonally rescaled covariance (same coefficients,
    float32-accurate for badly scaled neurons), and eigenvalues that rounding
    made slightly negative are dropped like pinv's small ones (the reference
    takes their square root: NaN);
  * all neurons removed gives zero coefficients, as the reference's zero dict;
  * fewer datapoints than neurons is allowed (finite results; the reference
    refuses it) — but CCA is then high by chance: compare with
    `null_baseline`.

PWCCA (`compute_pwcca` of google/svcca, Morcos et al. 2018) is documented at
`pwcca_from_covariance`, with its three differences from the reference.

Numerics: float32 resolves directions whose variance is above roughly
1e-5 of the largest (the coefficients of weaker directions are float32
rounding noise); pass float64 arrays with x64 enabled for finer structure.

References:
  Raghu et al., "SVCCA", NeurIPS 2017. Morcos et al., "Insights on
  representational similarity in neural networks with canonical correlation",
  NeurIPS 2018. Kornblith et al., "Similarity of neural network
  representations revisited", ICML 2019. Nguyen et al., "Do wide and deep
  networks learn the same things?", ICLR 2021. Williams et al., "Generalized
  shape metrics on neural representations", NeurIPS 2021.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Bool, Float

from rainbow_jax import _precision
from rainbow_jax import _checks
from rainbow_jax import moments as _moments

Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


def _mm(a: Array, b: Array) -> Array:
  return jnp.matmul(a, b, precision=_HP)


def resolution_floor(evals: Array, d: int) -> Array:
  """The smallest eigenvalue of a ``[d, d]`` covariance that its dtype resolves.

  ``2·√d·eps·λ_max`` (eps of the dtype: 1.2e-7 in float32). A covariance
  accumulated in floating point carries an error of about eps times its
  largest entry in each entry (≤ λ_max; the error of compensated
  accumulation, and of one float32 product over 10⁴ datapoints, measured
  here); a symmetric error matrix of such entries has a spectral norm of
  about 2·√d of them, which also covers the eigendecomposition's own error
  (~3·eps·λ_max measured for 256 ≤ d ≤ 2 048). Eigenvalues above the floor are
  directions of the data; below it they are rounding. In float32 at d = 2 048
  the floor is 1.1e-5·λ_max: unit-variance directions beside a variance of
  10⁴ are resolved (the pseudo-inverse's usual 10·d·eps·λ_max, 2.4e-3·λ_max,
  threw them away). Coefficients of a direction of eigenvalue λ are accurate
  to about 3·eps·λ_max / λ.
  """
  return 2.0 * jnp.sqrt(float(d)) * jnp.finfo(evals.dtype).eps * jnp.max(jnp.abs(evals))


def _safe(m: Array) -> Array:
  return jnp.where(m > 0, m, 1.0)


def _ratio(num: Array, den: Array) -> Array:
  """num / den, 0 where den ≤ 0 (degenerate inputs give 0, never NaN)."""
  return jnp.where(den > 0, num / _safe(den), 0.0)


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
  gram = _moments._gram
  return gram(xc) / n, gram(yc) / n, _mm(xc.T, yc) / n, mx, my


def _moment_covs(state: _moments.Moments, i: int, j: int):
  """Centred (Σii, Σjj, Σij, μi, μj) (ddof 0) of two maps of streamed `Moments`."""
  cov = lambda a, b=None: _moments.covariance(state, a, b, centered=True)
  return cov(i), cov(j), cov(i, j), _moments.mean(state, i), _moments.mean(state, j)


# --------------------------------------------------------------------------
# CCA: one side's whitening, then a pair's singular values.


class _Side(NamedTuple):
  """One representation's part of CCA (depends on its own covariance only)."""
  keep: Array    # [d] bool, neurons kept (svcca's x_idxs)
  scale: Array   # [] largest |entry| of the covariance (svcca's xmax)
  half: Array    # [d, d] H = Λ^-½ Vᵀ D, the whitener in the eigenbasis:
                 # W = V H (`_white`) has WᵀW = pinv(S_kept + εI), S rescaled
  evals: Array   # [d] eigenvalues of the matrix W was computed from
  evecs: Array   # [d, d] its eigenvectors (columns, ascending)
  rank: Array    # [] int, eigenvalues above the pseudo-inverse cut-off


def _side(s: Array, mask: Array | None, epsilon: float, symmetric: bool) -> _Side:
  """Rescale, remove small neurons, and whiten one covariance.

  ``symmetric=True`` gives the reference's W = (S + εI)^-½ (needed where the
  canonical directions themselves are used: PWCCA, compat). Otherwise W is
  (D(S + εI)D)^-½ D, D = diag(S + εI)^-½: the same canonical correlations,
  but badly scaled neurons cost no float32 accuracy (the symmetric root of a
  covariance whose variances span 10⁶ lost 6e-4 on the coefficients; this
  keeps 1e-5).
  """
  d = s.shape[0]
  if mask is not None:
    s = jnp.where(mask[:, None] & mask[None, :], s, 0.0)
  smax = jnp.max(jnp.abs(s))
  s = s / _safe(smax)
  keep = (jnp.abs(jnp.diagonal(s)) >= epsilon) & (smax > 0)
  if mask is not None:
    keep = keep & mask
  a = (jnp.where(keep[:, None] & keep[None, :], s, 0.0)
       + jnp.diag(jnp.where(keep, epsilon, 0.0).astype(s.dtype)))
  if symmetric:
    dg = keep.astype(s.dtype)
  else:
    diag = jnp.diagonal(a)
    dg = jnp.where(keep & (diag > 0), lax.rsqrt(jnp.where(diag > 0, diag, 1.0)), 0.0)
  w, v = jnp.linalg.eigh(a * dg[:, None] * dg[None, :])
  # A direction is resolved when the data's own variance along it (its
  # eigenvalue less epsilon's share, a Rayleigh quotient) clears the floor:
  # epsilon must not lift rounding noise into the whitening.
  data = w - epsilon * _mm(jnp.square(v).T, jnp.square(dg))
  ok = data > resolution_floor(w, d)
  root = jnp.where(ok, lax.rsqrt(jnp.where(ok, w, 1.0)), 0.0)
  return _Side(keep, smax, root[:, None] * v.T * dg[None, :], w, v, jnp.sum(ok))


def _white(side: _Side) -> Array:
  """The side's ``[d, d]`` whitener W = V H (symmetric when `_side` was)."""
  return _mm(side.evecs, side.half)


def _whitened_cross(sx: _Side, sy: _Side, sxy: Array, rotate: bool = True) -> Array:
  """Wx Σxy Wyᵀ on the kept neurons (rescaled as svcca does): Σxx^-½ Σxy
  Σyy^-½ for symmetric sides. ``rotate=False`` gives Hx Σxy Hyᵀ = Vxᵀ (·) Vy,
  the same singular values for two products fewer."""
  sxy = sxy / jnp.sqrt(_safe(sx.scale) * _safe(sy.scale))
  sxy = jnp.where(sx.keep[:, None] & sy.keep[None, :], sxy, 0.0)
  c = _mm(sx.half, _mm(sxy, sy.half.T))
  return _mm(sx.evecs, _mm(c, sy.evecs.T)) if rotate else c


def _summary(s: Array, k: Array, threshold: float) -> tuple[Array, Array, Array]:
  """(coefficients in [0, 1] with entries ≥ k zeroed, svcca's mean, sum).

  Singular values of an exactly whitened cross-covariance are cosines, at
  most 1; a direction of covariance eigenvalue λ is whitened to about
  3·eps·λ_max/λ (a few percent just above `resolution_floor`), so rounding
  can push one past 1. Those are clipped to 1 (PWCCA(x, x) of Fashion-MNIST
  pixels in float32 was 1.003 unclipped; 0.99985 clipped)."""
  idx = jnp.arange(s.shape[0])
  s = jnp.where(idx < k, jnp.clip(s, 0.0, 1.0), 0.0)
  total = jnp.sum(s)
  before = jnp.cumsum(s) - s  # sum(s[:i])
  hit = (before / _safe(total) >= threshold) & (idx < k)
  first = jnp.where(jnp.any(hit), jnp.argmax(hit), k)
  mean = _ratio(jnp.sum(jnp.where(idx < first, s, 0.0)), first.astype(s.dtype))
  return s, mean, total


def _check_threshold(threshold: float) -> None:
  if not 0.0 < threshold <= 1.0:
    raise ValueError(f"threshold must lie in (0, 1], got {threshold}.")


class CCAResult(NamedTuple):
  """Result of `cca`.

  Attributes:
    coefficients: ``[min(d_x, d_y)]`` canonical correlations in [0, 1],
      descending; entries past `num_coefficients` are 0. A correlation of
      directions with covariance eigenvalue λ is accurate to about
      3·eps·λ_max/λ of the dtype (float32: 1e-5 at λ = 0.03·λ_max, a few
      percent just above `resolution_floor`).
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


def _cca_pair(sx: _Side, sy: _Side, sxy: Array, threshold: float) -> CCAResult:
  s = jnp.abs(jnp.linalg.svd(_whitened_cross(sx, sy, sxy, rotate=False), compute_uv=False))
  k = jnp.minimum(jnp.sum(sx.keep), jnp.sum(sy.keep))
  s, mean, total = _summary(s, k, threshold)
  return CCAResult(s, k, mean, total, sx.keep, sy.keep)


def cca_from_covariance(sxx: Float[Array, "dx dx"], syy: Float[Array, "dy dy"],
                        sxy: Float[Array, "dx dy"], *, epsilon: float = 0.0,
                        threshold: float = 0.98, x_mask: Bool[Array, "dx"] | None = None,
                        y_mask: Bool[Array, "dy"] | None = None) -> CCAResult:
  """CCA from centred covariances (any common normalisation).

  Args:
    sxx: ``[d_x, d_x]`` covariance of x.
    syy: ``[d_y, d_y]`` covariance of y.
    sxy: ``[d_x, d_y]`` cross-covariance.
    epsilon: neurons with rescaled variance below it are removed, and it is
      added to the kept diagonals (svcca's ``epsilon``).
    threshold: fraction of the coefficients' sum that `mean` covers, in (0, 1].
    x_mask, y_mask: optional ``[d]`` bool, neurons to consider at all (the
      others are treated as absent; used by `svcca` and `pairwise`).

  Returns:
    `CCAResult`. Jittable and vmappable over leading axes of equal shape.
  """
  _check_covs(sxx, syy, sxy)
  _check_threshold(threshold)
  return _cca_pair(_side(sxx, x_mask, epsilon, False), _side(syy, y_mask, epsilon, False),
                   sxy, threshold)


@_precision.follow_inputs
def cca(x: Float[Array, "n dx"], y: Float[Array, "n dy"], *, epsilon: float = 0.0,
        threshold: float = 0.98) -> CCAResult:
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
  sxx, syy, sxy, _, _ = _centred_covs(x, y)
  return cca_from_covariance(sxx, syy, sxy, epsilon=epsilon, threshold=threshold)


def cca_moments(state: _moments.Moments, i: int, j: int, *, epsilon: float = 0.0,
                threshold: float = 0.98) -> CCAResult:
  """CCA of maps `i` and `j` from streamed `Moments` (their cross pair kept)."""
  sxx, syy, sxy, _, _ = _moment_covs(state, i, j)
  return cca_from_covariance(sxx, syy, sxy, epsilon=epsilon, threshold=threshold)


@_precision.follow_inputs
def cca_distance(x: Float[Array, "n dx"], y: Float[Array, "n dy"], *,
                 epsilon: float = 0.0) -> Float[Array, ""]:
  """Mean CCA distance ``1 − mean(all coefficients)``, in [0, 1].

  0 when y is an invertible linear map of x. Unlike svcca's thresholded
  `mean`, every one of the ``num_coefficients`` coefficients counts.
  """
  out = cca(x, y, epsilon=epsilon)
  mean = _ratio(out.sum, out.num_coefficients.astype(out.sum.dtype))
  return jnp.clip(1.0 - mean, 0.0, 1.0)


# --------------------------------------------------------------------------
# SVCCA.


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


def _check_svcca(keep, variance):
  if keep is not None and keep < 1:
    raise ValueError(f"keep must be a positive number of directions, got {keep}.")
  if not 0.0 < variance <= 1.0:
    raise ValueError(f"variance must lie in (0, 1], got {variance}.")


def svcca_from_covariance(sxx: Float[Array, "dx dx"], syy: Float[Array, "dy dy"],
                          sxy: Float[Array, "dx dy"], *, keep: int | None = None,
                          variance: float = 0.99, epsilon: float = 0.0,
                          threshold: float = 0.98) -> CCAResult:
  """SVCCA: CCA between the leading principal directions of x and of y.

  Each side is rotated to its covariance eigenbasis and reduced to its top
  `keep` directions, or (``keep=None``) to the fewest leading directions that
  hold `variance` of its total variance; then `cca_from_covariance` with the
  rest masked out. This is the SVCCA tutorial's ``svd → keep k → cca`` done on
  covariances, so it streams. ``x_keep``/``y_keep`` of the result refer to
  principal directions (descending), not neurons.

  Args:
    sxx, syy, sxy: centred covariances as in `cca_from_covariance`.
    keep: number of directions per side (same for both), or None.
    variance: variance fraction to keep when ``keep`` is None, in (0, 1].
    epsilon, threshold: passed to `cca_from_covariance`.
  """
  _check_svcca(keep, variance)
  vx, mx = _top_directions(sxx, keep, variance)
  vy, my = _top_directions(syy, keep, variance)
  rot = lambda a, b, c: _mm(a.T, _mm(b, c))
  return cca_from_covariance(rot(vx, sxx, vx), rot(vy, syy, vy), rot(vx, sxy, vy),
                             epsilon=epsilon, threshold=threshold, x_mask=mx, y_mask=my)


@_precision.follow_inputs
def svcca(x: Float[Array, "n dx"], y: Float[Array, "n dy"], *, keep: int | None = None,
          variance: float = 0.99, epsilon: float = 0.0, threshold: float = 0.98) -> CCAResult:
  """SVCCA of ``[n, d_x]`` and ``[n, d_y]`` representations (see
  `svcca_from_covariance`)."""
  sxx, syy, sxy, _, _ = _centred_covs(x, y)
  return svcca_from_covariance(sxx, syy, sxy, keep=keep, variance=variance,
                               epsilon=epsilon, threshold=threshold)


# --------------------------------------------------------------------------
# PWCCA.


class PWCCAResult(NamedTuple):
  """Result of `pwcca`.

  Attributes:
    value: ``[]`` projection-weighted mean of the canonical correlations, a
      similarity in [0, 1] (svcca's ``compute_pwcca(...)[0]``).
    weights: ``[min(d_x, d_y)]`` projection weights, summing to 1; entries
      past `num_coefficients` are 0.
    coefficients: ``[min(d_x, d_y)]`` canonical correlations, descending.
    num_coefficients: ``[]`` int, as in `CCAResult`.
    num_resolved: ``[]`` int, directions weighted: `num_coefficients`, or
      fewer where a covariance is numerically singular at its dtype (its
      eigenvalues below `resolution_floor`, 2·√d·eps·λ_max, cannot be
      whitened; in float32 that is 7e-6·λ_max at d = 784). Those directions
      get weight 0 rather than a false correlation of 0 (the reference, in
      float64, resolves them; `compat.svcca` follows it).
    x_side: ``[]`` bool, True when the directions of x were weighted (x kept
      no more neurons than y), else those of y.
  """

  value: Array
  weights: Array
  coefficients: Array
  num_coefficients: Array
  num_resolved: Array
  x_side: Array


SIGNS = ("svd", "largest_positive")
"""PWCCA's conventions for the sign of each canonical direction (see `pwcca`)."""


def _oriented(dirs: Array, signs: str) -> Array:
  """The directions as the SVD returned them (``"svd"``, the reference), or
  each column flipped so that its largest-magnitude entry is positive."""
  if signs == "svd":
    return dirs
  idx = jnp.argmax(jnp.abs(dirs), axis=0)
  sign = jnp.sign(dirs[idx, jnp.arange(dirs.shape[1])])
  return dirs * jnp.where(sign == 0, 1.0, sign)[None, :]


def _check_signs(signs: str) -> None:
  if signs not in SIGNS:
    raise ValueError(f"signs must be one of {SIGNS}, got {signs!r}.")


def _projection_weights(side: _Side, dirs: Array, mean: Array, epsilon: float,
                        k: Array) -> Array:
  """svcca's PWCCA weights of the first `k` canonical directions of one side.

  The reference forms, over datapoints, dirns = dirsᵀ(A − μ) + μ (A the kept
  neurons' activations; it adds neuron j's mean to direction j), takes
  P = qr(dirnsᵀ) and weights_j ∝ Σ_neurons |P_jᵀ a|. With Σ = E Λ Eᵀ the
  covariance (ddof 0) of the kept neurons, both A and dirns live in the span
  of the orthonormal columns [(A − μ)ᵀE Λ^-½ / √n, 1/√n], where their
  coordinates are N = [Λ^½ Eᵀ; μᵀ] and [Λ^½ Eᵀ dirs; μ_dirᵀ]. So P's
  coordinates are Q from the QR of the second, and Pᵀ Aᵀ ∝ Qᵀ N: the weights
  need the covariance and means only, never the datapoints.
  """
  d, m = dirs.shape
  lam = jnp.maximum(side.evals - epsilon, 0.0) * side.scale  # covariance eigenvalues
  lam = jnp.where(lam > resolution_floor(lam, d), lam, 0.0)
  half = jnp.sqrt(lam)[:, None] * side.evecs.T  # [d, d] Λ^½ Eᵀ
  keep = side.keep
  order = jnp.argsort(~keep, stable=True)  # kept neurons first, in order
  mean_dir = jnp.where(jnp.arange(d) < jnp.sum(keep), mean[order], 0.0)[:m]
  cols = jnp.arange(m) < k
  coords = jnp.concatenate([_mm(half, dirs), mean_dir[None, :]], axis=0)
  coords = jnp.where(cols[None, :], coords, 0.0)
  data = jnp.where(keep[None, :], jnp.concatenate([half, mean[None, :]], axis=0), 0.0)
  q, r = jnp.linalg.qr(coords)
  proj = jnp.sum(jnp.abs(_mm(q.T, data)), axis=1)
  rd = jnp.abs(jnp.diagonal(r))
  # Directions in the span of the earlier ones add no new axis: weight 0
  # (the reference weights an arbitrary orthonormal completion there).
  ok = cols & (rd > resolution_floor(rd, m))
  w = jnp.where(ok, proj, 0.0)
  return w / _safe(jnp.sum(w))


def _pwcca_pair(sx: _Side, sy: _Side, sxy: Array, mean_x: Array, mean_y: Array,
                epsilon: float, signs: str = "svd") -> PWCCAResult:
  u, s, vh = jnp.linalg.svd(_whitened_cross(sx, sy, sxy), full_matrices=False)
  kx, ky = jnp.sum(sx.keep), jnp.sum(sy.keep)
  k = jnp.minimum(kx, ky)
  s, _, _ = _summary(jnp.abs(s), k, 1.0)
  # Past the smaller numerical rank the whitened cross is 0 by the cut-off,
  # not by measurement: those coefficients and directions are unresolved and
  # weighing them as 0 correlations would pull the score down.
  resolved = jnp.minimum(k, jnp.minimum(sx.rank, sy.rank))
  wx = _projection_weights(sx, _oriented(u, signs), mean_x, epsilon, resolved)
  wy = _projection_weights(sy, _oriented(vh.T, signs), mean_y, epsilon, resolved)
  x_side = kx <= ky
  w = jnp.where(x_side, wx, wy)
  return PWCCAResult(jnp.sum(w * s), w, s, k, resolved, x_side)


def pwcca_from_covariance(sxx: Float[Array, "dx dx"], syy: Float[Array, "dy dy"],
                          sxy: Float[Array, "dx dy"], mean_x: Float[Array, "dx"],
                          mean_y: Float[Array, "dy"], *, epsilon: float = 0.0,
                          signs: str = "svd", x_mask: Bool[Array, "dx"] | None = None,
                          y_mask: Bool[Array, "dy"] | None = None) -> PWCCAResult:
  """Projection-weighted CCA (Morcos et al. 2018) from covariances and means.

  google/svcca's `compute_pwcca`, the number papers report: CCA as in
  `cca_from_covariance` (with the reference's symmetric whitening), then on
  the side with fewer kept neurons the directions dirns = coef (A − μ) + μ
  over its kept neurons, P from the QR of dirnsᵀ, weights ∝
  Σ_neurons |Pᵀ a| (uncentred activations), normalised, and the result
  Σ weights · coefficients. Computed from Σ and μ alone (see
  `_projection_weights`), so it streams.

  Signs. The reference adds neuron j's mean to direction j, so whenever the
  means are nonzero its value depends on the sign LAPACK's SVD gives each
  canonical direction. ``signs="svd"`` (default) keeps the signs of this
  SVD, as the reference does (on CPU, LAPACK's ``gesdd``, as numpy: the
  same signs on the reference's outputs in ``tests/fixtures``; another
  LAPACK build or an accelerator's solver may flip a direction, and then the
  reference's own number changes too). ``signs="largest_positive"`` flips
  each direction so that its largest-magnitude coefficient is positive: a
  value that depends on the data alone, not on the solver; for centred
  activations both agree.

  Other differences from the reference:
    * on the y side the reference reads x's activations with y's masks (a
      defect: for different widths it raises; for equal widths with neurons
      removed by `epsilon` it weighs x's neurons); here y's own are used;
    * with neurons removed by `epsilon` on the weighted side the reference
      fails on a shape mismatch; here the kept neurons and their means are
      used;
    * directions whose whitening the dtype cannot resolve (`num_resolved`,
      see `resolution_floor`; none for directions above ~1e-5 of the
      largest variance in float32) are weighted 0 instead of counted as
      correlations of 0.

  Args:
    sxx, syy, sxy: centred covariances normalised by n (ddof 0), shapes
      ``[d_x, d_x], [d_y, d_y], [d_x, d_y]``.
    mean_x, mean_y: ``[d_x]``, ``[d_y]`` means of the neurons.
    epsilon: as in `cca_from_covariance`.
    signs: one of `SIGNS`, ``"svd"`` or ``"largest_positive"`` (above).
    x_mask, y_mask: optional ``[d]`` bool, neurons to consider at all.

  Returns:
    `PWCCAResult`. Jittable and vmappable.
  """
  _check_covs(sxx, syy, sxy)
  _check_signs(signs)
  if jnp.shape(mean_x) != sxx.shape[:1] or jnp.shape(mean_y) != syy.shape[:1]:
    raise ValueError(f"means must be [d_x] and [d_y]; got {jnp.shape(mean_x)} and"
                     f" {jnp.shape(mean_y)} for widths {sxx.shape[0]}, {syy.shape[0]}.")
  return _pwcca_pair(_side(sxx, x_mask, epsilon, True), _side(syy, y_mask, epsilon, True),
                     sxy, mean_x, mean_y, epsilon, signs)


@_precision.follow_inputs
def pwcca(x: Float[Array, "n dx"], y: Float[Array, "n dy"], *, epsilon: float = 0.0,
          signs: str = "svd") -> PWCCAResult:
  """PWCCA of ``[n, d_x]`` and ``[n, d_y]`` representations: google/svcca's
  ``compute_pwcca`` on ``x.T, y.T`` (see `pwcca_from_covariance`).

  Examples:
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (400, 6))
    >>> round(float(pwcca(x, 2 * x + 1).value), 4)
    1.0
  """
  sxx, syy, sxy, mx, my = _centred_covs(x, y, ddof=0)
  return pwcca_from_covariance(sxx, syy, sxy, mx, my, epsilon=epsilon, signs=signs)


def pwcca_moments(state: _moments.Moments, i: int, j: int, *, epsilon: float = 0.0,
                  signs: str = "svd") -> PWCCAResult:
  """PWCCA of maps `i` and `j` from streamed `Moments` (their cross pair kept)."""
  return pwcca_from_covariance(*_moment_covs(state, i, j), epsilon=epsilon, signs=signs)


# --------------------------------------------------------------------------
# CKA.


def linear_cka_from_covariance(sxx: Float[Array, "dx dx"], syy: Float[Array, "dy dy"],
                               sxy: Float[Array, "dx dy"]) -> Float[Array, ""]:
  """Linear CKA ‖Σxy‖²_F / (‖Σxx‖_F ‖Σyy‖_F) from centred covariances.

  Equals the biased-HSIC linear CKA of Kornblith et al.; a similarity in
  [0, 1], 1 for a representation against itself. Zero-variance inputs give 0.
  """
  _check_covs(sxx, syy, sxy)
  sxx, syy, sxy = _unit_covs(sxx, syy, sxy)
  den = jnp.sqrt(jnp.sum(sxx * sxx)) * jnp.sqrt(jnp.sum(syy * syy))
  return _ratio(jnp.sum(sxy * sxy), den)


@_precision.follow_inputs
def linear_cka(x: Float[Array, "n dx"], y: Float[Array, "n dy"]) -> Float[Array, ""]:
  """Linear CKA of ``[n, d_x]`` and ``[n, d_y]`` representations.

  Examples:
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (100, 5))
    >>> round(float(linear_cka(x, 3 * x)), 5)
    1.0
  """
  sxx, syy, sxy, _, _ = _centred_covs(x, y)
  return linear_cka_from_covariance(sxx, syy, sxy)


def linear_cka_moments(state: _moments.Moments, i: int, j: int) -> Array:
  """Linear CKA of maps `i` and `j` from streamed `Moments`."""
  sxx, syy, sxy, _, _ = _moment_covs(state, i, j)
  return linear_cka_from_covariance(sxx, syy, sxy)


def _rms(x: Array) -> Array:
  """Root-mean-square entry, without under/overflow for any float32 scale."""
  top = _safe(jnp.max(jnp.abs(x)))
  return top * jnp.sqrt(jnp.mean(jnp.square(x / top)))


def _rms_scaled(x: Array) -> Array:
  """x divided by its root-mean-square entry (gram entries stay O(d))."""
  return x / _safe(_rms(x))


def gram_linear(x: Float[Array, "n d"]) -> Float[Array, "n n"]:
  """``[n, n]`` linear kernel x xᵀ of ``[n, d]`` features."""
  _checks.check_array(x, "x", 2, "[n, d]")
  return _mm(x, x.T)


def gram_rbf(x: Float[Array, "n d"], scale: float = 1.0) -> Float[Array, "n n"]:
  """``[n, n]`` RBF kernel exp(−‖xᵢ − xⱼ‖² / (2σ²)) of ``[n, d]`` features.

  Bandwidth rule (Kornblith et al. 2019): σ² = scale² · median of the squared
  distances over all n² pairs, the diagonal's zeros included. The kernel
  and hence RBF CKA are invariant to rotations, translations and isotropic
  scaling of x.
  """
  # Centred and RMS-scaled first: ‖xᵢ‖² + ‖xⱼ‖² − 2xᵢᵀxⱼ cancels
  # catastrophically for data far from the origin, and the kernel is
  # invariant to both transformations.
  _checks.check_array(x, "x", 2, "[n, d]")
  x = _rms_scaled(x - jnp.mean(x, axis=0, keepdims=True))
  sq = jnp.sum(x * x, axis=1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram_linear(x), 0.0)
  d2 = d2 * (1.0 - jnp.eye(x.shape[0], dtype=x.dtype))
  med = jnp.median(d2)
  return jnp.exp(-d2 / _safe(2.0 * scale**2 * med))


def _hsic(k: Array, l: Array, debiased: bool) -> Array:
  """HSIC of two ``[n, n]`` kernels up to a factor common to all pairs.

  Biased: tr(KHLH) (Gretton et al. 2005). Debiased: the unbiased
  estimator of Song et al. (2012), which needs n ≥ 4.
  """
  n = k.shape[0]
  if not debiased:
    kc = k - jnp.mean(k, axis=0)[None, :] - jnp.mean(k, axis=1)[:, None] + jnp.mean(k)
    return jnp.sum(kc * l)
  k = k - jnp.diag(jnp.diagonal(k))
  l = l - jnp.diag(jnp.diagonal(l))
  rk, rl = jnp.sum(k, axis=1), jnp.sum(l, axis=1)
  t = (jnp.sum(k * l) + jnp.sum(rk) * jnp.sum(rl) / ((n - 1) * (n - 2))
       - 2.0 * jnp.dot(rk, rl, precision=_HP) / (n - 2))
  return t / (n * (n - 3))


def _cka_from_hsic(xy: Array, xx: Array, yy: Array) -> Array:
  # A non-positive self-HSIC (degenerate inputs only) gives 0, never NaN.
  return _ratio(xy, jnp.sqrt(jnp.maximum(xx, 0.0) * jnp.maximum(yy, 0.0)))


def cka_from_gram(k: Float[Array, "n n"], l: Float[Array, "n n"], *,
                  debiased: bool = False) -> Float[Array, ""]:
  """CKA of two ``[n, n]`` kernel matrices on the same datapoints.

  Biased: a similarity in [0, 1]. Debiased: ≤ 1, centred at 0 for
  unrelated data, may be slightly negative; never NaN.
  """
  for a, name in ((k, "k"), (l, "l")):
    _checks.check_array(a, name, 2, "[n, n]")
  n = _checks.dims(n=k.shape[0])["nn"]
  for a, name in ((k, "k"), (l, "l")):
    _checks.check_shape(a, n, name, "Pass two [n, n] kernels of the same datapoints.")
  if debiased and k.shape[0] < 4:
    raise ValueError(f"the unbiased HSIC estimator needs n ≥ 4 datapoints, got {k.shape[0]}.")
  return _cka_from_hsic(_hsic(k, l, debiased), _hsic(k, k, debiased), _hsic(l, l, debiased))


@_precision.follow_inputs
def linear_cka_debiased(x: Float[Array, "n dx"], y: Float[Array, "n dy"]) -> Float[Array, ""]:
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
  xf, yf = _folded(x, y, min_n=4)
  xf, yf = (a - jnp.mean(a, axis=0)[None, :] for a in (xf, yf))  # exact; less cancellation
  return cka_from_gram(gram_linear(_rms_scaled(xf)), gram_linear(_rms_scaled(yf)),
                       debiased=True)


@_precision.follow_inputs
def rbf_cka(x: Float[Array, "n dx"], y: Float[Array, "n dy"], *, scale: float = 1.0,
            debiased: bool = False) -> Float[Array, ""]:
  """CKA with RBF kernels (bandwidth rule at `gram_rbf`). Memory O(n²).

  Args:
    x: ``[n, d_x]``, y: ``[n, d_y]``.
    scale: bandwidth as a multiple of the median distance (Kornblith et al.
      used 0.2–1.0); small values make CKA local, large ones approach linear CKA.
    debiased: use the unbiased HSIC estimator (n ≥ 4).

  Returns:
    ``[]`` similarity in [0, 1] (biased) or ≤ 1 (debiased); 1 for x against
    itself.
  """
  if scale <= 0:
    raise ValueError(f"scale must be positive, got {scale}.")
  xf, yf = _folded(x, y, min_n=4 if debiased else 2)
  return cka_from_gram(gram_rbf(xf, scale), gram_rbf(yf, scale), debiased=debiased)


class MinibatchCKA(NamedTuple):
  """Running sums of per-batch unbiased HSIC (Nguyen et al. 2021).

  Attributes:
    xy, xx, yy: ``[]`` sums of HSIC₁(K, L), HSIC₁(K, K), HSIC₁(L, L).
    scale_x, scale_y: ``[]`` RMS of the first batch of x and y; every batch
      is divided by them, so activations of any magnitude neither overflow
      nor underflow in float32 (CKA does not depend on a common scale).
    count: ``[]`` int, batches seen.
  """

  xy: Array
  xx: Array
  yy: Array
  scale_x: Array
  scale_y: Array
  count: Array


def minibatch_cka_init(dtype=jnp.float32) -> MinibatchCKA:
  """Empty `MinibatchCKA` state."""
  z = jnp.zeros((), dtype)
  return MinibatchCKA(z, z, z, z, z, jnp.zeros((), jnp.int32))


def minibatch_cka_update(state: MinibatchCKA, x: Float[Array, "n dx"],
                         y: Float[Array, "n dy"]) -> MinibatchCKA:
  """Adds one minibatch ``x [b, d_x]``, ``y [b, d_y]`` (b ≥ 4). Jittable."""
  xf, yf = _folded(x, y, min_n=4)
  # The unbiased HSIC does not change when features are shifted, but its
  # terms cancel less: uncentred logits lost 5e-4 of CKA in float32.
  xf = xf - jnp.mean(xf, axis=0)[None, :]
  yf = yf - jnp.mean(yf, axis=0)[None, :]
  first = lambda s, a: jnp.where(s > 0, s, _safe(_rms(a))).astype(s.dtype)
  sx, sy = first(state.scale_x, xf), first(state.scale_y, yf)
  k, l = gram_linear(xf / sx), gram_linear(yf / sy)
  return MinibatchCKA(state.xy + _hsic(k, l, True), state.xx + _hsic(k, k, True),
                      state.yy + _hsic(l, l, True), sx, sy, state.count + 1)


def minibatch_cka_value(state: MinibatchCKA) -> Array:
  """Minibatch linear CKA Σ HSIC₁(K,L) / √(Σ HSIC₁(K,K) Σ HSIC₁(L,L)); ≤ 1,
  centred at 0 for unrelated data, 0 before any batch, never NaN."""
  return _cka_from_hsic(state.xy, state.xx, state.yy)


def minibatch_cka(xs: Float[Array, "batches n dx"],
                  ys: Float[Array, "batches n dy"]) -> Float[Array, ""]:
  """Minibatch linear CKA over stacked batches ``[B, b, d_x]``, ``[B, b, d_y]``.

  Memory is O(b²) per batch, so any dataset size works; with `lax.scan`
  over the batches. For a host iterator, fold `minibatch_cka_update`.
  """
  for a, name in ((xs, "xs"), (ys, "ys")):
    _checks.check_array(a, name, (3, 5), "(stacked batches [B, b, d] or [B, b, H, W, C])")
  _checks.check_same_leading([xs, ys], ["xs", "ys"], axes=2, noun="batches and datapoints")
  return _minibatch_cka(xs, ys)


@jax.jit
def _minibatch_cka(xs: Array, ys: Array) -> Array:
  step = lambda s, b: (minibatch_cka_update(s, *b), None)
  state, _ = lax.scan(step, minibatch_cka_init(jnp.result_type(xs)), (xs, ys))
  return minibatch_cka_value(state)


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


# --------------------------------------------------------------------------
# Layer × layer matrices.

MEASURES = ("cca", "svcca", "pwcca", "linear_cka", "procrustes_distance")
"""Measures `pairwise` knows. All but ``procrustes_distance`` are similarities."""


def _seq(f, *xs):
  """``vmap(f)(*xs)`` computed one slice at a time (`lax.map`).

  Batched LAPACK calls (vmapped eigh/svd) inside a larger program have
  deadlocked XLA:CPU when the program was run repeatedly (jax 0.10); one
  slice at a time never did, and costs nothing on these O(d³) steps.
  """
  return lax.map(lambda a: f(*a), xs)


def _pairwise_from_stats(measure: str, covx, covy, cross, mx, my, maskx, masky, *,
                         epsilon, threshold, keep, variance, signs) -> Array:
  """``[Lx, Ly]`` values from zero-padded, masked per-layer statistics.

  covx ``[Lx, D, D]``, covy ``[Ly, E, E]``, cross ``[Lx, Ly, D, E]`` (ddof 0),
  means ``[L, D]``, masks ``[L, D]`` (False on padding). Per-layer work
  (whitening, norms) is done once per layer, not once per pair.
  """
  def grid(f, a, b, c):
    return _seq(lambda ai, ci: _seq(lambda bj, cij: f(ai, bj, cij), b, ci), a, c)

  if measure == "cca":
    side = lambda cov, mask: _seq(lambda s, m: _side(s, m, epsilon, False), cov, mask)
    return grid(lambda a, b, c: _cca_pair(a, b, c, threshold).mean,
                side(covx, maskx), side(covy, masky), cross)
  if measure == "svcca":
    def side(s, m):
      v, top = _top_directions(s, keep, variance)
      return v, _side(_mm(v.T, _mm(s, v)), top, epsilon, False)
    vx, sx = _seq(side, covx, maskx)
    vy, sy = _seq(side, covy, masky)
    pair = lambda a, b, c: _cca_pair(a[1], b[1], _mm(a[0].T, _mm(c, b[0])), threshold).mean
    return grid(pair, (vx, sx), (vy, sy), cross)
  if measure == "pwcca":
    side = lambda cov, mask: _seq(lambda s, m: _side(s, m, epsilon, True), cov, mask)
    pair = lambda a, b, c: _pwcca_pair(a[0], b[0], c, a[1], b[1], epsilon, signs).value
    return grid(pair, (side(covx, maskx), mx), (side(covy, masky), my), cross)
  if measure == "linear_cka":
    fro = lambda c: jnp.sqrt(jnp.sum(c * c, axis=(-2, -1)))
    return grid(lambda a, b, c: _ratio(jnp.sum(c * c), a * b), fro(covx), fro(covy), cross)
  if measure == "procrustes_distance":
    tr = lambda c: jnp.trace(c, axis1=-2, axis2=-1)
    dist = lambda a, b, c: jnp.clip(
        2.0 - 2.0 * _ratio(jnp.sum(jnp.linalg.svd(c, compute_uv=False)), jnp.sqrt(a * b)),
        0.0, 2.0)
    return grid(dist, tr(covx), tr(covy), cross)
  raise ValueError(f"unknown measure {measure!r}; choose one of {MEASURES}.")


def _stack_padded(mats: Sequence[Array], width: int) -> tuple[Array, Array]:
  """Square ``[d, d]`` matrices (or ``[d]`` vectors) zero-padded to `width`."""
  pad = lambda a: jnp.pad(a, [(0, width - a.shape[0])] * a.ndim)
  masks = [jnp.arange(width) < m.shape[0] for m in mats]
  return jnp.stack([pad(m) for m in mats]), jnp.stack(masks)


def _cross_grid(blocks, wx: int, wy: int) -> Array:
  """``[Lx, Ly, wx, wy]`` from a nested list of cross blocks, zero-padded."""
  return jnp.stack([jnp.stack([jnp.pad(b, [(0, wx - b.shape[0]), (0, wy - b.shape[1])])
                               for b in row]) for row in blocks])


def _check_measure(measure, threshold, keep, variance):
  if measure not in MEASURES:
    raise ValueError(f"unknown measure {measure!r}; choose one of {MEASURES}.")
  _check_threshold(threshold)
  _check_svcca(keep, variance)


@functools.partial(jax.jit, static_argnames=("measure", "epsilon", "threshold", "keep",
                                             "variance", "signs"))
def _pairwise_jit(xs, ys, *, measure, epsilon, threshold, keep, variance, signs):
  dx = [x.shape[1] for x in xs]
  dy = [y.shape[1] for y in ys]
  centre = lambda a: a - jnp.mean(a, axis=0)[None, :]
  xa = centre(jnp.concatenate(xs, axis=1))
  ya = centre(jnp.concatenate(ys, axis=1))
  n = xa.shape[0]
  cross = _mm(xa.T, ya) / n  # every layer pair's block in one GEMM
  ox = [sum(dx[:i]) for i in range(len(dx))]
  oy = [sum(dy[:j]) for j in range(len(dy))]
  blocks = [[cross[ox[i]:ox[i] + dx[i], oy[j]:oy[j] + dy[j]] for j in range(len(dy))]
            for i in range(len(dx))]

  def self_cov(a, o, d):
    c = a[:, o:o + d]
    return _mm(c.T, c) / n

  covx, maskx = _stack_padded([self_cov(xa, o, d) for o, d in zip(ox, dx)], max(dx))
  covy, masky = _stack_padded([self_cov(ya, o, d) for o, d in zip(oy, dy)], max(dy))
  mx, _ = _stack_padded([jnp.mean(x, axis=0) for x in xs], max(dx))
  my, _ = _stack_padded([jnp.mean(y, axis=0) for y in ys], max(dy))
  return _pairwise_from_stats(measure, covx, covy, _cross_grid(blocks, max(dx), max(dy)),
                              mx, my, maskx, masky, epsilon=epsilon, threshold=threshold,
                              keep=keep, variance=variance, signs=signs)


CONV = ("mean", "flatten", "positions")
"""How `features` turns a conv feature map ``[n, H, W, C]`` into ``[n', d]``."""


def features(h: Array, conv: str = "mean") -> Array:
  """One layer's representation as datapoints × neurons, by the convention
  every layer × layer comparison of rainbow_jax uses (`pairwise`,
  ``rainbow-jax analyze`` and ``compare``).

  Args:
    h: ``[n, d]`` (returned as is) or a conv map ``[n, *space, C]``.
    conv: ``"mean"`` (default) averages over positions, ``[n, C]``: every
      layer of a network compares with every other whatever its spatial
      size, and d stays the channel count (what CCA's d × d covariances
      and a layer × layer matrix can afford); ``"flatten"`` keeps one
      vector per image, ``[n, H·W·C]`` (Kornblith et al.'s CKA; d grows
      with the map: use linear CKA there); ``"positions"`` makes every
      position a datapoint, ``[n·H·W, C]`` (the SVCCA tutorial's conv CCA;
      only layers with equal n·H·W compare).

  Returns:
    ``[n, d]`` (``[n·H·W, C]`` for ``"positions"``).
  """
  if conv not in CONV:
    raise ValueError(f"conv must be one of {CONV}, got {conv!r}.")
  h = jnp.asarray(h)
  if h.ndim <= 2:
    return h
  if conv == "mean":
    return h.reshape(h.shape[0], -1, h.shape[-1]).mean(axis=1)
  if conv == "flatten":
    return h.reshape(h.shape[0], -1)
  return h.reshape(-1, h.shape[-1])


@_precision.follow_inputs
def pairwise(xs: Sequence[Array], ys: Sequence[Array] | None = None, *,
             measure: str = "linear_cka", conv: str = "mean", epsilon: float = 0.0,
             threshold: float = 0.98, keep: int | None = None, variance: float = 0.99,
             signs: str = "svd") -> Array:
  """Layer × layer matrix of a measure, in one jitted call.

  Compare every layer of one model with every layer of another (or of the
  same model with ``ys=None``; for K seeds pass the seeds' layers one after
  another). Widths may differ: layers are zero-padded to the widest and the
  padding masked out, so every entry equals the measure called on that pair
  alone (for ``"pwcca"`` with ``signs="largest_positive"``; with the SVD's
  signs the padded SVD may orient a direction otherwise). The
  cross-covariances of all pairs come from one matrix product; whitening and
  norms are done once per layer.

  Args:
    xs: layers of the first model, each ``[n, d_i]`` or a conv map
      ``[n, H, W, d_i]`` (turned into ``[n, d]`` by `features` with `conv`).
    ys: layers of the second model, each ``[n, e_j]``; None for ``xs``.
    measure: one of `MEASURES`: ``"cca"`` (svcca's mean), ``"svcca"``,
      ``"pwcca"``, ``"linear_cka"`` (similarities in [0, 1]) or
      ``"procrustes_distance"`` (a distance in [0, 2]).
    conv: how conv maps become datapoints × neurons (`CONV`; default
      ``"mean"``, averaged over positions; see `features`).
    epsilon, threshold: as in `cca`; keep, variance: as in `svcca` (with
      `keep` at most the narrowest width); signs: as in `pwcca`.

  Returns:
    ``[len(xs), len(ys)]`` matrix.
  """
  _check_measure(measure, threshold, keep, variance)
  _check_signs(signs)
  same = ys is None
  ys = xs if same else ys
  for side, layers in (("xs", xs), ("ys", () if same else ys)):
    for i, a in enumerate(layers):
      _checks.check_array(a, f"{side}[{i}]", (2, 3, 4, 5), "([n, d] or [n, *space, C])")
  fx = [features(x, conv) for x in xs]
  fy = fx if same else [features(y, conv) for y in ys]
  sizes = [(f"xs[{i}]", a.shape[0]) for i, a in enumerate(fx)]
  sizes += [] if same else [(f"ys[{j}]", a.shape[0]) for j, a in enumerate(fy)]
  if len({n for _, n in sizes}) != 1:
    listed = ", ".join(f"{name}: {n}" for name, n in sizes)
    hint = (" With conv='positions' every position is a datapoint, so only layers whose"
            " n·H·W agree compare; conv='mean' (the default) or 'flatten' compare any two"
            " layers of the same images." if conv == "positions" else
            " Pass every layer's activations on the same inputs, in the same order.")
    raise ValueError(f"all layers need the same number of datapoints; got {listed}.{hint}")
  if sizes[0][1] < 2:
    raise ValueError("need at least 2 datapoints.")
  return _pairwise_jit(fx, fy, measure=measure, epsilon=epsilon, threshold=threshold,
                       keep=keep, variance=variance, signs=signs)


@functools.partial(jax.jit, static_argnames=("rows", "cols", "measure", "epsilon", "threshold",
                                             "keep", "variance", "signs"))
def _pairwise_moments_jit(state, *, rows, cols, measure, epsilon, threshold, keep, variance,
                          signs):
  cov = lambda a, b=None: _moments.covariance(state, a, b, centered=True)
  wx = max(state.mean[i].shape[0] for i in rows)
  wy = max(state.mean[j].shape[0] for j in cols)
  covx, maskx = _stack_padded([cov(i) for i in rows], wx)
  covy, masky = _stack_padded([cov(j) for j in cols], wy)
  mx, _ = _stack_padded([_moments.mean(state, i) for i in rows], wx)
  my, _ = _stack_padded([_moments.mean(state, j) for j in cols], wy)
  cross = _cross_grid([[cov(i, j) for j in cols] for i in rows], wx, wy)
  return _pairwise_from_stats(measure, covx, covy, cross, mx, my, maskx, masky,
                              epsilon=epsilon, threshold=threshold, keep=keep,
                              variance=variance, signs=signs)


def pairwise_moments(state: _moments.Moments, rows: Sequence[int], cols: Sequence[int], *,
                     measure: str = "linear_cka", epsilon: float = 0.0,
                     threshold: float = 0.98, keep: int | None = None,
                     variance: float = 0.99, signs: str = "svd") -> Array:
  """`pairwise` from streamed `Moments`: maps `rows` × maps `cols`.

  Every pair (i, j) with i ≠ j needs its cross moments, e.g. from
  ``layer_moments(..., params2=..., cross="all")``, whose first model's
  maps are ``range(L1)`` and second's ``range(L1, L1 + L2)``.

  Conv maps in `Moments` have positions as datapoints (``conv="positions"``
  of `pairwise`).

  Returns:
    ``[len(rows), len(cols)]`` matrix, equal to `pairwise` on the data.
  """
  _check_measure(measure, threshold, keep, variance)
  _check_signs(signs)
  rows, cols = tuple(int(i) for i in rows), tuple(int(j) for j in cols)
  for i in rows:
    for j in cols:
      if i != j and (i, j) not in state.pairs and (j, i) not in state.pairs:
        raise ValueError(f"no cross moments of maps {i} and {j}; accumulate with"
                         f" cross='all' (kept: {state.pairs}).")
  return _pairwise_moments_jit(state, rows=rows, cols=cols, measure=measure, epsilon=epsilon,
                               threshold=threshold, keep=keep, variance=variance, signs=signs)


# --------------------------------------------------------------------------
# Null baselines.


class NullBaseline(NamedTuple):
  """A measure's values on unrelated data of the same shapes.

  Attributes:
    samples: ``[num_samples]`` values of the measure under the null.
    mean: ``[]`` their mean: the score unrelated data gets by chance.
    std: ``[]`` their standard deviation (ddof 1).
  """

  samples: Array
  mean: Array
  std: Array

  def zscore(self, score: Array) -> Array:
    """How many null standard deviations `score` lies above the null mean."""
    return (score - self.mean) / _safe(self.std)


@_precision.follow_inputs
def null_baseline(fn: Callable[[Array, Array], Array], x: Float[Array, "n dx"],
                  y: Float[Array, "n dy"], key: Array, *, num_samples: int = 100,
                  method: str = "permutation") -> NullBaseline:
  """Values of ``fn(x, y)`` when x and y carry no shared information.

  With few datapoints per neuron CCA (and biased CKA) are high by chance —
  a mean CCA of 0.9 means nothing if unrelated data also scores 0.9. This
  draws `num_samples` null pairs in one jitted `lax.map` (one draw at a
  time, so memory stays O(n·d)):

  * ``"permutation"`` shuffles y's datapoints against x's: each side keeps
    its exact distribution, only the correspondence is destroyed;
  * ``"gaussian"`` replaces both by independent standard normal data of the
    same shapes (what the SVCCA tutorial's toy baseline does).

  Args:
    fn: jittable ``(x [n, d_x], y [n, d_y]) -> []``, e.g.
      ``lambda a, b: cca(a, b).mean``.
    x: ``[n, d_x]``, y: ``[n, d_y]`` (conv maps are folded first).
    key: PRNG key.
    num_samples: number of null draws (≥ 2).
    method: ``"permutation"`` or ``"gaussian"``.

  Returns:
    `NullBaseline`; ``baseline.zscore(fn(x, y))`` reports a score against it.
  """
  if method not in ("permutation", "gaussian"):
    raise ValueError(f"method must be 'permutation' or 'gaussian', got {method!r}.")
  if num_samples < 2:
    raise ValueError(f"need num_samples ≥ 2 for a spread, got {num_samples}.")
  xf, yf = (jnp.asarray(a) for a in _folded(x, y))
  n = xf.shape[0]
  keys = jax.random.split(key, num_samples)

  def one(k, a, b):
    if method == "permutation":
      return fn(a, b[jax.random.permutation(k, n)])
    kx, ky = jax.random.split(k)
    return fn(jax.random.normal(kx, a.shape, a.dtype), jax.random.normal(ky, b.shape, b.dtype))

  # One draw at a time (see `_seq`): memory O(n·d), one compiled program;
  # the data are arguments, not constants folded into it.
  run = jax.jit(lambda ks, a, b: lax.map(lambda k: one(k, a, b), ks))
  samples = jax.block_until_ready(run(keys, xf, yf))
  return NullBaseline(samples, jnp.mean(samples), jnp.std(samples, ddof=1))


__all__ = [
  "MEASURES",
  "CCAResult",
  "CONV",
  "MinibatchCKA",
  "NullBaseline",
  "PWCCAResult",
  "SIGNS",
  "cca",
  "cca_distance",
  "cca_from_covariance",
  "cca_moments",
  "cka_from_gram",
  "features",
  "gram_linear",
  "gram_rbf",
  "linear_cka",
  "linear_cka_debiased",
  "linear_cka_from_covariance",
  "linear_cka_moments",
  "minibatch_cka",
  "minibatch_cka_init",
  "minibatch_cka_update",
  "minibatch_cka_value",
  "null_baseline",
  "pairwise",
  "pairwise_moments",
  "procrustes_distance",
  "procrustes_distance_from_covariance",
  "pwcca",
  "pwcca_from_covariance",
  "pwcca_moments",
  "resolution_floor",
  "rbf_cka",
  "svcca",
  "svcca_from_covariance",
]
