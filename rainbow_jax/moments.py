"""Streaming first and second moments of feature maps, mergeable across shards.

The state, `Moments`, holds for each of several feature maps (layers of one or
two networks) the sample count, the mean and the *centered* sum of outer
products ``M2 = Σ (x − μ)(x − μ)ᵀ``, plus centered cross sums
``Σ (x − μₓ)(y − μ_y)ᵀ`` for chosen pairs of maps. Batches are folded in with
the pairwise update of Chan, Golub & LeVeque, with Kahan-compensated
accumulators, so float32 statistics over millions of samples keep float32
accuracy, and both the tutorial's uncentered second moment E[φφᵀ] and the
centered covariance come out of the same state.

The functions follow the optax pattern: `init` → `update` (jittable, drops
into `lax.scan`) → `merge` / `psum_merge` / `process_merge` (across
shards, devices or hosts) →
`covariance` / `mean`. `accumulate` drives a host iterator of batches with
one compiled update (a ragged last batch is padded and masked, so it is
counted exactly and compiles nothing new); `accumulate_stack` scans an
on-device stack of batches.

Conventions: a feature map of shape ``[batch, features]`` is used as is; a
conv map ``[batch, height, width, channels]`` (Flax's NHWC) has its spatial
positions folded into the samples, ``[batch * height * width, channels]``.

References:
  Chan, Golub & LeVeque, "Algorithms for computing the sample variance:
  analysis and recommendations", The American Statistician 37 (1983).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Sequence
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
_MAX_COUNT = 2**31 - 1


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
  rows of one example are contiguous).

  Raises:
    ValueError: on a rank other than 2 or 4.
    TypeError: on a non-floating dtype.
  """
  _checks.check_rank(x, (2, 4), name, "([samples, features] or NHWC)")
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
      if x.shape[0] != mask.shape[0]:
        raise ValueError(
            f"{name}: batch of {x.shape[0]} examples but mask of shape"
            f" {tuple(mask.shape)}."
        )
      w = jnp.repeat(mask.astype(xf.dtype), math.prod(x.shape[1:-1]))
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
    features: one array per map, each ``[B, d_i]`` or ``[B, H, W, d_i]``
      (a single array when the state has one map).
    mask: optional ``[B]`` bool; examples where it is False are ignored
      (used to pad a ragged last batch to the compiled shape).

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


# ---------------------------------------------------------------- drivers


def _identity(batch):
  return batch


def _features_fn(fn):
  return _identity if fn is None else fn


def _leading(batch) -> int:
  leaves = jax.tree_util.tree_leaves(batch)
  if not leaves:
    raise ValueError("a batch holds no arrays.")
  sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in leaves}
  if len(sizes) != 1 or -1 in sizes:
    raise ValueError(
        "every array of a batch needs the same leading (batch) size, got"
        f" shapes {[tuple(np.shape(l)) for l in leaves]}."
    )
  return sizes.pop()


def _pad(batch, size: int):
  def pad(leaf):
    leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
    widths = [(0, size - leaf.shape[0])] + [(0, 0)] * (leaf.ndim - 1)
    return jnp.pad(leaf, widths)
  return jax.tree_util.tree_map(pad, batch)


def init_for(
    fn: Callable | None,
    example_batch: Any,
    *,
    cross: Sequence[Pair] = (),
    names: Sequence[str] | None = None,
    dtype: Any = jnp.float32,
) -> Moments:
  """`init` with widths read from ``fn(example_batch)`` (shapes only)."""
  return _init_from_shapes(jax.eval_shape(_features_fn(fn), example_batch),
                           cross=cross, names=names, dtype=dtype)


def _init_from_shapes(shapes, *, cross, names, dtype) -> Moments:
  feats = _as_list(shapes)
  names = _default_names(names, len(feats))
  for f, name in zip(feats, names):
    _checks.check_rank(f, (2, 4), name)
    _checks.check_floating(f, name)
  return init([f.shape[-1] for f in feats], cross=cross, names=names,
              dtype=dtype)


@dataclasses.dataclass(frozen=True)
class _NoParams:
  """Adapts ``fn(batch)`` to the ``fn(params, batch)`` form of the step."""

  fn: Callable

  def __call__(self, params, batch):
    del params
    return self.fn(batch)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _jit_step(fn, params, state, batch, mask):
  return update(state, fn(params, batch), mask=mask)


# Batches a host-driven loop lets run ahead of the device before it waits
# (`accumulate`, `train.fit_stream`): each queued step holds its batch.
IN_FLIGHT = 8


def accumulate(
    batches: Iterable[Any],
    fn: Callable | None = None,
    *,
    params: Any = None,
    cross: Sequence[Pair] = (),
    names: Sequence[str] | None = None,
    state: Moments | None = None,
    dtype: Any = jnp.float32,
    sharding: jax.sharding.Sharding | None = None,
    progress: bool | str = False,
    total: int | None = None,
) -> Moments:
  """Accumulates statistics over a host iterator of batches.

  Each batch (an array or a pytree of arrays with a common leading batch
  size) is mapped by ``fn`` to the feature maps, and folded in by one
  compiled step that runs ``fn`` and `update` together, so activations never
  leave the device. A batch smaller than the first (the ragged last batch)
  is zero-padded to the first batch's size and masked: it is counted
  exactly and reuses the compiled step.

  Args:
    batches: iterable of batches.
    fn: maps a batch to one feature map or a list of them; default: the
      batch itself. With `params` given it is called ``fn(params, batch)``
      and `params` are traced arguments (pass weights this way rather than
      closing over them, so new weights reuse the compiled step).
    params: optional pytree of arrays passed to `fn`.
    cross: cross pairs to keep (see `init`).
    names: a name per map, for error messages.
    state: statistics to continue from (default: fresh).
    dtype: accumulator dtype for a fresh state.
    sharding: optional sharding to place each batch with (e.g.
      ``NamedSharding(mesh, P('data'))``) for data-parallel accumulation; the
      result equals the single-device one.
    progress: show a tqdm progress bar (a string sets its description).
    total: number of batches, for the progress bar.

  Returns:
    The checked statistics.

  Raises:
    ValueError: an empty iterator, zero samples, NaN/Inf in a map (named), or
      inconsistent shapes.
  """
  if params is None:
    step_fn = _NoParams(_features_fn(fn))
  else:
    step_fn = fn
  it = iter(batches)
  try:
    first = next(it)
  except StopIteration:
    raise ValueError("the iterator of batches is empty.") from None
  size = _leading(first)
  shapes = jax.eval_shape(functools.partial(step_fn, params), first)
  if state is None:
    state = _init_from_shapes(shapes, cross=cross, names=names, dtype=dtype)
  state = jax.tree_util.tree_map(jnp.array, state)  # own buffers: donated.
  # Rows per example of each map (conv positions), to guard the int32 count.
  rows_per_example = max(math.prod(f.shape[1:-1]) for f in _as_list(shapes))
  rows = max(int(c) for c in state.count)
  bar = None
  if progress:
    from tqdm.auto import tqdm
    desc = progress if isinstance(progress, str) else "moments"
    bar = tqdm(total=total, desc=desc, unit="batch")
  batch, done = first, 0
  while True:
    n = _leading(batch)
    rows += n * rows_per_example
    if rows > _MAX_COUNT:
      raise ValueError(
          f"more than {_MAX_COUNT} samples (rows) in one statistic overflow its"
          " int32 count; accumulate parts of the data separately.")
    if n < size:
      mask = np.arange(size) < n
      batch = _pad(batch, size)
    else:
      mask = np.ones(n, bool)
    if sharding is not None:
      batch = jax.device_put(batch, sharding)
      mask = jax.device_put(mask, sharding)
    state = _jit_step(step_fn, params, state, batch, mask)
    done += 1
    if done % IN_FLIGHT == 0:
      # Steps are dispatched asynchronously, each holding its batch until it
      # runs: without a wait, a fast reader queues the whole dataset.
      jax.block_until_ready(state.count)
    if bar is not None:
      bar.update(1)
    try:
      batch = next(it)
    except StopIteration:
      break
  if bar is not None:
    bar.close()
  return check(state)


def _default_group(state: Moments, rows: int) -> int:
  """Batches per scan step: wide maps fold several batches into one update.

  Each update costs a few elementwise passes over every ``[d, d]``
  accumulator (Chan's correction, Kahan terms) besides its GEMM. For
  d ≥ 2048 those passes are a fifth of the time of a 1 024-row batch on a
  2-core CPU; grouping ≈ 2.5·d rows per update measured 2.07 → 1.69 s for
  51 200 samples at d = 2048, while for d ≤ 1024 grouping was no faster.
  """
  d = max(state.dims)
  if d < 2048 or rows <= 0:
    return 1
  return max(1, -(-5 * d // (2 * rows)))


def accumulate_stack(
    batches: Any,
    fn: Callable | None = None,
    *,
    mask: Array | None = None,
    cross: Sequence[Pair] = (),
    names: Sequence[str] | None = None,
    state: Moments | None = None,
    dtype: Any = jnp.float32,
    group: int | None = None,
) -> Moments:
  """Accumulates statistics over an on-device stack of batches with `lax.scan`.

  Pure and jittable (wrap it in `jax.jit` with `fn` static); call `check` on
  the result outside of jit to catch NaN/Inf and empty statistics.

  Args:
    batches: array or pytree whose leaves are ``[num_batches, B, ...]``.
    fn: maps one batch to its feature map(s); default: identity.
    mask: optional ``[num_batches, B]`` bool of valid examples.
    cross, names, state, dtype: as in `accumulate`.
    group: batches folded into one update (``fn`` is vmapped over them and
      their rows concatenated); default: 1, or ≈ 2.5·d rows for maps of
      d ≥ 2048 features (see `_default_group`). Batches that do not fill a
      last group are folded one by one. The result is the same up to
      float rounding.

  Returns:
    The statistics after all batches.
  """
  fn = _features_fn(fn)
  leaves = jax.tree_util.tree_leaves(batches)
  if not leaves or leaves[0].ndim < 2:
    raise ValueError("batches must be a stack [num_batches, B, ...] (or a pytree of them).")
  num, rows = leaves[0].shape[:2]
  if state is None:
    example = jax.tree_util.tree_map(lambda x: x[0], batches)
    state = init_for(fn, example, cross=cross, names=names, dtype=dtype)
  group = _default_group(state, rows) if group is None else int(group)
  if group < 1:
    raise ValueError(f"group must be a positive number of batches, got {group}.")
  if mask is None:
    mask = jnp.ones((num, rows), bool)

  def body(s, xs):
    batch, m = xs
    return update(s, fn(batch), mask=m), None

  def grouped_body(s, xs):
    batch, m = xs  # leaves [group, B, ...]
    feats = _as_list(jax.vmap(fn)(batch))
    feats = [f.reshape((-1,) + f.shape[2:]) for f in feats]
    return update(s, feats, mask=m.reshape(-1)), None

  full = (num // group) * group if group > 1 else 0
  if full:
    lead = lambda x: x[:full].reshape((full // group, group) + x.shape[1:])
    state, _ = lax.scan(grouped_body, state,
                        jax.tree_util.tree_map(lead, (batches, mask)))
  if full < num:
    rest = jax.tree_util.tree_map(lambda x: x[full:], (batches, mask))
    state, _ = lax.scan(body, state, rest)
  return state


def layer_names(num_layers: Sequence[int]) -> tuple[str, ...]:
  """Names ``model{m}/layer{l}`` for the maps of one or two models."""
  return tuple(
      f"model{m}/layer{l}" for m, n in enumerate(num_layers) for l in range(n)
  )


def layer_pairs(n1: int, n2: int, cross: str = "matched") -> tuple[Pair, ...]:
  """Cross pairs between model 0's layers ``0..n1-1`` and model 1's layers.

  Model 1's layer ``l`` is map ``n1 + l``. ``cross='matched'`` pairs layer
  ``l`` with layer ``l`` (needs ``n1 == n2``); ``'all'`` pairs every layer of
  model 0 with every layer of model 1; ``'none'`` keeps no cross moments.
  """
  if cross == "none":
    return ()
  if cross == "matched":
    if n1 != n2:
      raise ValueError(
          f"cross='matched' needs the same number of layers, got {n1}, {n2}."
      )
    return tuple((l, n1 + l) for l in range(n1))
  if cross == "all":
    return tuple((a, n1 + b) for a in range(n1) for b in range(n2))
  raise ValueError(f"cross must be 'matched', 'all' or 'none', got {cross!r}.")


@dataclasses.dataclass(frozen=True)
class _TwoModels:
  """Features of two models; params are traced arguments, never constants."""

  apply1: Callable
  apply2: Callable | None

  def __call__(self, params, batch):
    feats = list(_as_list(self.apply1(params[0], batch)))
    if self.apply2 is not None:
      feats += list(_as_list(self.apply2(params[1], batch)))
    return feats


def layer_moments(
    apply_fn: Callable,
    params: Any,
    batches: Iterable[Any],
    *,
    params2: Any | None = None,
    apply_fn2: Callable | None = None,
    cross: str = "matched",
    **kwargs,
) -> Moments:
  """Statistics of every layer of one or two models in one pass over data.

  Args:
    apply_fn: a `rainbow_jax.network.Network` (its weight layers' inputs
      are the maps), or ``apply_fn(params, batch) -> [activation per
      layer]``, each ``[B, d]`` or ``[B, H, W, C]``.
    params: the first model's parameters (a Network's variables).
    batches: iterable of input batches.
    params2: the second model's parameters (enables cross moments).
    apply_fn2: the second model's Network or function (default `apply_fn`).
    cross: ``'matched'``, ``'all'`` or ``'none'`` (see `layer_pairs`).
    **kwargs: passed to `accumulate` (progress, sharding, ...).

  Returns:
    `Moments` whose map ``l`` is model 0's layer ``l`` and, with a second
    model of ``n1`` first-model layers, map ``n1 + l`` its layer ``l``; use
    `covariance` for any self or kept cross pair.

  Examples:
    >>> import jax.numpy as jnp
    >>> f = lambda p, x: [x @ p, jnp.maximum(x @ p, 0)]
    >>> xs = [jnp.ones((4, 3)), jnp.ones((2, 3))]
    >>> m = layer_moments(f, jnp.eye(3), xs, params2=2 * jnp.eye(3))
    >>> covariance(m, 0, 2).shape
    (3, 3)
  """
  names = [None, None]
  if hasattr(apply_fn, "layer_inputs"):
    names[0], apply_fn = apply_fn.names, apply_fn.layer_inputs
  if hasattr(apply_fn2, "layer_inputs"):
    names[1], apply_fn2 = apply_fn2.names, apply_fn2.layer_inputs
  elif apply_fn2 is None:
    names[1] = names[0]
  batches = iter(batches)
  try:
    first = next(batches)
  except StopIteration:
    raise ValueError("the iterator of batches is empty.") from None
  n1 = len(_as_list(jax.eval_shape(apply_fn, params, first)))
  if params2 is None:
    if apply_fn2 is not None:
      raise ValueError("apply_fn2 given without params2.")
    fn = _TwoModels(apply_fn, None)
    pairs, counts = (), (n1,)
  else:
    apply_fn2 = apply_fn if apply_fn2 is None else apply_fn2
    n2 = len(_as_list(jax.eval_shape(apply_fn2, params2, first)))
    fn = _TwoModels(apply_fn, apply_fn2)
    pairs, counts = layer_pairs(n1, n2, cross), (n1, n2)
  if all(n is not None for n in names[:len(counts)]):
    kwargs.setdefault("names", tuple(f"model{m}/{name}" for m in range(len(counts))
                                     for name in names[m]))
  kwargs.setdefault("names", layer_names(counts))
  return accumulate(
      _chain(first, batches), fn, params=(params, params2), cross=pairs,
      **kwargs)


def _chain(first, rest):
  yield first
  yield from rest


__all__ = [
    "Moments", "init", "update", "batch_moments", "merge", "process_merge", "psum_merge",
    "mean", "covariance",
    "second_moment_trace", "check", "fold", "fold_pair", "init_for", "accumulate",
    "accumulate_stack", "layer_moments", "layer_names", "layer_pairs",
]
