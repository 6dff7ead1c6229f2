"""Clipping: a layer's input projected onto its top-k eigenvectors, and the
accuracy sweep over k in one compiled evaluation."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Float

from rainbow_jax import _axis
from rainbow_jax import _batches
from rainbow_jax import _precision
from rainbow_jax import _checks


Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


# --------------------------------------------------------------------------
# Clipping.


def projector(basis: Array, k: Array) -> Array:
  """``[d, d]`` orthogonal projector on the first `k` rows of `basis`
  (``[m, d]``, orthonormal rows); `k` may be traced (vmap over ranks)."""
  mask = (jnp.arange(basis.shape[0]) < k).astype(basis.dtype)
  return jnp.matmul(basis.T * mask[None, :], basis, precision=_HP)


def clip_kernel(kernel: Array, basis: Array, k: Array) -> Array:
  """The kernel of a layer whose input is first projected on the top-`k`
  rows of `basis`: W → W·P (the tutorial's ``weight @ projector``).

  `basis` is ``[m, d]`` with d either the kernel's full fan-in (weight
  eigenvectors; conv: ``K·K·C_in``) or, for a conv kernel, its input
  channels ``C_in`` (activation eigenvectors with space folded into the
  batch, projected at every position).
  """
  _checks.check_array(kernel, "kernel", (2, 3, 4, 5))
  _checks.check_array(basis, "basis", 2, "[m, d] (orthonormal rows)")
  kernel = jnp.asarray(kernel)
  p = projector(basis, k)
  if kernel.ndim >= 3 and basis.shape[1] == kernel.shape[-2]:
    return jnp.einsum("ij,...jo->...io", p, kernel, precision=_HP)
  flat = kernel.reshape(-1, kernel.shape[-1])
  if basis.shape[1] != flat.shape[0]:
    raise ValueError(f"basis of dimension {basis.shape[1]} does not match the kernel's"
                     f" fan-in {flat.shape[0]} (or its input channels).")
  return jnp.matmul(p, flat, precision=_HP).reshape(kernel.shape)


def clip_sweep(net: Any, variables: Any, layer: int, basis: Array | Sequence[Array],
               ranks: Sequence[int] | Sequence[Sequence[int]], x: Array, y: Array, *,
               batch_size: int = 1000, stack_axis: str = "auto"
               ) -> np.ndarray | list[np.ndarray]:
  """Test accuracy (%) with `layer`'s input clipped to each rank of `ranks`.

  One pass over ``x`` and one compiled program: the ranks are stacked, and
  the layers before `layer` do not depend on the rank, so they run once per
  batch (the tutorial deep-copies a model per rank and runs each on the
  whole network). Works on any classifier `rainbow_jax.network.Network`.

  Several bases of the same layer (its activation and weight eigenvectors)
  are swept in the same pass and program: give a list of bases and a list
  of rank lists, one per basis.

  Args:
    net: the `Network` (one network).
    variables: its variables (no seed axis).
    layer: index of the weight layer whose input is clipped (0 = first).
    basis: ``[m, d]`` orthonormal rows, largest eigenvalue first
      (`clip_kernel`), or a list of such bases.
    ranks: the k's, each in [0, m]; with a list of bases, a list of rank
      lists.
    x, y: evaluation data.
    batch_size: evaluation batch (memory only).
    stack_axis: the ranks vmapped (``'vmap'``) or run in turn (``'map'``);
      ``'auto'`` (default): vmapped on GPU/TPU; on CPU in turn where a
      convolution reads the clipped input or follows it (stacked
      convolutions are slow there: a ResNet-20's sweeps ran 1.0–1.5×
      faster in turn and compiled 1.3–3× faster), vmapped otherwise (dense
      layers batch into one product: the tutorial MLP's 512 ranks ran 2×
      faster vmapped). Same numbers.

  Returns:
    ``[len(ranks)]`` accuracies in percent (numpy); with a list of bases, a
    list of them.
  """
  if not -len(net) <= layer < len(net):
    raise ValueError(f"layer {layer} out of range for {len(net)} weight layers.")
  if net.layers[layer].groups > 1:
    raise ValueError(f"layer {layer} ({net.names[layer]}) is a grouped convolution: a kernel"
                     " clipped on its input basis mixes channels across groups, which the"
                     " layer cannot hold; clip a layer without feature groups.")
  several = isinstance(basis, (list, tuple))
  bases, rank_lists = (list(basis), list(ranks)) if several else ([basis], [ranks])
  if not bases or len(rank_lists) != len(bases):
    raise ValueError(f"a list of {len(bases)} bases needs as many rank lists, got"
                     f" {len(rank_lists)}.")
  checked = []
  for i, (b, r) in enumerate(zip(bases, rank_lists)):
    name = f"basis[{i}]" if several else "basis"
    _checks.check_array(b, name, 2, "[m, d] (orthonormal rows)")
    r = np.asarray(r)
    if r.ndim != 1 or r.size == 0 or r.min() < 0 or r.max() > np.shape(b)[0]:
      raise ValueError(f"ranks{f'[{i}]' if several else ''} must be a non-empty list in"
                       f" [0, {np.shape(b)[0]}], got {r}.")
    checked.append(r.astype(np.int32))
  axis = _axis.resolve(stack_axis, "stack_axis")
  if stack_axis == "auto" and axis == "map" and "conv" not in net.kinds[layer:]:
    axis = "vmap"  # dense layers only: one batched product per layer
  xb, yb = _batches.eval_batches(x, y, batch_size)
  counts = _clip_counts(net, layer % len(net), axis, variables, tuple(bases), tuple(checked),
                        xb, yb)
  acc = [100.0 * np.asarray(c) / len(x) for c in counts]  # on the host: no program
  return acc if several else acc[0]


@functools.partial(jax.jit, static_argnames=("net", "layer", "axis"))
def _clip_counts(net, layer, axis, variables, bases, ranks, xb, yb):
  """Correct predictions per rank, for each basis and its ranks."""
  kernel = net.kernels(variables)[layer]

  def body(counts, batch):
    x, y = batch
    new = []
    for c, basis, r in zip(counts, bases, ranks):
      def one_rank(k, basis=basis, x=x):
        return net.apply(net.with_kernels(variables, {layer: clip_kernel(kernel, basis, k)}), x)
      logits = _axis.over_stack(one_rank, r, axis)
      new.append(c + jnp.sum(jnp.argmax(logits, -1) == y[None, :], axis=1))
    return tuple(new), None

  zeros = tuple(jnp.zeros(r.shape, jnp.int32) for r in ranks)
  return lax.scan(body, zeros, (xb, yb))[0]


def input_map(a: Array, kernel_shape: Sequence[int]) -> Array:
  """Alignment ``a`` of a layer's input channels as a map on its flattened
  fan-in (`weight_matrix`): a conv fan-in flattens as (*window, C_in), so
  the map is kron(I_window, A); a dense layer's is A itself."""
  if len(kernel_shape) > 2:
    window = int(np.prod(kernel_shape[:-2]))
    return jnp.kron(jnp.eye(window, dtype=a.dtype), a)
  return a


def explained_variance(eigenvalues: Float[Array, "d"]) -> Float[Array, "d"]:
  """Cumulative fraction of the total variance in the top-k eigenvalues
  (all zeros when the total is zero: nothing to explain)."""
  _checks.check_array(eigenvalues, "eigenvalues", 1, "[d]")
  e = jnp.clip(jnp.asarray(eigenvalues), 0.0, None)
  total = jnp.sum(e)
  return jnp.where(total > 0, jnp.cumsum(e) / jnp.where(total > 0, total, 1.0), 0.0)
