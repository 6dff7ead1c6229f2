"""google/svcca-compatible CCA: ``import rainbow_jax.compat.svcca as cca_core``.

`get_cca_similarity` and `compute_pwcca` take and return what
``cca_core.get_cca_similarity`` and ``pwcca.compute_pwcca`` do — arrays of
**neurons × datapoints**, numpy results, the same dict keys and shapes — and
run on JAX (jitted; GPU/TPU when present). Users switch by changing an import.

Differences, all documented:
  * arithmetic is float32 unless x64 is enabled (coefficients agree with the
    float64 reference to about 1e-5; the reference is float64 throughout);
  * `verbose` prints nothing;
  * a threshold of 0 raises (the reference returns NaN for it);
  * `compute_pwcca` weights y's own activations on the y side (the reference
    reads ``acts1`` there), handles neurons removed by `epsilon` (the
    reference fails on a shape mismatch), and fixes the arbitrary sign of
    each canonical direction (see `rainbow_jax.similarity.pwcca_from_covariance`);
  * canonical directions (``coef_x``, ``cca_dirns1``, …) are, as in the
    reference, defined up to the sign of each direction.

For fewer datapoints than neurons (which the reference refuses, and so does
this module) and for streamed, batched or jitted use, call
`rainbow_jax.similarity` on datapoints × neurons arrays.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import similarity as _sim


def _inputs(acts1, acts2) -> tuple[jax.Array, jax.Array]:
  """Transposed (datapoints × neurons) float arrays, checked like the reference."""
  a1, a2 = np.asarray(acts1), np.asarray(acts2)
  for a, name in ((a1, "acts1"), (a2, "acts2")):
    if a.ndim != 2:
      raise ValueError(f"{name} must be 2-D (neurons, datapoints), got shape {a.shape}.")
  if a1.shape[1] != a2.shape[1]:
    raise ValueError(f"acts1 and acts2 need the same number of datapoints (axis 1), got"
                     f" {a1.shape} and {a2.shape}.")
  for a, name in ((a1, "acts1"), (a2, "acts2")):
    if a.shape[0] >= a.shape[1]:
      raise ValueError(
          f"{name} has shape {a.shape}: the input must be neurons × datapoints with fewer"
          " neurons than datapoints (as in google/svcca). For n ≤ d use"
          " rainbow_jax.similarity.cca on [datapoints, neurons] arrays.")
  dtype = jnp.result_type(float)  # float32, or float64 with x64
  x, y = jnp.asarray(a1.T, dtype), jnp.asarray(a2.T, dtype)
  for a, name in ((x, "acts1"), (y, "acts2")):
    _sim._check_finite(a, name)
  return x, y


@functools.partial(jax.jit, static_argnames=("epsilon", "threshold"))
def _cca(x, y, epsilon, threshold):
  sxx, syy, sxy, mx, my = _sim._centred_covs(x, y)
  res = _sim.cca_from_covariance(sxx, syy, sxy, epsilon=epsilon, threshold=threshold)
  return sxx, syy, sxy, mx, my, res


@functools.partial(jax.jit, static_argnames=("epsilon",))
def _pwcca(x, y, epsilon):
  return _sim.pwcca(x, y, epsilon=epsilon)


@functools.partial(jax.jit, static_argnames=("epsilon",))
def _directions(sxx, syy, sxy, epsilon):
  """Symmetric whiteners and full SVD on the kept (cropped) neurons."""
  sx = _sim._side(sxx, None, epsilon, True)
  sy = _sim._side(syy, None, epsilon, True)
  u, _, vh = jnp.linalg.svd(_sim._whitened_cross(sx, sy, sxy), full_matrices=True)
  return sx.white, sy.white, u, vh


@jax.jit
def _dirns(full_coef, full_invsqrt, x, mean):
  """(coef · invsqrt) (acts − μ) + μ, neurons × datapoints."""
  return _sim._mm(_sim._mm(full_coef, full_invsqrt), (x - mean[None, :]).T) + mean[:, None]


def _zero_dict(compute_dirns: bool, dimension: int) -> dict:
  out = {"mean": (np.asarray(0), np.asarray(0)), "sum": (np.asarray(0), np.asarray(0)),
         "cca_coef1": np.asarray(0), "cca_coef2": np.asarray(0), "idx1": 0, "idx2": 0}
  if compute_dirns:
    out["cca_dirns1"] = np.zeros((1, dimension))
    out["cca_dirns2"] = np.zeros((1, dimension))
  return out


def _full(block: np.ndarray, keep: np.ndarray) -> np.ndarray:
  full = np.zeros((keep.size, keep.size), block.dtype)
  full[np.ix_(keep, keep)] = block
  return full


def get_cca_similarity(acts1, acts2, epsilon=0., threshold=0.98, compute_coefs=True,
                       compute_dirns=False, verbose=True) -> dict:
  """CCA of two layers, as google/svcca's ``cca_core.get_cca_similarity``.

  Args:
    acts1: ``(num_neurons1, datapoints)`` activations, fewer neurons than
      datapoints.
    acts2: ``(num_neurons2, datapoints)`` on the same datapoints.
    epsilon: neurons whose rescaled variance is below it are removed; it is
      added to the kept diagonals.
    threshold: fraction of the coefficients' sum that ``mean`` covers.
    compute_coefs: also return the canonical directions' coefficients
      (``coef_x``, ``invsqrt_xx``, ``full_coef_x``, ``full_invsqrt_xx``, their
      y versions, ``neuron_means1``/``2``).
    compute_dirns: also return ``cca_dirns1``/``2``, the directions over
      datapoints (``(num_neurons, datapoints)``).
    verbose: accepted for compatibility; nothing is printed.

  Returns:
    The reference's dict: ``cca_coef1``/``cca_coef2`` (the coefficients,
    descending, ``min(kept x, kept y)`` of them), ``x_idxs``/``y_idxs``
    (bool masks of kept neurons), ``mean`` and ``sum`` (pairs of equal
    values), and the optional entries above; the reference's zero dict when
    every neuron of a side is removed.
  """
  del verbose
  if not 0.0 < threshold <= 1.0:
    raise ValueError(f"threshold must lie in (0, 1], got {threshold}.")
  x, y = _inputs(acts1, acts2)
  epsilon = float(epsilon)
  sxx, syy, sxy, mx, my, res = _cca(x, y, epsilon, float(threshold))
  kx, ky = np.asarray(res.x_keep), np.asarray(res.y_keep)
  if not kx.any() or not ky.any():
    return _zero_dict(compute_dirns, x.shape[0])
  k = int(res.num_coefficients)
  s = np.asarray(res.coefficients)[:k]
  mean, total = np.asarray(res.mean), np.asarray(res.sum)
  out = {}
  if compute_coefs or compute_dirns:
    sxx_k = np.asarray(sxx)[np.ix_(kx, kx)]
    syy_k = np.asarray(syy)[np.ix_(ky, ky)]
    sxy_k = np.asarray(sxy)[np.ix_(kx, ky)]
    inv_x, inv_y, u, vh = (np.asarray(a) for a in _directions(sxx_k, syy_k, sxy_k, epsilon))
    # The reference rescales, then crops; cropping first is the same: the
    # largest |entry| of a covariance is a variance, and that neuron is kept.
    out.update(coef_x=u.T, invsqrt_xx=inv_x, full_coef_x=_full(u.T, kx),
               full_invsqrt_xx=_full(inv_x, kx), coef_y=vh, invsqrt_yy=inv_y,
               full_coef_y=_full(vh, ky), full_invsqrt_yy=_full(inv_y, ky),
               neuron_means1=np.asarray(mx)[:, None], neuron_means2=np.asarray(my)[:, None])
  if compute_dirns:
    out["cca_dirns1"] = np.asarray(_dirns(out["full_coef_x"], out["full_invsqrt_xx"], x, mx))
    out["cca_dirns2"] = np.asarray(_dirns(out["full_coef_y"], out["full_invsqrt_yy"], y, my))
  out.update(cca_coef1=s, cca_coef2=s, x_idxs=kx, y_idxs=ky, mean=(mean, mean),
             sum=(total, total))
  return out


def compute_pwcca(acts1, acts2, epsilon=0.):
  """Projection-weighted CCA, as google/svcca's ``pwcca.compute_pwcca``.

  Args:
    acts1: ``(num_neurons1, datapoints)``; acts2: ``(num_neurons2, datapoints)``.
    epsilon: as in `get_cca_similarity`.

  Returns:
    ``(pwcca, weights, coefs)``: the weighted mean, the weights of the side
    with fewer kept neurons, and the coefficients (numpy).
  """
  x, y = _inputs(acts1, acts2)
  res = _pwcca(x, y, float(epsilon))
  k = int(res.num_coefficients)
  return np.asarray(res.value), np.asarray(res.weights)[:k], np.asarray(res.coefficients)[:k]


__all__ = ["compute_pwcca", "get_cca_similarity"]
