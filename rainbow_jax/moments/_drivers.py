"""Drivers of `Moments` over data: a host iterator (`accumulate`), a stacked
array (`accumulate_stack`), and every layer of one or two models in one pass
(`layer_moments`)."""

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

from rainbow_jax import _checks

from rainbow_jax.moments._state import (Moments, Pair, _as_list, _default_names, check, init,
                                        update)

Array = jax.Array
_MAX_COUNT = 2**31 - 1  # int32 counts


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
    widths = [(0, size - np.shape(leaf)[0])] + [(0, 0)] * (np.ndim(leaf) - 1)
    if isinstance(leaf, jax.Array):
      return jnp.pad(leaf, widths)
    return np.pad(np.asarray(leaf), widths)  # host data padded on the host: no program
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
    _checks.check_min_rank(f, 2, name)
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


@jax.jit
def _copy(tree):
  """Fresh device buffers of every leaf, one compiled program for the tree."""
  return jax.tree_util.tree_map(jnp.copy, tree)


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
  state = _copy(state)  # own buffers: donated.
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
  sequences: str = "tokens"

  def __call__(self, params, batch):
    feats = list(_as_list(self.apply1(params[0], batch)))
    if self.apply2 is not None:
      feats += list(_as_list(self.apply2(params[1], batch)))
    if self.sequences == "mean":
      feats = [f.mean(axis=1) if f.ndim == 3 else f for f in feats]
    elif self.sequences == "cls":
      feats = [f[:, 0] if f.ndim == 3 else f for f in feats]
    return feats


SEQUENCES = ("tokens", "mean", "cls")
"""How `layer_moments` reads a token sequence ``[B, T, d]``."""


def layer_moments(
    apply_fn: Callable,
    params: Any,
    batches: Iterable[Any],
    *,
    params2: Any | None = None,
    apply_fn2: Callable | None = None,
    cross: str = "matched",
    sequences: str = "tokens",
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
    sequences: how a layer input of rank 3, a token sequence ``[B, T, d]``,
      enters: ``'tokens'`` (default) every token is a sample, as conv
      positions are (what alignment and rainbow sampling need: the layer's
      weights act on each token); ``'mean'`` one vector per sequence, its
      tokens averaged; ``'cls'`` its first (class) token. Padding tokens:
      pass a ``[B, T]`` mask to `update` from your own loop.
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
    >>> from rainbow_jax import moments
    >>> moments.covariance(m, 0, 2).shape
    (3, 3)
  """
  _checks.check_choice(sequences, SEQUENCES, "sequences")
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
    fn = _TwoModels(apply_fn, None, sequences)
    pairs, counts = (), (n1,)
  else:
    apply_fn2 = apply_fn if apply_fn2 is None else apply_fn2
    n2 = len(_as_list(jax.eval_shape(apply_fn2, params2, first)))
    fn = _TwoModels(apply_fn, apply_fn2, sequences)
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
