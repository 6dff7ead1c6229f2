"""Centred kernel alignment: linear (from covariances, so it streams), RBF,
debiased, and minibatch CKA (Nguyen et al. 2021)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Float

from rainbow_jax import _checks
from rainbow_jax import _precision
from rainbow_jax import moments as _moments
from rainbow_jax.similarity._base import (_HP, _check_covs, _centred_covs, _folded, _mm,
    _moment_covs, _ratio, _rms, _rms_scaled, _safe, _unit_covs)

Array = jax.Array


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
