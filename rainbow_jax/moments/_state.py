"""The `Moments` state and its maths: init, update, merge (across devices and
hosts), means and covariances. Pure functions on pytrees."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rainbow_jax import _linalg
from rainbow_jax import _precision
from rainbow_jax import _checks

Array = jax.Array
Pair = tuple[int, int]

_HIGHEST = _precision.STATS  # float32-exact products on every backend


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "count", "mean", "mean_comp", "m2", "m2_comp", "cross", "cross_comp",
        "nonfinite",
    ],
    meta_fields=["pairs", "names"],
)
@dataclasses.dataclass(frozen=True)
class Moments:
  """Streaming sufficient statistics of several feature maps.

  Attributes:
    count: per feature map, ``[]`` int32 number of samples (rows) seen —
      at most 2³¹ − 1 (2.1·10⁹ rows, conv positions included; `accumulate`
      raises before it would overflow).
    mean: per feature map, ``[d_i]`` running mean.
    mean_comp: per feature map, ``[d_i]`` Kahan compensation of `mean`.
    m2: per feature map, ``[d_i, d_i]`` centered sum Σ (x − μ)(x − μ)ᵀ.
    m2_comp: Kahan compensation of `m2` (a scalar 0 when uncompensated).
    cross: per cross pair ``(i, j)``, ``[d_i, d_j]`` centered cross sum.
    cross_comp: Kahan compensation of `cross` (a scalar 0 when uncompensated).
    nonfinite: per feature map, ``[]`` bool, whether a NaN/Inf was seen.
    pairs: static, the ``(i, j)`` feature indices of each `cross` entry.
    names: static, a name per feature map (used in error messages).
  """

  count: tuple[Array, ...]
  mean: tuple[Array, ...]
  mean_comp: tuple[Array, ...]
  m2: tuple[Array, ...]
  m2_comp: tuple[Array, ...]
  cross: tuple[Array, ...]
  cross_comp: tuple[Array, ...]
  nonfinite: tuple[Array, ...]
  pairs: tuple[Pair, ...]
  names: tuple[str, ...]

  @property
  def dims(self) -> tuple[int, ...]:
    """Feature dimension of each map."""
    return tuple(int(m.shape[-1]) for m in self.mean)


def init(
    dims: int | Sequence[int],
    *,
    cross: Sequence[Pair] = (),
    names: Sequence[str] | None = None,
    dtype: Any = jnp.float32,
    compensated: bool = True,
) -> Moments:
  """Empty statistics for feature maps of the given widths.

  Args:
    dims: the feature dimension ``d_i`` of each map (an int for one map).
    cross: pairs ``(i, j)``, ``i != j``, whose cross-moments to keep. Self
      moments of every map are always kept.
    names: a name per map, used in error messages (default ``feature i``).
    dtype: floating accumulator dtype.
    compensated: Kahan-compensate the second-moment sums (default). Costs
      two more ``[d, d]`` arrays and a few elementwise passes per batch;
      without it float32 error grows like √(number of batches)·eps (measured
      ~5e-7 vs ~1e-7 relative over 10⁶ samples in batches of 1 000).

  Returns:
    A `Moments` with zero count.

  Examples:
    >>> import jax.numpy as jnp
    >>> state = init([3, 2], cross=[(0, 1)])
    >>> state.dims, state.pairs
    ((3, 2), ((0, 1),))
  """
  dims = (dims,) if isinstance(dims, int) else tuple(int(d) for d in dims)
  if not dims or any(d <= 0 for d in dims):
    raise ValueError(f"dims must be positive feature widths, got {dims}.")
  if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
    raise TypeError(f"dtype must be floating, got {jnp.dtype(dtype)}.")
  names = _default_names(names, len(dims))
  pairs = tuple((int(i), int(j)) for i, j in cross)
  for i, j in pairs:
    if not (0 <= i < len(dims) and 0 <= j < len(dims)) or i == j:
      raise ValueError(
          f"cross pair {(i, j)} must name two different maps among"
          f" {len(dims)}; self moments are always kept."
      )
  return _zero_state(dims, pairs, names, jnp.dtype(dtype).name, compensated)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _zero_state(dims, pairs, names, dtype, compensated) -> Moments:
  """`init`'s zeros, one compiled program for the whole state."""
  zeros = lambda *shape: jnp.zeros(shape, dtype)
  return Moments(
      count=tuple(jnp.zeros((), jnp.int32) for _ in dims),
      mean=tuple(zeros(d) for d in dims),
      mean_comp=tuple(zeros(d) for d in dims),
      m2=tuple(zeros(d, d) for d in dims),
      m2_comp=tuple(zeros(d, d) if compensated else zeros() for d in dims),
      cross=tuple(zeros(dims[i], dims[j]) for i, j in pairs),
      cross_comp=tuple(zeros(dims[i], dims[j]) if compensated else zeros()
                       for i, j in pairs),
      nonfinite=tuple(jnp.zeros((), bool) for _ in dims),
      pairs=pairs,
      names=names,
  )


def _default_names(names, n):
  if names is None:
    return tuple(f"feature {i}" for i in range(n))
  names = tuple(str(s) for s in names)
  if len(names) != n:
    raise ValueError(f"got {len(names)} names for {n} feature maps.")
  return names


def fold(x: Array, name: str = "features") -> Array:
  """Folds a feature map to ``[samples, features]``.

  ``[B, C]`` is returned as is; ``[B, H, W, C]`` (NHWC) becomes
  ``[B·H·W, C]``, spatial positions counted as samples (row-major, so the
  rows of one example are contiguous); a token sequence ``[B, T, d]``
  becomes ``[B·T, d]``, tokens counted as samples (any number of position
  axes folds the same way).

  Raises:
    ValueError: on a rank below 2.
    TypeError: on a non-floating dtype.
  """
  _checks.check_min_rank(x, 2, name, "([samples, features], NHWC or [B, T, d])")
  _checks.check_floating(x, name)
  return x.reshape(-1, x.shape[-1])


def fold_pair(x: Array, y: Array, names: tuple[str, str] = ("x", "y"), *,
              noun: str = "samples") -> tuple[Array, Array]:
  """`fold` two maps of the same inputs; raises unless their sample counts
  agree and are positive."""
  xf, yf = fold(x, names[0]), fold(y, names[1])
  _checks.check_same_leading([xf, yf], names, noun=f"{noun} (positions count as {noun})"
                             if max(np.ndim(x), np.ndim(y)) > 2 else noun)
  if xf.shape[0] == 0:
    raise ValueError(f"zero {noun}.")
  return xf, yf


def _as_list(features) -> list:
  if isinstance(features, (list, tuple)):
    return list(features)
  return [features]


def _kahan(total: Array, comp: Array, inc: Array) -> tuple[Array, Array]:
  """Adds `inc` to the compensated sum (total, comp); true sum ≈ total − comp.

  A scalar `comp` (statistics initialised with ``compensated=False``) means
  plain summation.
  """
  if comp.ndim == 0 and total.ndim > 0:
    return total + inc, comp
  y = inc - comp
  t = total + y
  return t, (t - total) - y


def _fold_all(state: Moments, features, mask):
  feats = _as_list(features)
  if len(feats) != len(state.mean):
    raise ValueError(
        f"got {len(feats)} feature maps for statistics of {len(state.mean)}"
        f" ({', '.join(state.names)})."
    )
  folded, weights = [], []
  for x, name, d in zip(feats, state.names, state.dims):
    x = jnp.asarray(x)
    xf = fold(x, name)
    if xf.shape[-1] != d:
      raise ValueError(
          f"{name}: expected {d} features, got shape {tuple(x.shape)}."
      )
    if mask is not None:
      if mask.ndim >= x.ndim or x.shape[:mask.ndim] != mask.shape:
        raise ValueError(
            f"{name}: features of shape {tuple(x.shape)} but mask of shape"
            f" {tuple(mask.shape)}; pass a mask [B] per example or, for token"
            " sequences, [B, T] per token."
        )
      w = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - 1 - mask.ndim)),
                           x.shape[:-1]).astype(xf.dtype).reshape(-1)
    else:
      w = None
    folded.append(xf)
    weights.append(w)
  for i, j in state.pairs:
    if folded[i].shape[0] != folded[j].shape[0]:
      raise ValueError(
          f"cross moments of {state.names[i]} and {state.names[j]} need the"
          f" same number of samples, got shapes {tuple(feats[i].shape)} and"
          f" {tuple(feats[j].shape)}."
      )
  return folded, weights


def _fraction(part: Array, whole: Array, dtype) -> Array:
  """part / whole in `dtype` (0 when whole is 0); int / int would be float32."""
  whole_f = jnp.maximum(whole, 1).astype(dtype)
  return jnp.where(whole > 0, part.astype(dtype) / whole_f, 0).astype(dtype)


def _batch_stats(x: Array, w: Array | None, dtype):
  """Count, mean and masked centered rows of one folded batch."""
  x = x.astype(dtype)
  if w is None:
    n = jnp.asarray(x.shape[0], jnp.int32)
    mu = jnp.sum(x, axis=0) / max(x.shape[0], 1)  # an empty batch adds nothing
    xc = x - mu[None, :]
  else:
    n = jnp.sum(w).astype(jnp.int32)
    # Masked rows may hold anything (padding); zero them before summing.
    x = jnp.where(w[:, None] > 0, x, 0)
    mu = jnp.sum(x, axis=0) / jnp.maximum(n, 1).astype(dtype)
    xc = (x - mu[None, :]) * w[:, None].astype(dtype)
  bad = jnp.any(~jnp.isfinite(x))
  return n, mu, xc, bad


def update(
    state: Moments,
    features: Array | Sequence[Array],
    *,
    mask: Array | None = None,
) -> Moments:
  """Folds one batch of feature maps into the statistics.

  Args:
    state: the statistics so far.
    features: one array per map, each ``[B, d_i]``, ``[B, H, W, d_i]`` or
      a token sequence ``[B, T, d_i]`` (a single array when the state has
      one map); positions and tokens count as samples (`fold`).
    mask: optional ``[B]`` bool; examples where it is False are ignored
      (used to pad a ragged last batch to the compiled shape). For token
      sequences it may be ``[B, T]``: padding tokens (False) are ignored.

  Returns:
    The updated statistics. Pure and jittable; non-finite inputs are recorded
    in ``state.nonfinite`` (checked by `check` and the drivers), not raised.

  Raises:
    ValueError: wrong number of maps, wrong width or rank, or cross pairs
      with different sample counts.
    TypeError: a non-floating feature map.
  """
  return merge(state, batch_moments(state, features, mask=mask))


def batch_moments(
    like: Moments,
    features: Array | Sequence[Array],
    *,
    mask: Array | None = None,
) -> Moments:
  """The statistics of one batch alone, shaped like `like` (its maps, pairs
  and names). `update` is ``merge(state, batch_moments(state, batch))``.

  Each map's batch is centred on its own batch mean before the products, so
  a large mean costs no precision (the Chan et al. pairwise scheme).
  """
  dtype = like.mean[0].dtype
  folded, weights = _fold_all(like, features, mask)
  stats = [_batch_stats(x, w, dtype) for x, w in zip(folded, weights)]
  zero = jnp.zeros((), dtype)  # no compensation term in a single batch
  # With a 0/1 mask applied to both sides, masked rows contribute nothing.
  return dataclasses.replace(
      like,
      count=tuple(n for n, _, _, _ in stats),
      mean=tuple(mu for _, mu, _, _ in stats),
      mean_comp=tuple(jnp.zeros_like(mu) for _, mu, _, _ in stats),
      m2=tuple(_linalg.gram(xc) for _, _, xc, _ in stats),
      m2_comp=tuple(zero for _ in stats),
      cross=tuple(jnp.matmul(stats[i][2].T, stats[j][2], precision=_HIGHEST)
                  for i, j in like.pairs),
      cross_comp=tuple(zero for _ in like.pairs),
      nonfinite=tuple(bad for _, _, _, bad in stats),
  )


def _check_compatible(a: Moments, b: Moments) -> None:
  if a.dims != b.dims or a.pairs != b.pairs:
    raise ValueError(
        f"cannot merge statistics of maps {a.dims} with pairs {a.pairs} and"
        f" maps {b.dims} with pairs {b.pairs}."
    )


def merge(a: Moments, b: Moments) -> Moments:
  """Combines the statistics of two disjoint sets of samples (Chan et al.).

  ``merge(update(init, x1), update(init, x2))`` equals the statistics of the
  concatenated samples up to rounding. Jittable.
  """
  _check_compatible(a, b)
  dtype = a.mean[0].dtype
  info = []
  for k in range(len(a.mean)):
    na, nb = a.count[k], b.count[k]
    n = na + nb
    frac_b = _fraction(nb, n, dtype)
    mua = a.mean[k] - a.mean_comp[k]
    mub = b.mean[k] - b.mean_comp[k]
    info.append((n, frac_b, na.astype(dtype) * frac_b, mub - mua))

  def combine(sa, ca, sb, cb, i, j):
    # M2 = M2_a + M2_b + (n_a n_b / n) δᵢ δⱼᵀ, δ = μ_b − μ_a.
    sb = sb if cb.ndim == 0 else sb - cb
    inc = sb + info[i][2] * jnp.outer(info[i][3], info[j][3])
    return _kahan(sa, ca, inc)

  means, mean_comps, m2s, m2_comps = [], [], [], []
  for k in range(len(a.mean)):
    mean, comp = _kahan(a.mean[k], a.mean_comp[k], info[k][3] * info[k][1])
    m2, m2c = combine(a.m2[k], a.m2_comp[k], b.m2[k], b.m2_comp[k], k, k)
    means.append(mean)
    mean_comps.append(comp)
    m2s.append(m2)
    m2_comps.append(m2c)
  cross, cross_comp = [], []
  for p, (i, j) in enumerate(a.pairs):
    c, cc = combine(a.cross[p], a.cross_comp[p], b.cross[p], b.cross_comp[p], i, j)
    cross.append(c)
    cross_comp.append(cc)
  return dataclasses.replace(
      a,
      count=tuple(x[0] for x in info),
      mean=tuple(means),
      mean_comp=tuple(mean_comps),
      m2=tuple(m2s),
      m2_comp=tuple(m2_comps),
      cross=tuple(cross),
      cross_comp=tuple(cross_comp),
      nonfinite=tuple(x | y for x, y in zip(a.nonfinite, b.nonfinite)),
  )


def process_merge(state: Moments) -> Moments:
  """Merges the statistics of every JAX process (multi-controller runtime:
  `jax.distributed.initialize` on several hosts, each having accumulated
  only its own shard of the data, e.g. with `accumulate`).

  Every process returns the statistics of all processes' samples: the
  states are gathered (`jax.experimental.multihost_utils.process_allgather`)
  and folded in process order with `merge` (Chan's update, compensated), so
  the result equals one process accumulating every shard in that order, up
  to float rounding. One process: `state` unchanged. Collective: every
  process must call it, with statistics of the same maps and pairs.
  """
  if jax.process_count() == 1:
    return state
  from jax.experimental import multihost_utils

  gathered = multihost_utils.process_allgather(state)  # every leaf [P, ...]
  take = lambda p: jax.tree_util.tree_map(lambda a: jnp.asarray(a[p]), gathered)
  out = take(0)
  for p in range(1, jax.process_count()):
    out = merge(out, take(p))
  return out


def psum_merge(state: Moments, axis_name: Any) -> Moments:
  """Merges per-device statistics across a mapped axis (`shard_map`, `pmap`).

  Every device ends with the statistics of all devices' samples, computed
  with the exact parallel form of Chan's merge:
  ``n = Σ nₖ``, ``μ = Σ nₖ μₖ / n``, ``M2 = Σ (M2ₖ + nₖ (μₖ − μ)(μₖ − μ)ᵀ)``.

  Args:
    state: this device's statistics.
    axis_name: the mapped axis name(s) to reduce over.
  """
  dtype = state.mean[0].dtype
  counts, means, devs = [], [], []
  for k in range(len(state.mean)):
    nk = state.count[k]
    n = lax.psum(nk, axis_name)
    muk = state.mean[k] - state.mean_comp[k]
    nkf = nk.astype(dtype)
    mu = lax.psum(nkf * muk, axis_name) / jnp.maximum(n, 1).astype(dtype)
    counts.append(n)
    means.append(mu)
    devs.append((nkf, muk - mu))

  def reduce_pair(s, c, i, j):
    nkf, di = devs[i]
    dj = devs[j][1]
    return lax.psum((s - c) + nkf * jnp.outer(di, dj), axis_name)

  m2 = tuple(
      reduce_pair(state.m2[k], state.m2_comp[k], k, k)
      for k in range(len(state.mean))
  )
  cross = tuple(
      reduce_pair(state.cross[p], state.cross_comp[p], i, j)
      for p, (i, j) in enumerate(state.pairs)
  )
  nonfinite = tuple(
      lax.psum(b.astype(jnp.int32), axis_name) > 0 for b in state.nonfinite
  )
  return dataclasses.replace(
      state,
      count=tuple(counts),
      mean=tuple(means),
      mean_comp=tuple(jnp.zeros_like(m) for m in means),
      m2=m2,
      m2_comp=tuple(jnp.zeros_like(c) for c in state.m2_comp),
      cross=cross,
      cross_comp=tuple(jnp.zeros_like(c) for c in state.cross_comp),
      nonfinite=nonfinite,
  )


def mean(state: Moments, i: int = 0) -> Array:
  """``[d_i]`` mean of feature map `i`."""
  return state.mean[i] - state.mean_comp[i]


def covariance(
    state: Moments,
    i: int = 0,
    j: int | None = None,
    *,
    centered: bool = False,
    ddof: int = 0,
) -> Array:
  """Second moment or covariance of map `i` (with map `j` if given).

  Args:
    state: accumulated statistics.
    i: first feature map.
    j: second feature map (default `i`); ``(i, j)`` or ``(j, i)`` must have
      been requested as a cross pair in `init`.
    centered: False gives the uncentered second moment E[xyᵀ] (the tutorial's
      convention); True gives the covariance E[(x − μₓ)(y − μ_y)ᵀ].
    ddof: delta degrees of freedom for the centered estimate (divides by
      ``n − ddof``); must be 0 when uncentered.

  Returns:
    ``[d_i, d_j]`` matrix.

  Raises:
    ValueError: with no more samples than ``ddof`` (concrete counts; under
      `jit` the result is then NaN, and `check` and the drivers raise).
  """
  j = i if j is None else j
  if not centered and ddof:
    raise ValueError("ddof applies to the centered covariance only.")
  if i == j:
    m2 = state.m2[i] - state.m2_comp[i]
  elif (i, j) in state.pairs:
    p = state.pairs.index((i, j))
    m2 = state.cross[p] - state.cross_comp[p]
  elif (j, i) in state.pairs:
    p = state.pairs.index((j, i))
    m2 = (state.cross[p] - state.cross_comp[p]).T
  else:
    raise ValueError(
        f"no cross moments of {state.names[i]} and {state.names[j]} were"
        f" kept; pass cross=[({i}, {j})] to init. Kept: {state.pairs}."
    )
  count = state.count[i]
  if not isinstance(count, jax.core.Tracer) and int(count) <= (ddof if centered else 0):
    raise ValueError(f"{state.names[i]}: {int(count)} sample(s) accumulated; the"
                     f" {'covariance with ddof=' + str(ddof) if centered else 'second moment'}"
                     f" needs more than {ddof if centered else 0}.")
  n = count.astype(m2.dtype)
  if centered:
    return m2 / (n - ddof)
  return m2 / n + jnp.outer(mean(state, i), mean(state, j))


def second_moment_trace(state: Moments, i: int = 0) -> Array:
  """E‖x‖² of map `i`: the trace of its uncentered second moment."""
  mu = mean(state, i)
  m2 = state.m2[i] - state.m2_comp[i]
  return jnp.trace(m2) / state.count[i].astype(m2.dtype) + jnp.dot(mu, mu, precision=_HIGHEST)


def check(state: Moments) -> Moments:
  """Raises on statistics that would give a wrong number; returns `state`.

  Host-side (not jittable): reads the counts and non-finite flags.

  Raises:
    ValueError: a map saw NaN/Inf (names the map), or has zero samples.
  """
  bad = [n for n, f in zip(state.names, state.nonfinite) if bool(f)]
  if bad:
    raise ValueError(f"non-finite values (NaN or Inf) in: {', '.join(bad)}.")
  empty = [n for n, c in zip(state.names, state.count) if int(c) == 0]
  if empty:
    raise ValueError(f"zero samples accumulated for: {', '.join(empty)}.")
  return state
