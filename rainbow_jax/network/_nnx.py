"""Flax NNX models: their weight layers found in the module graph."""

from __future__ import annotations

from typing import Any

import jax

from rainbow_jax.network._core import (Network, _Reader, _Stop, _Tap, _build, general_reader,
                                       tapped_call)

Array = jax.Array


def nnx_variables(model: Any) -> dict:
  """The variables of an NNX module as a plain nested dict (parameters and
  BatchNorm statistics together), what a `from_nnx` network takes."""
  from flax import nnx
  return nnx.to_pure_dict(nnx.state(model))


_NNX_WRAPPERS: dict = {}


def _nnx_wrapper(cls):
  """A subclass of NNX layer class `cls` whose ``__call__`` goes through the
  hook stored on the instance (``_rj_hook``)."""
  if cls not in _NNX_WRAPPERS:
    def __call__(self, x, *args, **kwargs):
      return self._rj_hook(self, super(wrapper, self).__call__, x, *args, **kwargs)
    wrapper = type(f"Hooked{cls.__name__}", (cls,), {"__call__": __call__})
    _NNX_WRAPPERS[cls] = wrapper
  return _NNX_WRAPPERS[cls]


_WEIGHT_TYPES = ("Linear", "LinearGeneral", "Conv", "Embed")


def _nnx_reader(mod: Any, name: str, parent: Any, h: Any) -> _Reader:
  """How to read NNX weight layer `mod` called on `h`; raises for one we
  cannot read as a matrix."""
  from flax import nnx
  if isinstance(mod, nnx.LinearGeneral):
    return general_reader(name, "LinearGeneral", mod.axis, mod.out_features,
                          bool(mod.batch_axis), h.ndim,
                          isinstance(parent, nnx.MultiHeadAttention))
  if isinstance(mod, nnx.Embed):
    return _Reader("embedding", param="embedding", vocab=mod.num_embeddings)
  if isinstance(mod, nnx.Conv):
    return _Reader("conv", groups=mod.feature_group_count)
  return _Reader("dense")


def _is_weight_layer(mod: Any, name: str) -> bool:
  from flax import nnx
  if isinstance(mod, (nnx.Einsum, nnx.ConvTranspose)):
    raise ValueError(f"layer {name} ({type(mod).__name__}) is a weight layer rainbow_jax"
                     " cannot analyse yet (supported: Linear, LinearGeneral, Conv with any"
                     " feature groups, Embed); remove it from the model or analyse the"
                     " layers before it.")
  return isinstance(mod, tuple(getattr(nnx, t) for t in _WEIGHT_TYPES))


def from_nnx(model: Any, x: Array, **call_kwargs) -> Network:
  """A `Network` of a Flax NNX module.

  Args:
    model: the user's `flax.nnx.Module` (not modified).
    x: an example input batch.
    **call_kwargs: extra keyword arguments of every ``model(x, …)`` call.

  Returns:
    The `Network`; its functions take `nnx_variables(model)` (or a pytree of
    the same structure, e.g. vmapped over seeds).
  """
  from flax import nnx

  graphdef, state = nnx.split(model)
  template = nnx.to_pure_dict(state)
  treedef = jax.tree_util.tree_structure(template)

  def merged(vs):
    st = jax.tree_util.tree_map(lambda a: a, state)  # a fresh State of the same structure
    leaves = treedef.flatten_up_to(vs)
    nnx.replace_by_pure_dict(st, treedef.unflatten(leaves))
    return nnx.merge(graphdef, st)

  def bn_hook(tap):
    def hook(self, call, h, *a, **k):
      value = lambda v: None if v is None else v[...]
      return tap.norm(h, self.mean[...], self.var[...], value(self.scale), value(self.bias),
                      self.axis, self.epsilon, self.dtype)
    return hook

  def hook_all(m, weight_hook, tap):
    modules = dict(nnx.iter_modules(m))
    for path, sub in modules.items():
      name = "/".join(str(p) for p in path)
      if isinstance(sub, nnx.BatchNorm):
        sub.__class__ = _nnx_wrapper(type(sub))
        sub._rj_hook = bn_hook(tap)
        continue
      if _is_weight_layer(sub, name):
        parent = modules.get(tuple(path[:-1]))
        reader = lambda h, sub=sub, name=name, parent=parent: _nnx_reader(sub, name, parent, h)
        sub.__class__ = _nnx_wrapper(type(sub))
        sub._rj_hook = weight_hook(tuple(path), reader)

  def run(vs, inp, tap):
    m = merged(vs)

    def weight_hook(path, reader):
      def hook(self, call, h, *a, **k):
        return tapped_call(tap, reader(h), h, lambda g: call(g, *a, **k),
                           lambda: self.embedding[...])
      return hook

    hook_all(m, weight_hook, tap)
    try:
      return m(inp, **call_kwargs)
    except _Stop:
      return None

  found, norms = [], []

  def discover(vs, inp):
    m = merged(vs)

    def weight_hook(path, reader):
      def hook(self, call, h, *a, **k):
        r = reader(h)
        found.append((path, r, tuple(r.canonical_input(h).shape)))
        return call(h, *a, **k)
      return hook

    tap = _Tap()
    hook_all(m, weight_hook, tap)
    for path, sub in nnx.iter_modules(m):
      if isinstance(sub, nnx.BatchNorm):
        inner = sub._rj_hook

        def record(self, call, h, *a, _inner=inner, _path=tuple(path), **k):
          norms.append(_path)
          return _inner(self, call, h, *a, **k)
        sub._rj_hook = record
    return m(inp, **call_kwargs)

  jax.eval_shape(discover, template, x)
  # NNX's graph definition is structural (types, static attributes, the
  # variables' places): with the call's arguments it fixes the forward pass.
  key = ("nnx", graphdef, tuple(sorted(call_kwargs.items())))
  return _build(found, [(p, p) for p in norms], template, run, lambda vs: vs,
                lambda vs, r: r, x, key)
