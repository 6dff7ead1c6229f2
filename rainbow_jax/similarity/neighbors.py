"""Local similarity of two representations: mutual k-nearest neighbours and CKNNA.

Global measures (CKA, CCA) compare whole covariance structures; the
platonic-representation measures of Huh et al. (2024) ask whether two
representations put the *same datapoints next to each other*:

* `mutual_knn` — the mean fraction of each datapoint's k nearest neighbours
  (by cosine similarity, self excluded) that the two representations share.
  Independent representations score about k / (n − 1).
* `cknna` — centred kernel nearest-neighbour alignment: the unbiased HSIC
  (Song et al., 2012) of the two inner-product kernels restricted to the
  pairs that are k-nearest neighbours in *both* representations, normalised
  like CKA. With k = n − 1 it is debiased CKA of the (uncentred) kernels.

Neighbours are found blockwise (`knn`): a block of rows against all rows,
``lax.top_k``, next block — memory O(block · n), so n = 50 000 datapoints fit
where the reference code builds n × n matrices. Both measures are jittable
with ``k`` static and plug into `similarity.null_baseline` for z-scores.

References:
  Huh, Cheung, Wang & Isola, "The Platonic Representation Hypothesis",
  ICML 2024 (github.com/minyoungg/platonic-rep).
  Song, Smola, Gretton, Bedo & Borgwardt, "Feature selection via dependence
  maximization", JMLR 13 (2012).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from rainbow_jax import _precision
from rainbow_jax import _checks

_HP = _precision.STATS  # float32-exact products on every backend
METRICS = ("cosine", "ip", "euclidean")


def _prepare(x: Array, name: str, k: int, metric: str) -> Array:
  _checks.check_rank(x, 2, name, "([datapoints, features])")
  _checks.check_floating(x, name)
  _checks.check_finite(x, name)
  n = x.shape[0]
  if not 1 <= k <= n - 1:
    raise ValueError(f"k must be between 1 and n − 1 = {n - 1} for {n} datapoints, got {k}.")
  _checks.check_choice(metric, METRICS, "metric")
  x = jnp.asarray(x)
  if metric == "cosine":  # zero rows stay zero (similar to nothing in particular)
    norm = jnp.linalg.norm(x, axis=1, keepdims=True)
    x = x / jnp.where(norm > 0, norm, 1)
  return x


@functools.partial(jax.jit, static_argnames=("k", "metric", "block"))
def _knn(x: Array, *, k: int, metric: str, block: int) -> tuple[Array, Array]:
  n = x.shape[0]
  b = min(block, n)
  pad = -n % b
  rows = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, b, x.shape[1])
  starts = jnp.arange(rows.shape[0]) * b
  sq = jnp.sum(x * x, axis=1)

  def one(args):
    xb, start = args
    ip = jnp.matmul(xb, x.T, precision=_HP)  # [b, n]
    score = ip
    if metric == "euclidean":  # nearest = largest −‖xᵢ − xⱼ‖² (the row's own ‖xᵢ‖² drops out)
      score = 2 * ip - sq[None, :]
    own = (start + jnp.arange(b))[:, None] == jnp.arange(n)[None, :]
    score = jnp.where(own, -jnp.inf, score)
    _, idx = lax.top_k(score, k)
    return jnp.take_along_axis(ip, idx, axis=1), idx

  vals, idx = lax.map(one, (rows, starts))
  return vals.reshape(-1, k)[:n], idx.reshape(-1, k)[:n]


def knn(x: Float[Array, "n d"], k: int, *, metric: str = "cosine", block: int = 1024
        ) -> tuple[Float[Array, "n k"], Int[Array, "n k"]]:
  """Each datapoint's k nearest other datapoints, blockwise.

  Args:
    x: ``[n, d]`` representation (n ≥ 2).
    k: neighbours per datapoint, 1 ≤ k ≤ n − 1 (static).
    metric: ``"cosine"`` (rows normalised first; the default, as Huh et
      al.), ``"ip"`` (raw inner product, their ``compute_nearest_neighbors``)
      or ``"euclidean"``.
    block: rows compared at a time (memory O(block · n)).

  Returns:
    ``(kernel, indices)``, each ``[n, k]``, nearest first: the inner products
    of the (normalised, for cosine) rows with their neighbours, and the
    neighbours' row indices. Ties go to the lower index.
  """
  xp = _prepare(x, "x", k, metric)
  return _knn(xp, k=k, metric=metric, block=block)


def _overlap(a: Array, b: Array) -> Array:
  """``[n, k, k]`` equality of the neighbour lists of a and b, row by row."""
  return a[:, :, None] == b[:, None, :]


def mutual_knn(x: Float[Array, "n dx"], y: Float[Array, "n dy"], k: int = 10, *,
               metric: str = "cosine", block: int = 1024) -> Float[Array, ""]:
  """Mutual k-nearest-neighbour alignment of two representations.

  ``mean_i |N_x(i) ∩ N_y(i)| / k``, with N(i) the k nearest other datapoints
  of i (`knn`). 1: the same neighbourhoods; ≈ k / (n − 1) for unrelated
  representations. Invariant to rotations and (for cosine) rescaling of
  each representation.

  Args:
    x: ``[n, d_x]``, y: ``[n, d_y]``: the same n datapoints in two
      representations.
    k: neighbours per datapoint (static); Huh et al. use 10.
    metric, block: as in `knn`.

  Returns:
    ``[]`` alignment in [0, 1].
  """
  _checks.check_same_leading([x, y], ("x", "y"), noun="datapoints")
  _, nx = knn(x, k, metric=metric, block=block)
  _, ny = knn(y, k, metric=metric, block=block)
  return jnp.mean(jnp.sum(jnp.any(_overlap(nx, ny), axis=-1), axis=-1) / k)


def _masked_hsic(n: int, nk: Array, vk: Array, nl: Array, vl: Array) -> Array:
  """Unbiased HSIC of K' = M∘K and L' = M∘L, M = [j ∈ N_K(i) ∧ j ∈ N_L(i)],
  from the neighbour lists (nk, nl) and kernel values on them (vk, vl)."""
  eq = _overlap(nk, nl)  # [n, k, k]: position a of N_K(i) is position b of N_L(i)
  valid = jnp.any(eq, axis=-1)
  kv = jnp.where(valid, vk, 0)
  lv = jnp.sum(jnp.where(eq, vl[:, None, :], 0), axis=-1)  # L_ij on N_K(i)'s positions
  # Σ_ij K'_ij L'_ji: pairs kept in both directions (K and L are symmetric).
  kept_nk = jnp.where(valid, nk, -1)
  rows = jnp.arange(n)[:, None, None]
  back = jnp.any(kept_nk[nk] == rows, axis=-1)  # i ∈ kept N(j) for j = nk[i, a]
  trace = jnp.sum(jnp.where(back, kv * lv, 0))
  sum_k, sum_l = jnp.sum(kv), jnp.sum(lv)
  col_k = jax.ops.segment_sum(kv.ravel(), nk.ravel(), num_segments=n)  # 1ᵀK'
  row_l = jnp.sum(lv, axis=1)  # L'1
  m = jnp.asarray(n, vk.dtype)
  return (trace + sum_k * sum_l / ((m - 1) * (m - 2))
          - 2 * jnp.dot(col_k, row_l, precision=_HP) / (m - 2)) / (m * (m - 3))


def cknna(x: Float[Array, "n dx"], y: Float[Array, "n dy"], k: int = 10, *,
          metric: str = "cosine", block: int = 1024) -> Float[Array, ""]:
  """Centred kernel nearest-neighbour alignment (Huh et al., 2024).

  With K = x xᵀ and L = y yᵀ (rows normalised for ``metric='cosine'``) and
  M the pairs (i, j) that are k-nearest neighbours in both:
  ``HSIC_u(M∘K, M∘L) / √(HSIC_u(M_K∘K, M_K∘K) · HSIC_u(M_L∘L, M_L∘L))``,
  HSIC_u the unbiased estimator of Song et al. Computed from the neighbour
  lists alone (O(n·k²) after the blockwise search), never an n × n matrix.

  The reference code adds 1e-6 to the denominator; this does not, so with
  large n (small HSIC values) the two differ by that term. NaN when a
  self-HSIC is negative (possible for the unbiased estimator with very few
  shared neighbours).

  Args:
    x: ``[n, d_x]``, y: ``[n, d_y]``, n ≥ 4.
    k: neighbours per datapoint (static), 2 ≤ k ≤ n − 1.
    metric, block: as in `knn`.

  Returns:
    ``[]`` CKNNA; 1 for a representation against itself.
  """
  _checks.check_same_leading([x, y], ("x", "y"), noun="datapoints")
  n = x.shape[0]
  if n < 4 or k < 2:
    raise ValueError(f"cknna needs n ≥ 4 datapoints and k ≥ 2, got n = {n}, k = {k}.")
  vk, nk = knn(x, k, metric=metric, block=block)
  vl, nl = knn(y, k, metric=metric, block=block)
  kl = _masked_hsic(n, nk, vk, nl, vl)
  kk = _masked_hsic(n, nk, vk, nk, vk)
  ll = _masked_hsic(n, nl, vl, nl, vl)
  return kl / jnp.sqrt(kk * ll)


__all__ = ["METRICS", "cknna", "knn", "mutual_knn"]
