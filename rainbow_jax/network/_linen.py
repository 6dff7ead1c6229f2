"""Flax linen models: their weight layers found by `nn.intercept_methods`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

import numpy as np

from rainbow_jax.network._core import (Network, _Reader, _Stop, _Tap, _as_variables, _build,
                                       general_reader, tapped_call)

Array = jax.Array


def _linen_reader(mod: Any, h: Any, root: type) -> _Reader | None:
  """How to read linen module `mod` called on `h` as a weight layer; None if
  it is not one; raises for a weight layer we cannot read as a matrix.
  `root`: the class of the model (a bare ``nn.Dense`` may be the model)."""
  import flax.linen as nn

  from rainbow_jax import models
  name = "/".join(mod.scope.path)
  if not mod.scope.path and type(mod) is not root:
    return None  # the wrapper a lifted transform puts around a layer: its inner call counts
  top = mod
  while isinstance(getattr(top, "parent", None), nn.Module):
    top = top.parent
  if top.scope.path and isinstance(mod, (nn.Dense, nn.DenseGeneral, nn.Conv, nn.Embed,
                                         nn.Einsum, models.PatchConv)):
    raise ValueError(
        f"layer {name} ({type(mod).__name__}) is called inside a lifted Flax transform"
        " (nn.scan, nn.RNN, nn.remat, nn.vmap, …): a recurrent scan or a transformed block"
        " runs its layers in an inner trace whose inputs rainbow_jax cannot read. Analyse"
        " the model with the block unrolled (a Python loop, without nn.remat), or the"
        " layers outside it.")
  if isinstance(mod, nn.Dense):
    return _Reader("dense")
  if isinstance(mod, models.PatchConv):
    return _Reader("conv")
  if isinstance(mod, nn.Conv) and not isinstance(mod, (nn.ConvTranspose, nn.ConvLocal)):
    return _Reader("conv", groups=mod.feature_group_count)
  if isinstance(mod, nn.DenseGeneral):
    return general_reader(name, "DenseGeneral", mod.axis, mod.features, bool(mod.batch_dims),
                          np.ndim(h), _in_attention(mod))
  if isinstance(mod, nn.Embed):
    return _Reader("embedding", param="embedding", vocab=mod.num_embeddings)
  if isinstance(mod, (nn.ConvTranspose, nn.ConvLocal, nn.Einsum)):
    raise ValueError(f"layer {name} ({type(mod).__name__}) is a weight layer rainbow_jax"
                     " cannot analyse yet (supported: Dense, DenseGeneral, Conv with any"
                     " feature groups, Embed); remove it from the model or analyse the"
                     " layers before it.")
  return None


def _in_attention(mod: Any) -> bool:
  import flax.linen as nn
  return isinstance(getattr(mod, "parent", None), nn.MultiHeadDotProductAttention)


def _linen_bn(mod: Any, x: Array, tap: _Tap) -> Array:
  """A linen BatchNorm from its own variables, in inference mode (or batch
  mode, see `_Tap.norm`)."""
  own = mod.variables
  ps = own.get("params", {})
  stats = own["batch_stats"]
  return tap.norm(x, stats["mean"], stats["var"], ps.get("scale"), ps.get("bias"),
                  mod.axis, mod.epsilon, mod.dtype)


def from_linen(module: Any, variables: Any, x: Array, **apply_kwargs) -> Network:
  """A `Network` of a Flax linen module.

  Args:
    module: the user's `flax.linen.Module` (unchanged; its layers keep
      whatever names Flax or the user gave them, nested at any depth).
    variables: its variables (``{'params': …, 'batch_stats': …}``) or bare
      params; used to discover the layers (shapes only).
    x: an example input batch (or its `jax.ShapeDtypeStruct`).
    **apply_kwargs: extra keyword arguments of every ``module.apply`` call,
      e.g. ``train=False``.

  Returns:
    The `Network`; its functions take variables of the same form.

  Raises:
    ValueError: no weight layer, or a layer type that cannot be analysed
      (named).
  """
  import flax.linen as nn

  kwargs = dict(apply_kwargs)

  def run(vs, inp, tap):
    vs = _as_variables(vs)

    def interceptor(next_fun, args, kw, ctx):
      mod = ctx.module
      if ctx.method_name != "__call__":
        return next_fun(*args, **kw)
      if isinstance(mod, nn.BatchNorm):
        return _linen_bn(mod, args[0], tap)
      reader = _linen_reader(mod, args[0], type(module))
      if reader is None:
        return next_fun(*args, **kw)
      return tapped_call(tap, reader, args[0], lambda h: next_fun(h, *args[1:], **kw),
                         lambda: mod.embedding)

    try:
      with nn.intercept_methods(interceptor):
        return module.apply(vs, inp, **kwargs)
    except _Stop:
      return None

  def root(vs):
    return _as_variables(vs)["params"]

  def with_root(vs, new_root):
    if not (isinstance(vs, Mapping) and "params" in vs):
      return new_root
    return dict(vs, params=new_root)

  found, norms = [], []

  def discover(next_fun, args, kw, ctx):
    mod = ctx.module
    if ctx.method_name == "__call__":
      if isinstance(mod, nn.BatchNorm):
        norms.append(tuple(mod.scope.path))
        return _linen_bn(mod, args[0], _Tap())
      else:
        reader = _linen_reader(mod, args[0], type(module))
        if reader is not None:
          found.append((tuple(mod.scope.path), reader,
                        tuple(reader.canonical_input(args[0]).shape)))
    return next_fun(*args, **kw)

  vs = _as_variables(variables)
  with nn.intercept_methods(discover):
    jax.eval_shape(lambda v, a: module.apply(v, a, **kwargs), vs, x)
  # The module (a linen dataclass: equal fields, equal modules), its call's
  # keyword arguments and the variables' collections fix the forward pass.
  key = ("linen", module, tuple(sorted(kwargs.items())), tuple(sorted(vs)))
  return _build(found, [(p, ("batch_stats", *p)) for p in norms], vs["params"], run, root,
                with_root, x, key)
