"""Padded batches: what every pass over a dataset in fixed-size batches
shares (accuracy, BatchNorm re-estimation, representations)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def eval_batches(x: Array, y: Array, batch_size: int) -> tuple[Array, Array]:
  """``[nb, batch_size, ...]`` images and labels, the tail padded with label
  −1 (never counted as correct). Host (numpy) inputs are padded on the host,
  JAX arrays where they live."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be ≥ 1, got {batch_size}.")
  if isinstance(x, jax.Array) or isinstance(y, jax.Array):
    return _padded(x, y, int(batch_size))
  return _pad(np, np.asarray(x), np.asarray(y), int(batch_size))  # no program


def _pad(xnp, x, y, batch_size: int):
  """`eval_batches` with array module `xnp` (numpy or jax.numpy)."""
  n = x.shape[0]
  nb = -(-n // batch_size)
  pad = nb * batch_size - n
  xp = xnp.concatenate([x, xnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(
      nb, batch_size, *x.shape[1:])
  yp = xnp.concatenate([y, xnp.full((pad,), -1, y.dtype)]).reshape(nb, batch_size)
  return xp, yp


@functools.partial(jax.jit, static_argnums=2)
def _padded(x: Array, y: Array, batch_size: int) -> tuple[Array, Array]:
  return _pad(jnp, x, y, batch_size)


def count_correct(apply_fn, variables, xp: Array, yp: Array) -> Array:
  """``[]`` int: correct argmax predictions of ``apply_fn(variables, batch)``
  over padded batches from `eval_batches` (padding, label −1, never counts);
  one `lax.scan`, so the batches cost one compiled step."""
  def body(c, b):
    logits = apply_fn(variables, b[0])
    return c + jnp.sum(jnp.argmax(logits, -1) == b[1]), None
  return jax.lax.scan(body, jnp.zeros((), jnp.int32), (xp, yp))[0]
