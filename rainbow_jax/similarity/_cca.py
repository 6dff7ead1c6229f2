"""CCA, SVCCA and PWCCA (google/svcca semantics) from covariances, in-memory
activations or streamed `Moments`; see the package docstring."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Bool, Float

from rainbow_jax import _checks
from rainbow_jax import _precision
from rainbow_jax import moments as _moments
from rainbow_jax.similarity._base import (_check_covs, _centred_covs, _mm,
    _moment_covs, _ratio, _safe)

Array = jax.Array


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
  real = jnp.real(jnp.diagonal(a))  # a Hermitian (complex) covariance has a real diagonal
  if symmetric:
    dg = keep.astype(real.dtype)
  else:
    dg = jnp.where(keep & (real > 0), lax.rsqrt(jnp.where(real > 0, real, 1.0)), 0.0)
  w, v = jnp.linalg.eigh(a * dg[:, None] * dg[None, :])
  # A direction is resolved when the data's own variance along it (its
  # eigenvalue less epsilon's share, a Rayleigh quotient) clears the floor:
  # epsilon must not lift rounding noise into the whitening.
  data = w - epsilon * _mm(jnp.square(jnp.abs(v)).T, jnp.square(dg))
  ok = data > resolution_floor(w, d)
  root = jnp.where(ok, lax.rsqrt(jnp.where(ok, w, 1.0)), 0.0)
  return _Side(keep, smax, root[:, None] * jnp.conj(v).T * dg[None, :], w, v, jnp.sum(ok))


def _white(side: _Side) -> Array:
  """The side's ``[d, d]`` whitener W = V H (symmetric when `_side` was)."""
  return _mm(side.evecs, side.half)


def _whitened_cross(sx: _Side, sy: _Side, sxy: Array, rotate: bool = True) -> Array:
  """Wx Σxy Wyᵀ on the kept neurons (rescaled as svcca does): Σxx^-½ Σxy
  Σyy^-½ for symmetric sides. ``rotate=False`` gives Hx Σxy Hyᵀ = Vxᵀ (·) Vy,
  the same singular values for two products fewer."""
  sxy = sxy / jnp.sqrt(_safe(sx.scale) * _safe(sy.scale))
  sxy = jnp.where(sx.keep[:, None] & sy.keep[None, :], sxy, 0.0)
  c = _mm(sx.half, _mm(sxy, jnp.conj(sy.half).T))
  return _mm(sx.evecs, _mm(c, jnp.conj(sy.evecs).T)) if rotate else c


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
  _checks.check_choice(signs, SIGNS, "signs")


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
