"""The adapter from a user's network to what the analyses need.

Every analysis that touches a model — layer moments, clipping, alignment,
rainbow sampling, the SVR of a network's weights — goes through a `Network`,
built from the user's own model with no change to it:

* `from_linen(module, variables, x)` for a Flax linen module;
* `from_nnx(model, x)` for a Flax NNX module (its variables:
  `nnx_variables(model)`);
* `from_torch(module_or_state_dict)` for PyTorch weights (weight-only
  analyses: spectra, Marchenko–Pastur, SVR).

A `Network` knows the model's **weight layers in the order the forward pass
calls them** (discovered by running the model once, abstractly, under
Flax's own method interception — `nn.intercept_methods` for linen, the
module graph for NNX), each with its parameter path, kind and kernel shape.

Canonical layout, used by every module of rainbow_jax: Flax's. A dense
kernel is ``[in, out]``; a conv kernel ``[*window, C_in, C_out]`` (2-D:
``[K, K, C_in, C_out]``) whose fan-in flattens in ``(*window, C_in)`` order
(`rainbow_jax.spectra.weight_matrix`). PyTorch weights are converted to it
once, in `from_torch`.

Weight layers: ``nn.Dense``, ``nn.Conv`` (any stride, padding, dilation; no
feature groups), ``nn.DenseGeneral`` where it is a plain matrix product,
`rainbow_jax.models.PatchConv`; NNX ``Linear`` and ``Conv``. BatchNorm is
always evaluated in inference mode from its running statistics (whatever
flag the model passes), so nothing is ever written to ``batch_stats``.
Other layers (pooling, LayerNorm, dropout in deterministic mode, skip
connections) run as the model defines them.

The functions of a `Network` are pure and take the model's variables
explicitly (linen: the dict `module.init` returns, ``{'params': …,
'batch_stats': …}``; NNX: `nnx_variables(model)`), so they compose with
`jax.jit` and `jax.vmap` (over seeds or samples). A `Network` is hashable
(by identity) and may be a static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import _precision

Array = jax.Array


class Layer(NamedTuple):
  """One weight layer of a `Network`.

  Attributes:
    name: its parameter path joined by ``/`` (e.g. ``'block_1/Conv_0'``).
    path: the path of its parameter dict (keys into the params tree).
    kind: ``'dense'`` or ``'conv'``.
    kernel_shape: canonical (Flax) kernel shape.
    bias: whether it has a bias.
    input_shape: shape of its input in the discovery pass (batch of the
      example input first).
  """

  name: str
  path: tuple
  kind: str
  kernel_shape: tuple
  bias: bool
  input_shape: tuple


class _Stop(Exception):
  """Raised inside a forward pass once the requested layer inputs are in."""


class _Tap:
  """What one forward pass does at the weight layers and BatchNorms, in call
  order.

  At weight layer j: ``edits[j]`` replaces its input, the input is recorded
  (when `stop` is set) and the pass stops after layer `stop`'s input;
  ``outs[j]`` replaces its output. At every BatchNorm: inference mode from
  its running statistics, or, with ``row_weights`` given, normalisation by
  the statistics of the current batch (rows weighted, padding weight 0),
  recorded in ``stats`` — what re-estimating the statistics needs.
  """

  def __init__(self, edits=None, stop=None, outs=None, row_weights=None):
    self.edits, self.stop, self.outs = edits or {}, stop, outs or {}
    self.row_weights = row_weights
    self.count, self.captured, self.stats = 0, [], []

  def __call__(self, h):
    j = self.count
    self.count += 1
    if j in self.edits:
      h = self.edits[j](h)
    if self.stop is not None:
      self.captured.append(h)
      if j >= self.stop:
        raise _Stop
    return h

  def post(self, y):
    j = self.count - 1
    return self.outs[j](y) if j in self.outs else y

  def norm(self, x, mean, var, scale, bias, axis, epsilon, dtype):
    """BatchNorm along feature `axis` (an int or tuple)."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % x.ndim for a in axes)
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    if self.row_weights is not None:
      red = tuple(a for a in range(x.ndim) if a not in axes)
      w = self.row_weights.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
      w = jnp.broadcast_to(w, [x.shape[a] if a not in axes else 1 for a in range(x.ndim)])
      total = jnp.sum(w)
      mean = jnp.sum(x * w, axis=red) / total
      dev = x - jnp.expand_dims(mean, red)
      var = jnp.sum(dev * dev * w, axis=red) / total
      self.stats.append((total, mean.reshape(-1), var.reshape(-1)))
    y = (x - mean.reshape(shape)) * jax.lax.rsqrt(var.reshape(shape) + epsilon)
    if scale is not None:
      y = y * scale.reshape(shape)
    if bias is not None:
      y = y + bias.reshape(shape)
    return y.astype(dtype or jnp.result_type(x))


def _as_variables(variables: Any) -> dict:
  """Linen variables from ``{'params': …, …}`` or a bare params dict."""
  if isinstance(variables, Mapping) and "params" in variables:
    return dict(variables)
  return {"params": variables}


def _get(tree: Any, path: Sequence) -> Any:
  for k in path:
    tree = tree[k]
  return tree


def _set(tree: Mapping, path: Sequence, key: str, value: Any) -> dict:
  """A copy of nested dict `tree` with ``tree[*path][key] = value``."""
  tree = dict(tree)
  if not path:
    tree[key] = value
    return tree
  tree[path[0]] = _set(tree[path[0]], path[1:], key, value)
  return tree


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
  """A user's model seen as its chain of weight layers.

  Build it with `from_linen` or `from_nnx`. Attributes: ``layers`` (a tuple
  of `Layer` in call order), ``norms`` (names of its BatchNorm layers, in
  call order). Functions take the model's variables (see the module
  docstring); `kernels` / `with_kernels` use the canonical Flax layout.
  """

  layers: tuple
  norms: tuple
  _run: Callable = dataclasses.field(repr=False)
  _root: Callable = dataclasses.field(repr=False)
  _with_root: Callable = dataclasses.field(repr=False)
  _norm_paths: tuple = dataclasses.field(default=(), repr=False)
  _example: tuple | None = dataclasses.field(default=None, repr=False)
  """Per-example shape of the batch the network was built from."""
  _leaves: tuple = dataclasses.field(default=(), repr=False)
  """``(path, shape)`` of every array of the variables it was built from."""
  precision: str = "float32"
  """Matmul precision of the model's forward pass (`rainbow_jax._precision`):
  ``"float32"`` (float32-exact on every device, the default),
  ``"tensorfloat32"``, ``"bfloat16"`` or ``"default"`` (the backend's own:
  TF32 on recent NVIDIA GPUs). Change it with `with_precision`."""

  def with_precision(self, precision: str) -> "Network":
    """The same network, its forward pass run at `precision`."""
    return dataclasses.replace(self, precision=_precision.check_forward(precision))

  def _forward(self, variables: Any, x: Array, tap: "_Tap") -> Any:
    self._check_call(variables, x)
    with _precision.forward(self.precision):
      return self._run(variables, x, tap)

  def check_input(self, x: Array, name: str = "x") -> None:
    """Raises a ValueError naming both shapes unless ``x`` is ``[N, *s]``
    with ``s`` the per-example shape of the batch the network was built
    from (every function that runs the model checks this)."""
    shape = tuple(getattr(x, "shape", np.shape(x)))
    if self._example is not None and shape[1:] != self._example:
      example = ", ".join(map(str, self._example))
      raise ValueError(
          f"{name}: a batch of shape {shape}, but this network was built from an example"
          f" batch of shape [N, {example}]; pass inputs of shape [N, {example}] (the"
          " layout the model was written for: channels last for Flax convolutions).")

  def check_variables(self, variables: Any) -> None:
    """Raises a ValueError naming the arrays that differ unless `variables`
    have the structure and shapes of those the network was built from."""
    if not self._leaves:
      return
    given = dict(_leaf_shapes(self._root(variables)))
    want = dict(self._leaves)
    wrong = [f"{k} has shape {given[k]}, expected {v}" for k, v in want.items()
             if k in given and given[k] != v]
    missing = [k for k in want if k not in given]
    extra = [k for k in given if k not in want]
    if wrong or missing or extra:
      parts = wrong[:4] + ([f"missing {', '.join(missing[:4])}"] if missing else []) + (
          [f"not in the model: {', '.join(extra[:4])}"] if extra else [])
      raise ValueError(
          "variables: they do not fit the model this network was built from ("
          + "; ".join(parts) + "). Pass variables of that model (linen: what"
          " module.init returns; NNX: nnx_variables(model)), or build a Network"
          " for the other model.")

  def _check_call(self, variables: Any, x: Array) -> None:
    """A batch and variables that fit the model this network was built from
    (Flax would otherwise complain of an initialiser, or of arrays it cannot
    concatenate)."""
    self.check_input(x)
    self.check_variables(variables)

  @property
  def names(self) -> tuple[str, ...]:
    """Parameter paths of the weight layers, in call order."""
    return tuple(l.name for l in self.layers)

  @property
  def kinds(self) -> tuple[str, ...]:
    return tuple(l.kind for l in self.layers)

  @property
  def shapes(self) -> tuple[tuple, ...]:
    """Canonical kernel shapes."""
    return tuple(l.kernel_shape for l in self.layers)

  def __len__(self) -> int:
    return len(self.layers)

  def _index(self, layer: int) -> int:
    if not -len(self.layers) <= layer < len(self.layers):
      raise ValueError(f"layer {layer} out of range: the network has {len(self.layers)}"
                       f" weight layers {list(self.names)}.")
    return layer % len(self.layers)

  def kernels(self, variables: Any) -> list[Array]:
    """The weight layers' kernels in call order, canonical layout."""
    root = self._root(variables)
    return [_get(root, l.path)["kernel"] for l in self.layers]

  def biases(self, variables: Any) -> list[Array | None]:
    """The weight layers' biases ``[out]`` (None where a layer has none)."""
    root = self._root(variables)
    return [_get(root, l.path)["bias"] if l.bias else None for l in self.layers]

  def with_kernels(self, variables: Any, kernels: Mapping[int, Array] | Sequence[Array],
                   biases: Mapping[int, Array] | None = None) -> Any:
    """`variables` with kernels (and biases) replaced.

    Args:
      variables: the model's variables.
      kernels: all kernels in call order, or ``{layer index: kernel}``;
        shapes must equal the current ones.
      biases: optional ``{layer index: bias}``.

    Returns:
      Variables of the same structure (nothing else changes).
    """
    if not isinstance(kernels, Mapping):
      kernels = list(kernels)
      if len(kernels) != len(self.layers):
        raise ValueError(f"{len(kernels)} kernels for {len(self.layers)} weight layers"
                         f" {list(self.names)}.")
      kernels = dict(enumerate(kernels))
    root = self._root(variables)
    for key, new in (("kernel", kernels), ("bias", biases or {})):
      for j, value in new.items():
        layer = self.layers[self._index(j)]
        if key == "bias" and not layer.bias:
          raise ValueError(f"layer {layer.name} has no bias.")
        old = _get(root, layer.path)[key]
        if jnp.shape(value) != jnp.shape(old):
          raise ValueError(f"{layer.name}: {key} of shape {jnp.shape(value)}, expected"
                           f" {jnp.shape(old)} (canonical Flax layout).")
        root = _set(root, layer.path, key, jnp.asarray(value, jnp.result_type(old)))
    return self._with_root(variables, root)

  def apply(self, variables: Any, x: Array, *,
            edits: Mapping[int, Callable[[Array], Array]] | None = None) -> Array:
    """The model's output on ``x``; ``edits[j]`` (if given) replaces the
    input ``h`` of weight layer j by ``edits[j](h)`` (clipping, alignment).

    Under `jax.vmap` over an edit's parameters, the layers before the
    edited one do not depend on the mapped axis and run once.
    """
    edits = {self._index(j): f for j, f in (edits or {}).items()}
    return self._forward(variables, x, _Tap(edits))

  __call__ = apply

  def layer_inputs(self, variables: Any, x: Array, upto: int | None = None) -> list[Array]:
    """The input of every weight layer on batch ``x`` (what the tutorial's
    forward hooks capture): ``[B, d]`` for dense layers, ``[B, *space, C]``
    for conv layers. With ``upto=j``, only layers 0…j, and nothing after
    layer j's input is computed."""
    if upto is not None:
      upto = self._index(upto)
    tap = _Tap(stop=len(self.layers) - 1 if upto is None else upto)
    self._forward(variables, x, tap)
    return tap.captured

  def producers(self, variables: Any, x: Array) -> list[tuple[int, ...]]:
    """For each weight layer k, the weight layers whose output its input
    reads directly (through activations, normalisation, pooling, skip
    additions — not through another weight layer), ``-1`` standing for the
    network's input: the structure of the forward pass traced on example
    batch ``x`` (arrays or `jax.ShapeDtypeStruct`).

    A plain chain gives ``(-1,)`` for the first layer and ``(k − 1,)`` for
    every other. A residual block's sum makes several layers (or the input)
    feed the next one.
    """
    from jax.extend import core as jcore
    n = len(self.layers)

    def inputs(variables, x, *s):
      # Every weight layer's output is replaced by a constant filled with
      # s_j: an input then depends on s_j only through paths that avoid
      # weight layers.
      outs = {j: (lambda y, j=j: jnp.full(y.shape, s[j], y.dtype)) for j in range(n)}
      tap = _Tap(stop=n - 1, outs=outs)
      self._forward(variables, x, tap)
      return tap.captured

    zero = jax.ShapeDtypeStruct((), jnp.float32)
    jaxpr = jax.make_jaxpr(inputs)(variables, x, *[zero] * n).jaxpr
    deps = {v: {j} for j, v in enumerate(jaxpr.invars[-n:])}
    deps[jaxpr.invars[-n - 1]] = {-1}
    for eqn in jaxpr.eqns:  # structural dataflow; a call or loop links all its operands
      d = set().union(*(deps.get(v, set()) for v in eqn.invars
                        if not isinstance(v, jcore.Literal)))
      for o in eqn.outvars:
        deps[o] = d
    return [tuple(sorted(deps.get(v, set()))) if not isinstance(v, jcore.Literal) else ()
            for v in jaxpr.outvars]

  def consumers(self, variables: Any, x: Array) -> list[tuple[int, ...]]:
    """For each weight layer j, the weight layers whose input reads j's
    output directly (the transpose of `producers`). A plain chain gives
    ``(j + 1,)`` for every layer but the classifier (``()``); in a residual
    network a layer that writes into the residual stream (the stem, the last
    conv of each block) reaches several later layers."""
    return consumers_of(self.producers(variables, x))

  def chain_links(self, variables: Any, x: Array) -> list[bool]:
    """For each weight layer j < L − 1, whether j → j + 1 is a plain chain
    link: layer j's output is read by layer j + 1 only, and layer j + 1
    reads nothing else. Rainbow sampling resamples exactly such layers, and
    SVR graphs run along such links."""
    return links_of(self.producers(variables, x))

  def chains(self, variables: Any, x: Array) -> list[tuple[int, ...]]:
    """Maximal runs of weight layers j, j + 1, … joined by plain chain links
    (`chain_links`): what an SVR graph runs along. A plain MLP/CNN is one
    chain; a residual network gives one per block (its convs) and single
    layers for those that meet skip connections."""
    return chains_of(self.chain_links(variables, x))

  def estimate_batch_stats(self, variables: Any, x: Array, *, batch_size: int = 1000,
                           upto: int | None = None) -> Any:
    """`variables` with every BatchNorm's running statistics replaced by
    the statistics of its input over the data ``x [N, ...]``.

    One pass in training mode, as PyTorch's "reset the running statistics and
    run the data" recipe and precise-BN do: each batch is normalised by its
    own statistics, and the running mean and variance become the mean and
    variance over all N inputs (batch means and variances combined by the
    law of total variance, the padding of the last batch excluded). Use it
    after changing a network's weights (rainbow sampling, clipping). Pure;
    vmap it over seeds or samples. With ``upto=j`` only the BatchNorms before
    layer j's input are re-estimated (and nothing after is computed).
    """
    self._check_call(variables, x)
    if not self.norms:
      return variables
    x = jnp.asarray(x)
    if x.shape[0] < 2:
      raise ValueError(f"x: need at least 2 examples to estimate BatchNorm statistics,"
                       f" got {x.shape[0]}.")
    stop = None if upto is None else self._index(upto)
    return _estimate_stats(self, variables, x, min(batch_size, x.shape[0]), stop)

  def _with_stats(self, variables: Any, stats: Mapping[int, tuple]) -> Any:
    out = variables
    for i, (mean, var) in stats.items():
      path = self._norm_paths[i]
      old = _get(out, path)
      out = _set(out, path, "mean", jnp.asarray(mean, old["mean"].dtype).reshape(
          old["mean"].shape))
      out = _set(out, path, "var", jnp.asarray(var, old["var"].dtype).reshape(
          old["var"].shape))
    return out


def consumers_of(producers: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
  """`Network.consumers` from already computed `Network.producers`."""
  return [tuple(k for k in range(len(producers)) if j in producers[k])
          for j in range(len(producers))]


def links_of(producers: Sequence[Sequence[int]]) -> list[bool]:
  """`Network.chain_links` from already computed `Network.producers`."""
  cons = consumers_of(producers)
  return [cons[j] == (j + 1,) and tuple(producers[j + 1]) == (j,)
          for j in range(len(producers) - 1)]


def chains_of(links: Sequence[bool]) -> list[tuple[int, ...]]:
  """`Network.chains` from already computed `Network.chain_links`."""
  out, cur = [], [0]
  for j, link in enumerate(links):
    if link:
      cur.append(j + 1)
    else:
      out.append(tuple(cur))
      cur = [j + 1]
  out.append(tuple(cur))
  return out


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _estimate_stats(net: Network, variables: Any, x: Array, batch_size: int,
                    stop: int | None) -> Any:
  from rainbow_jax import evaluate
  xb, yb = evaluate.eval_batches(x, jnp.zeros((x.shape[0],), jnp.int32), batch_size)
  wb = (yb >= 0).astype(jnp.float32)

  def one(xw):
    tap = _Tap(stop=stop, row_weights=xw[1])
    net._forward(variables, xw[0], tap)
    return tap.stats

  per_batch = jax.lax.map(one, (xb, wb))  # per BatchNorm: [nb], [nb, C], [nb, C]
  new = {}
  for i, (t, m, v) in enumerate(per_batch):
    w = t / jnp.sum(t)
    mean = jnp.einsum("b,bc->c", w, m, precision=_precision.STATS)
    var = jnp.einsum("b,bc->c", w, v + (m - mean[None]) ** 2, precision=_precision.STATS)
    new[i] = (mean, var)
  return net._with_stats(variables, new)


# --------------------------------------------------------------------------
# Layer recognition (linen).


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


def _build(found, norm_paths, params, run, root, with_root, x) -> Network:
  """`norm_paths`: per BatchNorm in call order, (its module path, the path of
  its ``mean``/``var`` dict in the variables)."""
  if not found:
    raise ValueError("the model has no weight layer that rainbow_jax can analyse"
                     " (Dense, Conv, plain DenseGeneral; NNX Linear, Conv).")
  layers, seen = [], set()
  for path, kind, in_shape in found:
    name = "/".join(str(p) for p in path)
    if path in seen:
      raise ValueError(f"layer {name} is called more than once in the forward pass (shared"
                       " weights); rainbow_jax needs each weight layer called once.")
    seen.add(path)
    p = _get(params, path)
    layers.append(Layer(name, path, kind, tuple(np.shape(p["kernel"])), "bias" in p,
                        in_shape))
  covered = {(*l.path, k) for l in layers for k in ("kernel", "bias")}
  leftover = [
      "/".join(str(getattr(k, "key", k)) for k in kp)
      for kp, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
      if np.ndim(leaf) >= 2
      and tuple(getattr(k, "key", getattr(k, "name", k)) for k in kp) not in covered]
  if leftover:
    warnings.warn(f"parameters {leftover} belong to no Dense/Conv layer called in the forward"
                  " pass; the analyses ignore them.", stacklevel=3)
  names = tuple("/".join(str(k) for k in name) for name, _ in norm_paths)
  return Network(tuple(layers), names, run, root, with_root,
                 tuple(tuple(path) for _, path in norm_paths),
                 tuple(getattr(x, "shape", np.shape(x)))[1:], tuple(_leaf_shapes(params)))


def _leaf_shapes(tree: Any) -> list[tuple[str, tuple]]:
  """``(path, shape)`` of every array in a nested dict (paths joined by /)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [("/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in kp),
           tuple(getattr(leaf, "shape", np.shape(leaf)))) for kp, leaf in flat]


# --------------------------------------------------------------------------
# NNX.


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


def _nnx_kind(mod: Any, name: str) -> str | None:
  from flax import nnx
  if isinstance(mod, nnx.Linear):
    return "dense"
  if isinstance(mod, nnx.Conv):
    if mod.feature_group_count != 1:
      raise ValueError(f"layer {name}: grouped/depthwise convolutions are not supported.")
    return "conv"
  if isinstance(mod, (nnx.LinearGeneral, nnx.Einsum, nnx.Embed, nnx.ConvTranspose)):
    raise ValueError(f"layer {name} ({type(mod).__name__}) is a weight layer rainbow_jax"
                     " cannot analyse (supported: Linear, Conv).")
  return None


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
    for path, sub in nnx.iter_modules(m):
      name = "/".join(str(p) for p in path)
      if isinstance(sub, nnx.BatchNorm):
        sub.__class__ = _nnx_wrapper(type(sub))
        sub._rj_hook = bn_hook(tap)
        continue
      kind = _nnx_kind(sub, name)
      if kind is not None:
        sub.__class__ = _nnx_wrapper(type(sub))
        sub._rj_hook = weight_hook(tuple(path), kind)

  def run(vs, inp, tap):
    m = merged(vs)
    hook_all(m, lambda path, kind: lambda self, call, h, *a, **k: tap.post(
        call(tap(h), *a, **k)), tap)
    try:
      return m(inp, **call_kwargs)
    except _Stop:
      return None

  found, norms = [], []

  def discover(vs, inp):
    m = merged(vs)

    def weight_hook(path, kind):
      def hook(self, call, h, *a, **k):
        found.append((path, kind, tuple(h.shape)))
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
  return _build(found, [(p, p) for p in norms], template, run, lambda vs: vs,
                lambda vs, r: r, x)


# --------------------------------------------------------------------------
# PyTorch weights (weight-only analyses).


class TorchWeights(NamedTuple):
  """Weights read from PyTorch, in the canonical (Flax) layout.

  Attributes:
    names: state-dict names of the weight layers, in registration order.
    kernels: kernels, Dense ``[in, out]``, Conv ``[K, K, C_in, C_out]``.
    dropped: names of the tensors left out (biases, BatchNorm vectors and
      statistics), as the SVR reference code drops them.
  """

  names: tuple
  kernels: list
  dropped: tuple


def _numpy(t: Any) -> np.ndarray:
  if hasattr(t, "detach"):  # a torch tensor, without importing torch
    t = t.detach().cpu()
    if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
      t = t.float()
    return t.numpy()
  return np.asarray(t)


def _torch_kernel(w: np.ndarray, name: str) -> np.ndarray:
  if w.ndim == 2:
    return np.ascontiguousarray(w.T)  # [out, in] → [in, out]
  if w.ndim >= 3:
    # [C_out, C_in, *window] → [*window, C_in, C_out]
    return np.ascontiguousarray(np.transpose(w, (*range(2, w.ndim), 1, 0)))
  raise ValueError(f"{name}: a weight of shape {w.shape} is not a layer's weight.")


def from_torch(weights: Any, *, fold_batchnorm: bool = False, eps: float = 1e-5
               ) -> TorchWeights:
  """PyTorch weights → canonical kernels, for spectra, Marchenko–Pastur, SVR.

  Args:
    weights: a ``torch.nn.Module`` (its ``state_dict()``), a state dict
      (name → tensor or array), or a sequence of tensors/arrays in PyTorch
      layout (``[out, in]``, ``[C_out, C_in, *window]``). Order: the state
      dict's, i.e. module registration order (for the usual sequential and
      ResNet/VGG definitions, the order of the forward pass).
    fold_batchnorm: fold each BatchNorm (``weight``, ``bias``,
      ``running_mean``, ``running_var`` following a conv or linear layer in
      the state dict) into that layer's weight, W ← W·γ/√(σ² + eps) per
      output channel, as inference computes it. Default: BatchNorm vectors
      are dropped like biases (what the SVR reference code does), and listed
      in ``dropped``.
    eps: BatchNorm epsilon for folding (PyTorch's default 1e-5).

  Returns:
    `TorchWeights`. A linear layer right after a conv layer reads PyTorch's
    channels-first flatten; its input is reordered to Flax's channels-last
    one, so the kernels are those of the same network written in Flax.
  """
  if hasattr(weights, "state_dict") and callable(weights.state_dict):
    weights = weights.state_dict()
  if isinstance(weights, Mapping):
    items = list(weights.items())
  else:
    items = [(f"weights[{i}]", w) for i, w in enumerate(weights)]
  if not items:
    raise ValueError("no weights given.")
  names, kernels, dropped = [], [], []
  pending = None  # index of the last weight layer, for folding
  i = 0
  while i < len(items):
    name, t = items[i]
    a = _numpy(t)
    prefix = name.rsplit(".", 1)[0] if "." in name else name
    is_bn = isinstance(weights, Mapping) and f"{prefix}.running_var" in weights
    if is_bn and name.endswith(".weight"):
      group = {k.rsplit(".", 1)[1]: _numpy(v) for k, v in items if k.startswith(prefix + ".")
               and k.count(".") == name.count(".")}
      n_group = len(group)
      if fold_batchnorm:
        if pending is None:
          raise ValueError(f"BatchNorm {prefix} follows no conv or linear layer to fold into.")
        scale = group["weight"] / np.sqrt(group["running_var"] + eps)
        kernels[pending] = kernels[pending] * scale.astype(kernels[pending].dtype)
        pending = None
      dropped.extend(f"{prefix}.{k}" for k in group)
      i += n_group
      continue
    if a.ndim < 2:
      dropped.append(name)
      i += 1
      continue
    if not np.issubdtype(a.dtype, np.floating):
      raise TypeError(f"{name}: weights must be floating, got {a.dtype}.")
    if a.ndim == 2 and kernels and kernels[-1].ndim >= 3:
      # A linear layer after a conv reads PyTorch's (C, *space) flatten;
      # canonical is Flax's (*space, C).
      c = kernels[-1].shape[-1]
      if a.shape[1] % c:
        raise ValueError(f"{name} has {a.shape[1]} inputs, not a multiple of the previous"
                         f" conv's {c} channels.")
      p = a.shape[1] // c
      a = a.reshape(a.shape[0], c, p).transpose(0, 2, 1).reshape(a.shape[0], -1)
    kernels.append(_torch_kernel(a, name))
    names.append(name)
    pending = len(kernels) - 1
    i += 1
  if not kernels:
    raise ValueError("no weight of rank ≥ 2 among the given tensors.")
  return TorchWeights(tuple(names), [jnp.asarray(k) for k in kernels], tuple(dropped))


__all__ = ["Layer", "Network", "TorchWeights", "chains_of", "consumers_of", "from_linen",
           "from_nnx", "from_torch", "links_of", "nnx_variables"]
