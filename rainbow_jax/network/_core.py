"""The `Network` every analysis reads: weight layers in call order, the tap
that reads and edits their inputs, the variables' canonical layout, and the
structure (producers, chains) of the forward pass. The adapters (`_linen`,
`_nnx`) build it; see the package docstring for the contract."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import _batches
from rainbow_jax import _precision

Array = jax.Array


class Layer(NamedTuple):
  """One weight layer of a `Network`.

  Attributes:
    name: its parameter path joined by ``/`` (e.g. ``'block_1/Conv_0'``).
    path: the path of its parameter dict (keys into the params tree).
    kind: ``'dense'``, ``'conv'``, ``'embedding'`` (a table read by token ids:
      a dense layer whose input is the one-hot tokens) or ``'attention'`` (a
      query, key, value or output projection, a dense layer whose heads are
      in `heads`).
    kernel_shape: canonical kernel shape (``[in, out]`` or
      ``[*window, C_in, C_out]``), what `Network.kernels` returns.
    bias: whether it has a bias.
    input_shape: shape of its canonical input in the discovery pass (batch
      of the example input first; a token sequence ``[B, T, d]``).
    param: the name of its weight array (``'kernel'``; ``'embedding'`` for
      an embedding table).
    stored_shape: the shape of that array in the variables (a projection
      ``[d, heads, head_dim]`` is the canonical ``[d, heads·head_dim]``; a
      grouped conv's ``[*window, C_in/groups, C_out]``).
    heads: the number of attention heads of a projection: the canonical
      matrix's outputs (q, k, v) or inputs (output projection) are ``heads``
      blocks of ``head_dim`` in head order; None for other layers.
    groups: feature groups of a convolution (1: a plain one).
    calls: how many times the forward pass calls the layer (shared weights):
      its inputs from every call are samples of one layer.
  """

  name: str
  path: tuple
  kind: str
  kernel_shape: tuple
  bias: bool
  input_shape: tuple
  param: str = "kernel"
  stored_shape: tuple = ()
  heads: int | None = None
  groups: int = 1
  calls: int = 1


class _Reader(NamedTuple):
  """How an adapter reads one weight layer's call (built from the module).

  kind: as `Layer.kind`; param: the weight array's name; in_axes: trailing
  input axes contracted with the kernel (their product is the canonical
  fan-in); heads: as `Layer.heads`; groups: feature groups of a conv;
  vocab: an embedding's number of rows (its input ids become one-hot rows).
  """

  kind: str
  param: str = "kernel"
  in_axes: int = 1
  heads: int | None = None
  groups: int = 1
  vocab: int = 0

  def canonical_input(self, h: Array) -> Array:
    if self.vocab:
      return jax.nn.one_hot(h, self.vocab, dtype=jnp.float32)
    if self.in_axes > 1:
      return h.reshape(*h.shape[:-self.in_axes], -1)
    return h


def general_reader(name: str, cls: str, axis: Any, features: Any, batched: bool, ndim: int,
                   attention: bool) -> _Reader:
  """The reader of a DenseGeneral / LinearGeneral layer: a plain matrix
  product when it contracts trailing input axes (``axis``) into any
  features; an attention projection (`Layer.heads`) when it sits in an
  attention module (q, k, v: features ``(heads, head_dim)``; output:
  input axes ``(heads, head_dim)``)."""
  axes = tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else tuple(axis)))
  feats = (features,) if isinstance(features, int) else tuple(features)
  if batched or axes != tuple(range(ndim - len(axes), ndim)):
    raise ValueError(f"layer {name}: {cls} with axis={axis}, batch dims={batched} on an"
                     f" input of {ndim} dimensions is not a plain matrix product; only"
                     " products over the trailing input axes without batch dims are"
                     " supported.")
  heads = feats[0] if attention and len(feats) == 2 else None  # an output projection's: _build
  return _Reader("attention" if attention else "dense", in_axes=len(axes), heads=heads)


def tapped_call(tap: "_Tap", reader: _Reader, h: Array, call: Callable[[Array], Array],
                table: Callable[[], Array] | None = None) -> Array:
  """One weight-layer call through `tap`: its canonical input is recorded
  (and edited), its output passes `tap.post`. `call` is the layer's own
  forward pass on an input of the form it was given; `table` returns an
  embedding's table (its output from edited one-hot rows is rows @ table)."""
  c = reader.canonical_input(h)
  edited = tap(c)
  if edited is c:
    y = call(h)
  elif reader.vocab:
    y = jnp.matmul(edited, table(), precision=jax.lax.Precision.HIGHEST)
  else:
    y = call(edited.reshape(h.shape))
  return tap.post(y)


def batch_moments(x: Array, axes: tuple, row_weights: Array) -> tuple[Array, Array, Array]:
  """A BatchNorm input's weighted statistics over one batch: (Σ weights,
  mean ``[C]``, variance ``[C]``) over every axis of ``x`` but the feature
  `axes`, row ``b`` weighted by ``row_weights[b]`` (0: padding)."""
  red = tuple(a for a in range(x.ndim) if a not in axes)
  w = row_weights.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
  w = jnp.broadcast_to(w, [x.shape[a] if a not in axes else 1 for a in range(x.ndim)])
  total = jnp.sum(w)
  mean = jnp.sum(x * w, axis=red) / total
  dev = x - jnp.expand_dims(mean, red)
  var = jnp.sum(dev * dev * w, axis=red) / total
  return total, mean.reshape(-1), var.reshape(-1)


def pooled_moments(total: Array, mean: Array, var: Array) -> tuple[Array, Array]:
  """Per-batch statistics ``[nb]``, ``[nb, C]``, ``[nb, C]`` (`batch_moments`)
  combined into the mean and variance over all rows (law of total
  variance)."""
  w = total / jnp.sum(total)
  mu = jnp.einsum("b,bc->c", w, mean, precision=_precision.STATS)
  return mu, jnp.einsum("b,bc->c", w, var + (mean - mu[None]) ** 2, precision=_precision.STATS)


class _Stop(Exception):
  """Raised inside a forward pass once the requested layer inputs are in."""


class _Tap:
  """What one forward pass does at the weight layers and BatchNorms, in call
  order.

  At weight layer j: ``edits[j]`` replaces its input, the input is recorded
  (when `stop` is set) and the pass stops once layer `stop`'s input is in;
  ``outs[j]`` replaces its output. `calls` maps the forward pass's weight-layer
  calls to layer indices (None: call i is layer i); a layer called several
  times (shared weights) is edited at every call, and its recorded input is
  its calls' inputs stacked on axis 1 (``[B, calls, …]``). At every BatchNorm:
  inference mode from its running statistics, or, with ``row_weights`` given,
  normalisation by the statistics of the current batch (rows weighted,
  padding weight 0), recorded in ``stats`` — what re-estimating the
  statistics needs. With ``through``, the pass records layer inputs without
  stopping and records every BatchNorm's input (what `Segments` traces).
  """

  def __init__(self, edits=None, stop=None, outs=None, row_weights=None, calls=None,
               through=False):
    self.edits, self.stop, self.outs = edits or {}, stop, outs or {}
    self.row_weights, self.calls, self.through = row_weights, calls, through
    self.count, self.current, self.stats = 0, None, []
    self.norm_inputs: list = []
    """With ``through``: ``(input, feature axes)`` of every BatchNorm call."""
    self._inputs: dict = {}
    self._last = None
    if stop is not None:
      self._last = stop if calls is None else max(
          c for c, j in enumerate(calls) if j <= stop)

  def __call__(self, h):
    c = self.count
    self.count += 1
    j = c if self.calls is None else self.calls[c]
    self.current = j
    if j in self.edits:
      h = self.edits[j](h)
    if self._last is not None:
      self._inputs.setdefault(j, []).append(h)
      if c >= self._last and not self.through:
        raise _Stop
    return h

  @property
  def captured(self) -> list:
    """The recorded inputs of layers 0…stop, in layer order."""
    return [v[0] if len(v) == 1 else jnp.stack(v, axis=1)
            for j, v in sorted(self._inputs.items()) if j <= self.stop]

  def post(self, y):
    j = self.current
    return self.outs[j](y) if j in self.outs else y

  def norm(self, x, mean, var, scale, bias, axis, epsilon, dtype):
    """BatchNorm along feature `axis` (an int or tuple)."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % x.ndim for a in axes)
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    if self.through:
      self.norm_inputs.append((x, axes))
    if self.row_weights is not None:
      total, mean, var = batch_moments(x, axes, self.row_weights)
      self.stats.append((total, mean, var))
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
  _calls: tuple | None = dataclasses.field(default=None, repr=False)
  """The layer index of each weight-layer call of the forward pass, where a
  layer is called more than once (None: call i is layer i)."""
  precision: str = "float32"
  """Matmul precision of the model's forward pass (`rainbow_jax._precision`):
  ``"float32"`` (float32-exact on every device, the default),
  ``"tensorfloat32"``, ``"bfloat16"`` or ``"default"`` (the backend's own:
  TF32 on recent NVIDIA GPUs). Change it with `with_precision`."""
  _key: Any = dataclasses.field(default=None, repr=False)
  """What determines the network, where it can be hashed: two networks with
  equal keys (and precision) are equal, so the programs compiled for one
  serve the other (a network rebuilt per seed compiles nothing again).
  None: a network equals only itself."""

  def __eq__(self, other: Any) -> bool:
    if self is other:
      return True
    if not isinstance(other, Network) or self._key is None or other._key is None:
      return False
    return (self._key, self.precision) == (other._key, other.precision)

  def __hash__(self) -> int:
    return id(self) if self._key is None else hash((self._key, self.precision))

  def with_precision(self, precision: str) -> "Network":
    """The same network, its forward pass run at `precision`."""
    return dataclasses.replace(self, precision=_precision.check_forward(precision))

  def _tap(self, **kwargs) -> "_Tap":
    return _Tap(calls=self._calls, **kwargs)

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
    """The weight layers' kernels in call order, canonical layout
    (`Layer.kernel_shape`: an attention projection as its ``[d_model,
    heads·head_dim]`` matrix, an embedding table ``[vocab, d]``, a grouped
    conv as the block-diagonal kernel of the same operator)."""
    root = self._root(variables)
    return [_canonical(l, _get(root, l.path)[l.param]) for l in self.layers]

  def biases(self, variables: Any) -> list[Array | None]:
    """The weight layers' biases ``[out]`` (None where a layer has none)."""
    root = self._root(variables)
    return [_get(root, l.path)["bias"].reshape(-1) if l.bias else None for l in self.layers]

  def with_kernels(self, variables: Any, kernels: Mapping[int, Array] | Sequence[Array],
                   biases: Mapping[int, Array] | None = None) -> Any:
    """`variables` with kernels (and biases) replaced.

    Args:
      variables: the model's variables.
      kernels: all kernels in call order, or ``{layer index: kernel}``;
        canonical shapes (`Layer.kernel_shape`). A grouped conv keeps only
        the entries inside its groups (its operator cannot hold others).
      biases: optional ``{layer index: bias}``, ``[out]``.

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
        param = layer.param if key == "kernel" else "bias"
        old = _get(root, layer.path)[param]
        want = layer.kernel_shape if key == "kernel" else (int(np.prod(np.shape(old))),)
        if jnp.shape(value) != tuple(want):
          raise ValueError(f"{layer.name}: {key} of shape {jnp.shape(value)}, expected"
                           f" {tuple(want)} (canonical layout).")
        value = jnp.asarray(value, jnp.result_type(old))
        value = _stored(layer, value) if key == "kernel" else value.reshape(jnp.shape(old))
        root = _set(root, layer.path, param, value)
    return self._with_root(variables, root)

  def apply(self, variables: Any, x: Array, *,
            edits: Mapping[int, Callable[[Array], Array]] | None = None) -> Array:
    """The model's output on ``x``; ``edits[j]`` (if given) replaces the
    input ``h`` of weight layer j by ``edits[j](h)`` (clipping, alignment).

    Under `jax.vmap` over an edit's parameters, the layers before the
    edited one do not depend on the mapped axis and run once.
    """
    edits = {self._index(j): f for j, f in (edits or {}).items()}
    return self._forward(variables, x, self._tap(edits=edits))

  __call__ = apply

  def layer_inputs(self, variables: Any, x: Array, upto: int | None = None) -> list[Array]:
    """The input of every weight layer on batch ``x`` (what the tutorial's
    forward hooks capture): ``[B, d]`` for dense layers, ``[B, *space, C]``
    for conv layers. With ``upto=j``, only layers 0…j, and nothing after
    layer j's input is computed."""
    if upto is not None:
      upto = self._index(upto)
    tap = self._tap(stop=len(self.layers) - 1 if upto is None else upto)
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
      tap = self._tap(stop=n - 1, outs=outs)
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

  def _affine_path(self, i: int) -> tuple:
    """Where BatchNorm i's scale and offset live: beside its statistics
    (NNX), or under ``params`` where the statistics are under
    ``batch_stats`` (linen)."""
    path = self._norm_paths[i]
    return ("params", *path[1:]) if path and path[0] == "batch_stats" else tuple(path)

  def norm_affine(self, variables: Any) -> list[tuple[Array | None, Array | None]]:
    """Per BatchNorm (call order) its scale and offset ``[C]`` (None where
    it has none)."""
    out = []
    for i in range(len(self.norms)):
      own = _get(variables, self._affine_path(i))
      out.append(tuple(own[k].reshape(-1) if k in own else None for k in ("scale", "bias")))
    return out

  def with_norm_affine(self, variables: Any, affine: Mapping[int, tuple]) -> Any:
    """`variables` with BatchNorm i's scale and offset replaced by
    ``affine[i] = (scale, offset)`` (each ``[C]``, or None to keep it)."""
    for i, pair in affine.items():
      path = self._affine_path(i)
      for key, value in zip(("scale", "bias"), pair):
        if value is None:
          continue
        old = _get(variables, path)[key]
        variables = _set(variables, path, key,
                         jnp.asarray(value, old.dtype).reshape(old.shape))
    return variables

  def channel_reach(self, variables: Any, x: Array, layer: int) -> dict:
    """How weight layer `layer`'s output channels reach later inputs along
    paths that pass no other weight layer (skip connections, normalisation,
    activations, padding, subsampling): ``{('layer', k) or ('norm', i):
    [C_out, C_in]}``, Σ |∂ input / ∂ output| over batch ``x`` and positions,
    for every weight layer k and BatchNorm i it reaches, linearised where
    every weight layer's output is a large positive constant (ReLUs on those
    paths active; a BatchNorm with a negative scale may hide a channel). A
    residual stream carries a channel unchanged (one entry per row and
    column); attention or a channel-mixing path spreads it."""
    layer = self._index(layer)
    n = len(self.layers)
    c_out = self.layers[layer].kernel_shape[-1]

    def reached(t):
      # Every weight layer's output is replaced by a large constant (other
      # layers: no path through them; all: ReLUs after them active, so a
      # channel's path does not depend on the data), layer `layer`'s plus t.
      def edit(y, k):
        y = jnp.full(y.shape, 100.0, y.dtype)
        if k != layer or y.shape[-1] != c_out:
          return y
        return y + t.astype(y.dtype).reshape((1,) * (y.ndim - 1) + (c_out,))
      tap = self._tap(stop=n - 1, through=True, outs={k: functools.partial(edit, k=k)
                                                      for k in range(n)})
      self._forward(variables, x, tap)
      return tap.captured, [h for h, _ in tap.norm_inputs]

    ins, norm_ins = jax.jit(jax.jacfwd(reached))(jnp.zeros((c_out,), jnp.float32))
    total = lambda j: np.asarray(jnp.sum(jnp.abs(j), axis=tuple(range(j.ndim - 2)))).T
    out = {("layer", k): total(j) for k, j in enumerate(ins) if k != layer}
    out.update({("norm", i): total(j) for i, j in enumerate(norm_ins)})
    return {key: m for key, m in out.items() if np.any(m > 0)}

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
  xb, yb = _batches.eval_batches(x, jnp.zeros((x.shape[0],), jnp.int32), batch_size)
  wb = (yb >= 0).astype(jnp.float32)

  def one(xw):
    tap = net._tap(stop=stop, row_weights=xw[1])
    net._forward(variables, xw[0], tap)
    return tap.stats

  per_batch = jax.lax.map(one, (xb, wb))  # per BatchNorm: [nb], [nb, C], [nb, C]
  return net._with_stats(variables, {i: pooled_moments(*s) for i, s in enumerate(per_batch)})


def _group_index(layer: Layer) -> tuple[Array, Array]:
  """For a grouped conv: per canonical input channel, its index in the
  stored kernel's group; per (input, output) channel, whether they share a
  group."""
  c_in, c_out = layer.kernel_shape[-2:]
  per_in, per_out = c_in // layer.groups, c_out // layer.groups
  c = np.arange(c_in)
  same = (c // per_in)[:, None] == (np.arange(c_out) // per_out)[None, :]
  return c % per_in, same


def _canonical(layer: Layer, w: Array) -> Array:
  """A stored weight array in the canonical layout (`Layer.kernel_shape`)."""
  if layer.groups > 1:
    idx, same = _group_index(layer)
    return jnp.where(same, jnp.take(w, idx, axis=-2), 0).astype(w.dtype)
  return w.reshape(layer.kernel_shape)


def _stored(layer: Layer, w: Array) -> Array:
  """A canonical kernel in the layout of the variables (`_canonical`'s
  inverse; a grouped conv keeps the entries inside its groups)."""
  if layer.groups > 1:
    c_out = layer.kernel_shape[-1]
    per_in = layer.kernel_shape[-2] // layer.groups
    first = (np.arange(c_out) // (c_out // layer.groups)) * per_in  # group start per output
    rows = first[None, :] + np.arange(per_in)[:, None]  # [per_in, C_out]
    return jnp.take_along_axis(w, jnp.asarray(rows).reshape(
        (1,) * (w.ndim - 2) + rows.shape), axis=-2)
  return w.reshape(layer.stored_shape)


def _canonical_shape(reader: _Reader, stored: tuple) -> tuple:
  if reader.groups > 1:
    return (*stored[:-2], stored[-2] * reader.groups, stored[-1])
  if reader.kind == "conv":
    return stored
  return (int(np.prod(stored[:reader.in_axes])), int(np.prod(stored[reader.in_axes:])))


_TOKEN_PARAMS = ("position", "pos_emb", "cls", "class_token", "register")
"""Names of parameters added to a token sequence rather than multiplied
(position embeddings, class and register tokens): no weight layer, and
expected to be none, so `_build` does not warn about them."""


def _build(found, norm_paths, params, run, root, with_root, x, key=None) -> Network:
  """`norm_paths`: per BatchNorm in call order, (its module path, the path of
  its ``mean``/``var`` dict in the variables); `key`: what determines the
  model's forward pass besides the variables' shapes (`Network._key`; None
  when it cannot be hashed)."""
  if not found:
    raise ValueError("the model has no weight layer that rainbow_jax can analyse"
                     " (Dense, DenseGeneral, Conv, Embed; NNX Linear, LinearGeneral, Conv,"
                     " Embed).")
  order: dict = {}  # path -> layer index, in the order of first calls
  for path, reader, in_shape in found:
    order.setdefault(path, len(order))
  calls = [order[path] for path, _, _ in found]
  layers, first = [], {}
  for path, reader, in_shape in found:
    j = order[path]
    name = "/".join(str(p) for p in path)
    if j < len(layers):  # a later call of a shared layer
      if reader.kind == "conv":
        raise ValueError(f"layer {name} is a convolution called more than once in the forward"
                         " pass (shared weights); only dense layers, projections and"
                         " embeddings may be shared.")
      if in_shape != first[j]:
        raise ValueError(f"layer {name} is called more than once with inputs of different"
                         f" shapes ({first[j]} and {in_shape}); a shared layer needs one"
                         " input shape.")
      n = layers[j].calls + 1
      layers[j] = layers[j]._replace(calls=n, input_shape=(in_shape[0], n, *in_shape[1:]))
      continue
    first[j] = in_shape
    p = _get(params, path)
    stored = tuple(np.shape(p[reader.param]))
    heads = reader.heads
    if reader.kind == "attention" and heads is None and reader.in_axes == 2:
      heads = stored[0]  # an output projection reads [heads, head_dim]
    layers.append(Layer(name, path, reader.kind, _canonical_shape(reader, stored), "bias" in p,
                        in_shape, reader.param, stored, heads, reader.groups))
  covered = {(*l.path, k) for l in layers for k in (l.param, "bias")}
  leftover = [
      "/".join(str(getattr(k, "key", k)) for k in kp)
      for kp, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
      if np.ndim(leaf) >= 2
      and tuple(getattr(k, "key", getattr(k, "name", k)) for k in kp) not in covered]
  leftover = [n for n in leftover if not any(t in n.rsplit("/", 1)[-1].lower()
                                             for t in _TOKEN_PARAMS)]
  if leftover:
    warnings.warn(f"parameters {leftover} belong to no weight layer called in the forward"
                  " pass; the analyses ignore them.", stacklevel=3)
  names = tuple("/".join(str(k) for k in name) for name, _ in norm_paths)
  example = tuple(getattr(x, "shape", np.shape(x)))[1:]
  leaves = tuple(_leaf_shapes(params))
  if key is not None:
    key = (key, example, str(getattr(x, "dtype", np.asarray(x).dtype)), leaves)
    try:
      hash(key)
    except TypeError:  # a module field that cannot be hashed (a list, an array)
      key = None
  return Network(tuple(layers), names, run, root, with_root,
                 tuple(tuple(path) for _, path in norm_paths), example, leaves,
                 tuple(calls) if calls != list(range(len(calls))) else None, _key=key)


def _leaf_shapes(tree: Any) -> list[tuple[str, tuple]]:
  """``(path, shape)`` of every array in a nested dict (paths joined by /)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [("/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in kp),
           tuple(getattr(leaf, "shape", np.shape(leaf)))) for kp, leaf in flat]
