"""google/svcca-compatible CCA, imported as ``import rainbow_jax.compat.svcca as cca_core``.

`get_cca_similarity` and `compute_pwcca` take and return what
``cca_core.get_cca_similarity`` and ``pwcca.compute_pwcca`` do — arrays of
**neurons × datapoints**, numpy results, the same dict keys and shapes, the
same numbers (``tests/test_pwcca_compat.py`` compares them with the real
reference's outputs in ``tests/fixtures``, to 1e-4) — and run on JAX
(jitted; GPU/TPU when present). Users switch by changing an import.

Where the time goes. The covariances of the two layers are most of the
work (2 × 2048 neurons × 50 000 datapoints: 4·2048²·50 000 flops). On the
CPU backend the activations already live on the host, so the host BLAS
forms them (one symmetric product of the centred, stacked layers) with no
copy to the device; elsewhere the device does. The decompositions (two
eigendecompositions and an SVD of d × d matrices) follow in JAX.

Precision. float64 inputs (what numpy users pass) are computed in float64,
inside the scoped `jax.enable_x64` context — the process-wide flag is never
touched. float32 inputs get float32 covariances (an error of ~1e-7 of their
largest entry); on a CPU their d × d decompositions then run in float64 (as
fast there, and the canonical directions come out with the signs numpy
gives them, on which the reference's PWCCA depends), on an accelerator in
float32. Every direction above `similarity.resolution_floor` (1.1e-5 of the
largest variance at 2 048 neurons) keeps its correlation: at 2 048 neurons ×
50 000 float32 datapoints every coefficient agrees with the reference (which
forms its covariances in float64) to 5e-6, PWCCA to 1e-4
(``tests/test_pwcca_compat.py``, the large case under ``-m slow``).

PWCCA is the reference's own construction: the directions
``coef_x @ (acts − means) + means`` (the canonical directions in the
*unwhitened* neuron basis, as the reference builds them), orthonormalised
by QR, weighted by ``Σ_neurons |Pᵀ acts|`` with **uncentred** activations;
when y has fewer kept neurons the reference reads ``acts1`` (not ``acts2``)
to build y's directions — reproduced where it is defined (equal widths); for
different widths the reference raises an IndexError and this module reads
``acts2``. Neurons removed by `epsilon` on the weighted side make the
reference fail on a shape mismatch; here the means of the kept neurons are
used. `rainbow_jax.similarity.pwcca` is the principled form (centred
activations, whitened directions, signs fixed) and gives different numbers
on activations with large means.

Other differences: `verbose` prints nothing; a threshold of 0 raises (the
reference returns NaN for it); canonical directions (``coef_x``,
``cca_dirns1``, …) are, as in the reference, defined up to the sign of each
direction.

For fewer datapoints than neurons (which the reference refuses, and so does
this module) and for streamed, batched or jitted use, call
`rainbow_jax.similarity` on datapoints × neurons arrays.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import _checks
from rainbow_jax import _linalg
from rainbow_jax.similarity import _base
from rainbow_jax.similarity import _cca as _sim


def _precision(acts1, acts2):
  """float64 inputs run in float64 (a scoped `jax.enable_x64`), others in
  float32."""
  wide = any(np.asarray(a).dtype == np.float64 for a in (acts1, acts2))
  return jax.enable_x64(True) if wide else contextlib.nullcontext()


def _inputs(acts1, acts2) -> tuple[np.ndarray, np.ndarray]:
  """neurons × datapoints host arrays in the compute dtype, their shapes
  checked like the reference (call inside `_precision`; finiteness is
  checked by `_moments`)."""
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
  dtype = np.dtype(jnp.result_type(float))  # float32, or float64 with x64
  return a1.astype(dtype, copy=False), a2.astype(dtype, copy=False)


def _moments(a1: np.ndarray, a2: np.ndarray):
  """``(Σxx, Σyy, Σxy, μx, μy)``, covariances up to one common positive scale
  per side (CCA ignores it), of neurons × datapoints arrays; raises on NaN/Inf.

  On the CPU backend the inputs already live on the host, and the host BLAS
  forms the products: one symmetric rank-k product of the centred, stacked
  layers (Σxy once, each triangle once). At 2 × 2048 neurons × 50 000
  datapoints (float32, 2-core Xeon) that took 4.3–4.7 s, where copying to
  the device (0.9 s) and XLA's three products (5.6 s) took 6.5 s. Elsewhere
  the device computes them (`similarity`'s in-memory covariances).
  """
  # An error δ in the means changes the covariance by δδᵀ only; BLAS sums
  # are accurate enough.
  mu1 = a1 @ np.full(a1.shape[1], 1 / a1.shape[1], a1.dtype)
  mu2 = a2 @ np.full(a2.shape[1], 1 / a2.shape[1], a2.dtype)
  if jax.default_backend() != "cpu":
    x, y = jnp.asarray(a1.T), jnp.asarray(a2.T)
    for a, name in ((x, "acts1"), (y, "acts2")):
      _checks.check_finite(a, name)
    sxx, syy, sxy, _, _ = _base._centred_covs(x, y)
    return sxx, syy, sxy, mu1, mu2
  d1 = a1.shape[0]
  c = np.empty((d1 + a2.shape[0], a1.shape[1]), a1.dtype)
  np.subtract(a1, mu1[:, None], out=c[:d1])
  np.subtract(a2, mu2[:, None], out=c[d1:])
  g = c @ c.T
  diag = np.diagonal(g)
  finite = bool(np.all(np.isfinite(diag)))  # a NaN/Inf input poisons its diagonal entry
  if not finite:
    for a, name in ((a1, "acts1"), (a2, "acts2")):
      _checks.check_finite(a, name)
  small = 1e8 * np.finfo(c.dtype).tiny
  if not finite or 0 < diag.max() < small:
    # Products over- or underflowed: one scale per side, then again.
    for rows in (slice(0, d1), slice(d1, None)):
      c[rows] /= max(float(np.max(np.abs(c[rows]))), float(small))
    g = c @ c.T
  g /= a1.shape[1] - 1
  return g[:d1, :d1], g[d1:, d1:], g[:d1, d1:], mu1, mu2


_cca = jax.jit(_sim.cca_from_covariance, static_argnames=("epsilon", "threshold"))


@functools.partial(jax.jit, static_argnames=("epsilon", "threshold"))
def _directions(sxx, syy, sxy, epsilon, threshold):
  """On the kept (cropped) neurons: the reference's symmetric whiteners, the
  full SVD of the whitened cross, and from its singular values the
  coefficients, mean and sum (one set of decompositions: two eigh and one
  SVD, as the reference)."""
  sx = _sim._side(sxx, None, epsilon, True)
  sy = _sim._side(syy, None, epsilon, True)
  u, s, vh = jnp.linalg.svd(_sim._whitened_cross(sx, sy, sxy), full_matrices=True)
  k = min(sxx.shape[0], syy.shape[0])
  s, mean, total = _sim._summary(jnp.abs(s[:k]), k, threshold)
  return s, mean, total, _sim._white(sx), _sim._white(sy), u, vh


@jax.jit
def _dirns(full_coef, full_invsqrt, acts, mean):
  """(coef · invsqrt) (acts − μ) + μ, neurons × datapoints."""
  return _linalg.mm(_linalg.mm(full_coef, full_invsqrt), acts - mean[:, None]) + mean[:, None]


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
  with _precision(acts1, acts2):
    return _get_cca_similarity(*_inputs(acts1, acts2), epsilon, threshold, compute_coefs,
                               compute_dirns)


def _kept(cov: np.ndarray, epsilon: float) -> np.ndarray:
  """The reference's mask: rescaled variances ≥ epsilon (none of a zero
  covariance)."""
  top = np.abs(cov).max()
  return np.abs(np.diagonal(cov)) >= epsilon * top if top > 0 else np.zeros(len(cov), bool)


def _get_cca_similarity(a1, a2, epsilon, threshold, compute_coefs, compute_dirns):
  """`get_cca_similarity` on checked neurons × datapoints arrays (`_inputs`)."""
  epsilon, threshold = float(epsilon), float(threshold)
  sxx, syy, sxy, mu1, mu2 = _moments(a1, a2)
  # float32 products; where directions are returned, float64 decompositions
  # of the d × d covariances on a CPU: their signs, on which the reference's
  # PWCCA depends, come out as numpy's float64 SVD gives them. Coefficients
  # alone need no signs and keep float32 (at 2 048 × 50 000: 2.4 s → 1.5 s of
  # decompositions, every coefficient within 3e-5 of float64).
  wide = (jax.default_backend() == "cpu" and a1.dtype == np.float32
          and (compute_coefs or compute_dirns))
  with jax.enable_x64(True) if wide else contextlib.nullcontext():
    if wide:
      sxx, syy, sxy = (np.asarray(a, np.float64) for a in (sxx, syy, sxy))
    return _decompose(a1, a2, sxx, syy, sxy, mu1, mu2, epsilon, threshold, compute_coefs,
                      compute_dirns)


def _decompose(a1, a2, sxx, syy, sxy, mu1, mu2, epsilon, threshold, compute_coefs,
               compute_dirns):
  """The rest of `_get_cca_similarity`, from the covariances on."""
  out = {}
  if not (compute_coefs or compute_dirns):
    # Coefficients alone: the diagonally preconditioned whitening (`cca`).
    res = _cca(sxx, syy, sxy, epsilon=epsilon, threshold=threshold)
    kx, ky = np.asarray(res.x_keep), np.asarray(res.y_keep)
    s = np.asarray(res.coefficients)[:int(res.num_coefficients)]
    mean, total = np.asarray(res.mean), np.asarray(res.sum)
  else:
    # The reference rescales, then crops; cropping first is the same: the
    # largest |entry| of a covariance is a variance, and that neuron is kept.
    sxx, syy, sxy = (np.asarray(a) for a in (sxx, syy, sxy))
    kx, ky = _kept(sxx, epsilon), _kept(syy, epsilon)
    if kx.any() and ky.any():
      s, mean, total, inv_x, inv_y, u, vh = (np.asarray(a) for a in _directions(
          sxx[np.ix_(kx, kx)], syy[np.ix_(ky, ky)], sxy[np.ix_(kx, ky)], epsilon, threshold))
      out.update(coef_x=u.T, invsqrt_xx=inv_x, full_coef_x=_full(u.T, kx),
                 full_invsqrt_xx=_full(inv_x, kx), coef_y=vh, invsqrt_yy=inv_y,
                 full_coef_y=_full(vh, ky), full_invsqrt_yy=_full(inv_y, ky),
                 neuron_means1=mu1[:, None], neuron_means2=mu2[:, None])
  if not kx.any() or not ky.any():
    return _zero_dict(compute_dirns, a1.shape[1])
  if compute_dirns:
    out["cca_dirns1"] = np.asarray(_dirns(*(out[k].astype(a1.dtype) for k in (
        "full_coef_x", "full_invsqrt_xx")), a1, mu1))
    out["cca_dirns2"] = np.asarray(_dirns(*(out[k].astype(a2.dtype) for k in (
        "full_coef_y", "full_invsqrt_yy")), a2, mu2))
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
    with fewer kept neurons (x on a tie), and the coefficients (numpy). See
    the module docstring for the reference's construction, reproduced here.
  """
  with _precision(acts1, acts2):
    a1, a2 = _inputs(acts1, acts2)
    res = _get_cca_similarity(a1, a2, epsilon, 0.98, True, False)
    if "coef_x" not in res:  # every neuron of a side removed: the reference's zero dict
      raise ValueError("every neuron of one side was removed by epsilon; PWCCA is"
                       " undefined (the reference fails here too).")
    kx, ky = res["x_idxs"], res["y_idxs"]
    if kx.sum() <= ky.sum():
      coef, acts, mean = res["coef_x"], a1[kx], res["neuron_means1"][kx, 0]
      source = acts
    else:
      coef, acts, mean = res["coef_y"], a2[ky], res["neuron_means2"][ky, 0]
      # The reference builds y's directions from acts1's rows (equal widths).
      source = a1[ky] if a1.shape[0] == a2.shape[0] else acts
    w = _pw_weights(coef.astype(acts.dtype), source, acts, mean)
    coefs = res["cca_coef1"]
    w = np.asarray(w)
    return np.sum(w * coefs), w, coefs


@jax.jit
def _pw_weights(coef, source, acts, mean):
  """The reference's PWCCA weights: directions ``coef (source − μ) + μ``,
  orthonormalised by QR, then Σ over neurons of |Pᵀ acts| (uncentred),
  normalised. `source` and `acts` are the same rows except in the
  reference's y branch."""
  dirns = _linalg.mm(coef, (source - mean[:, None])) + mean[:, None]
  p, _ = jnp.linalg.qr(dirns.T)
  w = jnp.sum(jnp.abs(_linalg.mm(p.T, acts.T)), axis=1)
  return w / jnp.sum(w)


__all__ = ["compute_pwcca", "get_cca_similarity"]
