"""Flax linen models: their weight layers found by `nn.intercept_methods`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from rainbow_jax.network._core import (Network, _Stop, _Tap, _as_variables, _build)

Array = jax.Array


def _linen_kind(mod: Any) -> str | None:
  """``'dense'`` / ``'conv'`` for a supported weight layer, None if not a
  weight layer; raises for a weight layer we cannot read as a matrix."""
  import flax.linen as nn

  from rainbow_jax import models
  if isinstance(mod, nn.Dense):
    return "dense"
  if isinstance(mod, models.PatchConv):
    return "conv"
  if isinstance(mod, nn.Conv):
    if mod.feature_group_count != 1:
      raise ValueError(f"layer {'/'.join(mod.scope.path)}: grouped/depthwise convolutions"
                       " (feature_group_count > 1) are not supported.")
    return "conv"
  if isinstance(mod, nn.DenseGeneral):
    axis = mod.axis if isinstance(mod.axis, tuple) else (mod.axis,)
    if axis not in ((-1,),) or not isinstance(mod.features, int) or mod.batch_dims:
      raise ValueError(f"layer {'/'.join(mod.scope.path)}: DenseGeneral with axis={mod.axis},"
                       f" features={mod.features}, batch_dims={mod.batch_dims} is not a plain"
                       " matrix product; only axis=-1 with integer features is supported.")
    return "dense"
  if isinstance(mod, (nn.ConvTranspose, nn.ConvLocal, nn.Embed, nn.Einsum)):
    raise ValueError(f"layer {'/'.join(mod.scope.path)} ({type(mod).__name__}) is a weight"
                     " layer rainbow_jax cannot analyse (supported: Dense, Conv, plain"
                     " DenseGeneral).")
  return None


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
    ValueError: no weight layer, a weight layer called twice (shared
      weights), or a layer type that cannot be analysed (named).
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
      if _linen_kind(mod) is None:
        return next_fun(*args, **kw)
      return tap.post(next_fun(tap(args[0]), *args[1:], **kw))

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
        kind = _linen_kind(mod)
        if kind is not None:
          found.append((tuple(mod.scope.path), kind, tuple(args[0].shape)))
    return next_fun(*args, **kw)

  vs = _as_variables(variables)
  with nn.intercept_methods(discover):
    jax.eval_shape(lambda v, a: module.apply(v, a, **kwargs), vs, x)
  return _build(found, [(p, ("batch_stats", *p)) for p in norms], vs["params"], run, root,
                with_root, x)
