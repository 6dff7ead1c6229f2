"""Input validation shared by the public entry points, built on chex.

chex does the checking (`chex.assert_type`, `assert_rank`, `assert_shape`,
`assert_equal_shape_prefix`, `Dimensions`); its `AssertionError` is turned
into the `TypeError`/`ValueError` a user expects, naming the argument, its
shape and what to do (chex's own text follows in brackets). Shape, rank
and dtype checks run on static facts at trace time; finiteness is checked
on concrete values only (inside `jit` the caller checks before tracing):
with numpy where the data is in CPU memory, by a reduction on the device
elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np


def _shape(x: Any) -> tuple[int, ...]:
  return tuple(np.shape(x))


def _run(check: Callable[[], None], error: type[Exception], message: str) -> None:
  """Runs a chex assertion; re-raises its failure as `error(message)`."""
  try:
    check()
  except AssertionError as e:
    raise error(f"{message} [{e}]") from None


def check_floating(x: Any, name: str) -> None:
  """Raises `TypeError` unless `x` has a floating dtype."""
  dtype = getattr(x, "dtype", jnp.result_type(x))
  _run(lambda: chex.assert_type(x, float), TypeError,
       f"{name} must have a floating dtype, got {dtype} with shape {_shape(x)};"
       " convert it first, e.g. x.astype(jnp.float32).")


def check_rank(x: Any, ranks: int | Sequence[int], name: str, what: str = "") -> None:
  """Raises `ValueError` unless `x.ndim` is one of `ranks`; `what` describes
  the expected axes, e.g. ``"[n, d]"``."""
  ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
  want = " or ".join(str(r) for r in ranks)
  _run(lambda: chex.assert_rank(x, set(ranks)), ValueError,
       f"{name} must have rank {want}{' ' + what if what else ''}, got shape {_shape(x)}.")


def check_min_rank(x: Any, minimum: int, name: str, what: str = "") -> None:
  """Raises `ValueError` when `x` has fewer than `minimum` axes."""
  ranks = set(range(minimum, max(minimum, np.ndim(x)) + 1))
  _run(lambda: chex.assert_rank(x, ranks), ValueError,
       f"{name} must have at least {minimum} axes{' ' + what if what else ''}, got shape"
       f" {_shape(x)}.")


def check_shape(x: Any, shape: Sequence[int | None], name: str, hint: str = "") -> None:
  """Raises `ValueError` unless `x` has `shape` (None: any size), e.g. from
  `chex.Dimensions`."""
  want = ", ".join("..." if a is Ellipsis else "any" if a is None else str(a) for a in shape)
  _run(lambda: chex.assert_shape(x, tuple(shape)), ValueError,
       f"{name} must have shape ({want}), got {_shape(x)}."
       f"{' ' + hint if hint else ''}")


def check_array(x: Any, name: str, ranks: int | Sequence[int] | None = None,
                what: str = "", *, min_rank: int | None = None) -> None:
  """A non-empty floating array of one of `ranks` (or at least `min_rank`
  axes), free of NaN/Inf when concrete. NaN must never reach a LAPACK
  decomposition: its SVD of a NaN matrix can loop forever."""
  check_floating(x, name)
  if ranks is not None:
    check_rank(x, ranks, name, what)
  if min_rank is not None:
    check_min_rank(x, min_rank, name, what)
  if np.size(x) == 0:
    raise ValueError(f"{name} is empty (shape {_shape(x)}).")
  check_finite(x, name)


def check_same_leading(arrays: Sequence[Any], names: Sequence[str], axes: int = 1,
                       noun: str = "datapoints") -> None:
  """Raises `ValueError` unless the arrays agree on their first `axes` sizes."""
  shapes = ", ".join(f"{n} {_shape(a)}" for a, n in zip(arrays, names))
  _run(lambda: chex.assert_equal_shape_prefix(list(arrays), axes), ValueError,
       f"{' and '.join(names)} need the same number of {noun} (the leading"
       f" {'axis' if axes == 1 else f'{axes} axes'}); got {shapes}.")


def check_choice(value: Any, choices: Sequence[Any], name: str) -> Any:
  """`value` if it is one of `choices`, else a ValueError naming `name`, the
  choices and the value given."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
  return value


def check_finite(x: Any, name: str) -> None:
  """Raises `ValueError` on NaN/Inf in a concrete array; traced arrays (inside
  `jit`) pass, their caller checks before tracing."""
  if isinstance(x, jax.core.Tracer):
    return
  if _on_host(x):
    # No copy, and no program compiled per shape (that cost ~20 ms a call):
    # NaN propagates through min, ±Inf shows in min or max.
    arr = np.asarray(x)
    with np.errstate(invalid="ignore"):
      finite = (not jnp.issubdtype(arr.dtype, jnp.inexact) or arr.size == 0
                or bool(np.isfinite(arr.min()) & np.isfinite(arr.max())))
    if not finite:  # the count costs a pass, only on failure
      bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
      raise ValueError(f"{name} holds NaN or Inf ({bad} value(s)); remove or fix them first.")
  else:
    # A reduction where the array lives (chex's tree check copies it to the host).
    with jax.ensure_compile_time_eval():  # concrete, even when closed over by a trace
      finite = bool(jnp.all(jnp.isfinite(x)))
    if not finite:
      raise ValueError(f"{name} holds NaN or Inf; remove or fix those values first.")


def _on_host(x: Any) -> bool:
  """True for numpy data and for jax arrays whose every shard is in CPU memory."""
  if not isinstance(x, jax.Array):
    return True
  try:
    return all(d.platform == "cpu" for d in x.devices())
  except Exception:  # pylint: disable=broad-except  (deleted or abstract arrays)
    return False


def dims(**sizes: int) -> chex.Dimensions:
  """`chex.Dimensions` of named sizes, for `check_shape(x, dims['nd'], ...)`."""
  return chex.Dimensions(**sizes)
