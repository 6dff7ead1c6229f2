"""Representational similarity analysis: dissimilarity matrices and their comparison.

An RDM holds, for every pair of conditions (datapoints, or class means), how
different their activation patterns are. Two networks (or a network and a
brain) are compared by comparing their RDMs. The conventions are rsatoolbox's
(Nili et al. 2014; Diedrichsen et al. 2021), so numbers carry over:

* ``"euclidean"`` — squared Euclidean distance per channel,
  ``‖xᵢ − xⱼ‖² / p``;
* ``"correlation"`` — ``1 − r(xᵢ, xⱼ)``, the Pearson correlation of the two
  patterns across channels;
* ``"crossvalidated"`` — the cross-validated squared Euclidean distance
  (rsatoolbox's crossnobis with identity noise): patterns measured in K
  independent folds ``[K, n, p]``; each fold's differences are multiplied by
  the differences of the mean of the other folds, averaged over folds.
  Noise adds nothing on average, so unrelated patterns score ≈ 0 (and can
  be negative).

Comparisons of the upper triangles (`compare`): ``"cosine"``, ``"corr"``
(Pearson), ``"cosine_cov"`` (whitened cosine: the cosine of the
double-centred matrices ``−½ H D H``, Diedrichsen et al.'s whitening under
i.i.d. pattern noise) and ``"spearman"``.

`compare` never forms an n × n matrix for cosine, corr and cosine_cov: it
walks blocks of rows (`lax.map`), computing each block of both RDMs from the
patterns and keeping only running sums — memory O(block · n), so n = 50 000
datapoints fit. Spearman needs the ranks of all n(n − 1)/2 entries and is
limited to n ≤ 8 192.

References:
  Nili et al., "A toolbox for representational similarity analysis", PLoS
  Comput. Biol. 10 (2014); Diedrichsen et al., "Comparing representational
  geometries using whitened unbiased-distance-matrix similarity", Neurons,
  Behavior, Data analysis and Theory 5 (2021).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from rainbow_jax import _precision
from rainbow_jax import _checks

_HP = _precision.STATS  # float32-exact products on every backend
RDM_METHODS = ("euclidean", "correlation", "crossvalidated")
COMPARE_METHODS = ("cosine", "corr", "cosine_cov", "spearman")
SPEARMAN_MAX_N = 8192


def _check_patterns(x, name: str, method: str) -> Array:
  _checks.check_choice(method, RDM_METHODS, "rdm method")
  rank = 3 if method == "crossvalidated" else 2
  what = "([folds, conditions, channels])" if rank == 3 else "([conditions, channels])"
  _checks.check_rank(x, rank, name, what)
  _checks.check_floating(x, name)
  _checks.check_finite(x, name)
  if rank == 3 and x.shape[0] < 2:
    raise ValueError(f"{name}: cross-validation needs ≥ 2 folds, got {x.shape[0]}.")
  if x.shape[-2] < 3:
    raise ValueError(f"{name}: need ≥ 3 conditions, got {x.shape[-2]}.")
  x = jnp.asarray(x)
  if method == "correlation":
    x = x - jnp.mean(x, axis=1, keepdims=True)
    norm = jnp.linalg.norm(x, axis=1, keepdims=True)
    x = x / jnp.where(norm > 0, norm, 1)
  return x


def _rows(x: Array, method: str, start, b: int, n: int) -> Array:
  """Rows ``start … start + b`` of the RDM of prepared patterns `x` ([b, n])."""
  if method == "crossvalidated":
    k, _, p = x.shape
    s = jnp.sum(x, axis=0)  # [n, p]
    blk = lax.dynamic_slice_in_dim(x, start, b, axis=1)  # [K, b, p]
    c = (jnp.matmul(jnp.sum(blk, 0), s.T, precision=_HP)
         - jnp.einsum("kbp,knp->bn", blk, x, precision=_HP))  # Σ_{f≠g} x_f,i · x_g,j
    diag = jnp.sum(s * s, axis=1) - jnp.einsum("knp,knp->n", x, x, precision=_HP)
    dblk = lax.dynamic_slice_in_dim(diag, start, b)
    return (dblk[:, None] + diag[None, :] - 2 * c) / (k * (k - 1) * p)
  blk = lax.dynamic_slice_in_dim(x, start, b, axis=0)
  ip = jnp.matmul(blk, x.T, precision=_HP)
  if method == "correlation":
    return 1 - ip
  sq = jnp.sum(x * x, axis=1)
  return (lax.dynamic_slice_in_dim(sq, start, b)[:, None] + sq[None, :] - 2 * ip) / x.shape[1]


def _pad_conditions(x: Array, method: str, pad: int) -> Array:
  axis = 1 if method == "crossvalidated" else 0
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths)


@functools.partial(jax.jit, static_argnames=("method",))
def _rdm(x: Array, *, method: str) -> Array:
  n = x.shape[-2]
  d = _rows(x, method, 0, n, n)
  return jnp.where(jnp.eye(n, dtype=bool), 0, d)


def rdm(x: Float[Array, "... n p"], method: str = "euclidean") -> Float[Array, "n n"]:
  """The full ``[n, n]`` representational dissimilarity matrix (zero diagonal).

  Args:
    x: ``[n, p]`` patterns (conditions × channels), or ``[K, n, p]`` for
      ``method="crossvalidated"`` (the same conditions measured in K folds).
    method: ``"euclidean"``, ``"correlation"`` or ``"crossvalidated"``.

  Returns:
    ``[n, n]`` symmetric RDM, rsatoolbox's values (see the module docstring).
    For large n use `compare`, which never forms it.
  """
  return _rdm(_check_patterns(x, "x", method), method=method)


def upper(d: Float[Array, "n n"]) -> Float[Array, " m"]:
  """The upper triangle of an RDM, row by row (rsatoolbox's vector order)."""
  i, j = jnp.triu_indices(d.shape[0], k=1)
  return d[i, j]


def _ranks(v: Array) -> Array:
  """Ranks 1…m with ties given their average rank (scipy's ``rankdata``)."""
  order = jnp.argsort(v)
  s = v[order]
  lo = jnp.searchsorted(s, s, side="left")
  hi = jnp.searchsorted(s, s, side="right")
  avg = (lo + hi + 1) / 2.0
  return jnp.zeros_like(avg).at[order].set(avg)


def _cos(a: Array, b: Array) -> Array:
  return jnp.dot(a, b, precision=_HP) / jnp.sqrt(jnp.dot(a, a, precision=_HP)
                                                  * jnp.dot(b, b, precision=_HP))


@functools.partial(jax.jit, static_argnames=("rdm1", "rdm2", "method", "block"))
def _compare(x: Array, y: Array, *, rdm1: str, rdm2: str, method: str, block: int) -> Array:
  n = x.shape[-2]
  if method == "spearman":
    a, b = upper(_rdm(x, method=rdm1)), upper(_rdm(y, method=rdm2))
    ra, rb = _ranks(a), _ranks(b)
    return _cos(ra - jnp.mean(ra), rb - jnp.mean(rb))
  bsz = min(block, n)
  pad = -n % bsz
  xp, yp = _pad_conditions(x, rdm1, pad), _pad_conditions(y, rdm2, pad)
  starts = jnp.arange((n + pad) // bsz) * bsz
  cols = jnp.arange(n + pad)

  def one(start):
    r = start + jnp.arange(bsz)
    keep = (r[:, None] < n) & (cols[None, :] < n)
    upper_mask = keep & (cols[None, :] > r[:, None])
    off = keep & (cols[None, :] != r[:, None])
    d1 = jnp.where(off, _rows(xp, rdm1, start, bsz, n + pad), 0)
    d2 = jnp.where(off, _rows(yp, rdm2, start, bsz, n + pad), 0)
    u1, u2 = jnp.where(upper_mask, d1, 0), jnp.where(upper_mask, d2, 0)
    sums = jnp.stack([jnp.sum(u1), jnp.sum(u2), jnp.sum(u1 * u1), jnp.sum(u2 * u2),
                      jnp.sum(u1 * u2)])
    return sums, jnp.sum(d1, axis=1), jnp.sum(d2, axis=1)

  sums, r1, r2 = lax.map(one, starts)
  s1, s2, s11, s22, s12 = jnp.sum(sums, axis=0)
  m = n * (n - 1) / 2
  if method == "cosine":
    return s12 / jnp.sqrt(s11 * s22)
  if method == "corr":
    cov = s12 - s1 * s2 / m
    return cov / jnp.sqrt((s11 - s1 * s1 / m) * (s22 - s2 * s2 / m))
  # cosine_cov: ⟨H D₁ H, H D₂ H⟩ = ΣD₁∘D₂ − (2/n) r₁·r₂ + (ΣD₁)(ΣD₂)/n², D symmetric.
  r1, r2 = r1.ravel(), r2.ravel()  # row sums over the full matrix (padding is 0)

  nf = float(n)  # a Python float: n² overflows int32 from n = 46 341

  def inner(sab, ra, rb):
    return 2 * sab - 2 * jnp.dot(ra, rb, precision=_HP) / nf + jnp.sum(ra) * jnp.sum(rb) / nf**2

  return inner(s12, r1, r2) / jnp.sqrt(inner(s11, r1, r1) * inner(s22, r2, r2))


def compare(x: Float[Array, "... n px"], y: Float[Array, "... n py"], *,
            method: str = "cosine", rdm1: str = "euclidean", rdm2: str | None = None,
            block: int = 1024) -> Float[Array, ""]:
  """Compares the RDMs of two sets of patterns of the same n conditions.

  Args:
    x: ``[n, p_x]`` patterns (``[K, n, p_x]`` for a cross-validated RDM).
    y: ``[n, p_y]`` patterns (likewise).
    method: ``"cosine"``, ``"corr"``, ``"cosine_cov"`` (whitened cosine) or
      ``"spearman"`` (rsatoolbox's ``compare`` methods of those names).
    rdm1: RDM method of x (`rdm`); rdm2: of y (default: the same).
    block: rows of the RDMs formed at a time (memory O(block · n)).

  Returns:
    ``[]`` similarity of the two RDMs' upper triangles.

  Raises:
    ValueError: unknown methods, shapes that disagree on n, NaN/Inf, fewer
      than 3 conditions, or spearman with n > 8 192.
  """
  rdm2 = rdm1 if rdm2 is None else rdm2
  _checks.check_choice(method, COMPARE_METHODS, "method")
  xp, yp = _check_patterns(x, "x", rdm1), _check_patterns(y, "y", rdm2)
  if xp.shape[-2] != yp.shape[-2]:
    raise ValueError(f"x has {xp.shape[-2]} conditions and y {yp.shape[-2]}; RDMs of the"
                     " same conditions are compared.")
  if method == "spearman" and xp.shape[-2] > SPEARMAN_MAX_N:
    raise ValueError(f"spearman ranks all n(n−1)/2 distances; n = {xp.shape[-2]} >"
                     f" {SPEARMAN_MAX_N}. Use method='corr' or 'cosine_cov' (blocked).")
  return _compare(xp, yp, rdm1=rdm1, rdm2=rdm2, method=method, block=block)


__all__ = ["COMPARE_METHODS", "RDM_METHODS", "SPEARMAN_MAX_N", "compare", "rdm", "upper"]
