"""Input validation shared by the public entry points.

Every check here runs on static facts (shapes, dtypes) at trace time, or on
host values outside of `jit`; none of them asserts on traced values.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np


def check_floating(x: Any, name: str) -> None:
  """Raises `TypeError` unless `x` has a floating dtype."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"{name} must have a floating dtype, got {dtype} with shape"
        f" {tuple(np.shape(x))}; convert it first, e.g. x.astype(jnp.float32)."
    )


def check_rank(x: Any, ranks: tuple[int, ...], name: str) -> None:
  """Raises `ValueError` unless `x.ndim` is one of `ranks`."""
  ndim = np.ndim(x)
  if ndim not in ranks:
    want = " or ".join(str(r) for r in ranks)
    raise ValueError(
        f"{name} must have rank {want}, got shape {tuple(np.shape(x))}."
    )


def check_finite(x: Any, name: str) -> None:
  """Raises `ValueError` on NaN/Inf in a concrete array; traced arrays (inside
  `jit`) pass, their caller checks before tracing."""
  import jax
  if isinstance(x, jax.core.Tracer):
    return
  with jax.ensure_compile_time_eval():  # concrete, even when closed over by a trace
    finite = bool(jnp.all(jnp.isfinite(x)))
  if not finite:
    raise ValueError(f"{name} holds NaN or Inf; remove or fix those values first.")


def check_finite_host(x: Any, name: str) -> None:
  """Raises `ValueError` if a concrete array holds NaN or Inf."""
  arr = np.asarray(x)
  if not np.all(np.isfinite(arr)):
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or Inf).")
