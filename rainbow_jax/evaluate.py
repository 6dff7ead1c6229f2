"""Accuracy of a `rainbow_jax.network.Network`, its padded batches, and the
representations its layers give a set of inputs.

Analyses that score or compare networks (clipping sweeps, rainbow samples,
layer × layer similarity) share these; they never import training code.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import _axis, _batches
from rainbow_jax._batches import eval_batches as eval_batches
from rainbow_jax import similarity as _similarity

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("net", "batch_size", "stacked", "stack_axis"))
def accuracy(net: Any, variables: Any, x: Array, y: Array, *, batch_size: int = 1000,
             stacked: bool = False, stack_axis: str = "auto") -> Array:
  """Accuracy (%) of a `Network` on ``x [N, ...]``, ``y [N]``.

  With ``stacked=True``, `variables` has a leading axis (K seeds, S rainbow
  samples) and the result is ``[K]``; the networks are vmapped
  (``stack_axis='vmap'``) or run in turn (``'map'``); ``'auto'``: in turn on
  CPU, where stacked convolutions are slow, vmapped on GPU/TPU.
  """
  net.check_input(x)
  if jnp.ndim(y) != 1 or len(y) != len(x):
    raise ValueError(f"y: labels of shape {jnp.shape(y)} for {len(x)} inputs; pass [N]"
                     " integer class indices (argmax of one-hot labels).")
  xp, yp = eval_batches(x, y, batch_size)

  def count(v):
    return _batches.count_correct(net.apply, v, xp, yp)

  if stacked:
    counts = _axis.over_stack(count, variables, _axis.resolve(stack_axis, "stack_axis"))
  else:
    counts = count(variables)
  return 100.0 * counts / x.shape[0]


__all__ = ["accuracy", "eval_batches"]


CONV_TEXT = {"mean": "averaged over positions (one C-vector per image)",
             "flatten": "flattened per image (one H·W·C vector per image)",
             "cls": "token sequences by their first (class) token, conv maps averaged over"
                    " positions"}
"""How reports name the convention `representations` used."""


@functools.partial(jax.jit, static_argnums=(0, 1))
def _representations(net, conv: str, variables, xb: Array) -> list:
  """Per batch of ``xb [nb, B, …]``, every layer input's `features`: one
  program for every network of `net`'s shapes (the variables an argument)."""
  return jax.lax.map(lambda xs: [_similarity.features(h, conv)
                                 for h in net.layer_inputs(variables, xs)], xb)


def representations(net: Any, variables: Any, x: Array, *, conv: str = "mean",
                    batch_size: int = 500) -> list:
  """The input of every weight layer on ``x``, one ``[N, d_l]`` numpy array
  per layer, conv maps turned into datapoints × neurons by
  `rainbow_jax.similarity.features` (``conv="mean"``: averaged over
  positions, ``"flatten"``: one vector per image; ``"positions"`` would
  change N and is refused here). What ``rainbow-jax analyze`` and
  ``rainbow-jax compare`` compare, so both give the same numbers."""
  if conv not in CONV_TEXT:
    raise ValueError(f"conv must be one of {tuple(CONV_TEXT)} for per-image representations,"
                     f" got {conv!r}.")
  net.check_input(x)
  n = len(x)
  xb, _ = eval_batches(x, np.zeros((n,), np.int32), min(batch_size, n))
  per = _representations(net, conv, variables, xb)
  return [np.asarray(p).reshape(-1, p.shape[-1])[:n] for p in per]  # host: no program
