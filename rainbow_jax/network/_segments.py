"""A `Network`'s forward pass cut at its weight layers' inputs, to be run
layer by layer: what a layer-by-layer analysis (rainbow sampling) needs to
stay linear in depth.

The forward pass is traced once (`jax.make_jaxpr`) on a batch of the size
the analysis streams. Its equations run in call order, so the input of
weight layer k is defined after layer k − 1's; the cut at layer k's input
keeps exactly the values that later equations read (the residual stream and
a block's branch, not only layer k's input). `Segments.advance` evaluates
the equations between two cuts, from the values kept at the first; the S
networks' kept values over the whole data are what a layer-by-layer pass
holds in memory (``(S + 1) × N ×`` the values kept at one cut).
"""

from __future__ import annotations

import weakref
from typing import Any

import jax
from jax.extend import core as jcore

from rainbow_jax.network._core import Network, batch_moments, pooled_moments

Array = jax.Array

_CACHE: "weakref.WeakKeyDictionary[Network, dict]" = weakref.WeakKeyDictionary()


class Segments:
  """The forward pass of `net` cut at every weight layer's input.

  Cut k (k = 0…L−1) sits where layer k's input is complete; cut L at the end
  of the pass. ``advance(k, variables, state)`` goes from cut k − 1 to cut k
  (from the input batch for k = 0). BatchNorms between two cuts are listed
  in ``norms[k]`` (indices into ``net.norms``) with the equation that makes
  their input, so their statistics can be re-estimated in order.

  Build with `segments`; hashable by identity (a static argument of
  `jax.jit`), one per network, variables structure and batch shape.
  """

  def __init__(self, net: Network, variables: Any, batch: jax.ShapeDtypeStruct):
    n_layers = len(net)
    if net._calls is not None:
      raise ValueError("a layer called more than once (shared weights) has no single cut"
                       " where its input is complete.")

    taps = []  # the tap of the traced pass: BatchNorm axes, read after tracing

    def traced(vs, x):
      tap = net._tap(stop=n_layers - 1, through=True)
      out = net._forward(vs, x, tap)
      taps.append(tap)
      return jax.tree_util.tree_leaves(out), tap.captured, [h for h, _ in tap.norm_inputs]

    closed = jax.make_jaxpr(traced)(variables, batch)
    tap = taps[0]
    jaxpr = closed.jaxpr
    n_vars = len(jax.tree_util.tree_leaves(variables))
    if len(tap.norm_inputs) != len(net.norms):
      raise ValueError("a BatchNorm called more than once in the forward pass.")
    self.net = net
    self.norm_axes = tuple(axes for _, axes in tap.norm_inputs)
    self._jaxpr = jaxpr
    self._eqns = list(jaxpr.eqns)
    self._consts = dict(zip(jaxpr.constvars, closed.consts))
    self._var_in = list(jaxpr.invars[:n_vars])
    x_var = jaxpr.invars[n_vars]
    n_out = len(jaxpr.outvars) - n_layers - len(net.norms)
    layer_outs = jaxpr.outvars[n_out:n_out + n_layers]
    norm_outs = jaxpr.outvars[n_out + n_layers:]

    defined = {x_var: -1}
    last_use: dict = {}
    for i, eqn in enumerate(self._eqns):
      for v in eqn.invars:
        if not isinstance(v, jcore.Literal):
          last_use[v] = i
      for v in eqn.outvars:
        defined[v] = i
    for v in (*layer_outs, *norm_outs):
      if isinstance(v, jcore.Literal) or v not in defined:
        raise ValueError("a layer or BatchNorm input that is not computed from the input batch.")
    cuts = [defined[v] for v in layer_outs]
    if any(b < a for a, b in zip(cuts, cuts[1:])):
      raise ValueError("weight layers whose inputs are not complete in call order.")
    self.cuts = (*cuts, len(self._eqns) - 1)
    self._layer_in = tuple(layer_outs)
    lo = lambda k: -2 if k == 0 else self.cuts[k - 1]
    self.norms = tuple(
        tuple(i for i, v in enumerate(norm_outs) if lo(k) < defined[v] <= self.cuts[k])
        for k in range(n_layers + 1))
    self._norm_in = tuple(norm_outs)
    self._norm_eqn = tuple(defined[v] for v in norm_outs)
    # The values kept at each cut: made at or before it, read after it.
    self._kept = []
    for c in (-1, *self.cuts):
      kept = [v for v, d in defined.items() if d <= c < last_use.get(v, -1)]
      self._kept.append(tuple(sorted(kept, key=lambda v: (defined[v], str(v)))))

  def _run(self, k: int, variables: Any, state: list, until: int, outs: tuple) -> list:
    """Evaluates the equations after cut k − 1 up to equation `until` (with
    JAX's own interpreter, on a jaxpr of those equations) from the values
    kept at cut k − 1; returns the values `outs`."""
    start = -1 if k == 0 else self.cuts[k - 1]
    part = self._jaxpr.replace(
        constvars=list(self._consts), invars=[*self._var_in, *self._kept[k]],
        outvars=list(outs), eqns=self._eqns[start + 1:until + 1], debug_info=None)
    return jax.core.eval_jaxpr(part, list(self._consts.values()),
                               *jax.tree_util.tree_leaves(variables), *state)

  def start(self, x: Array) -> list:
    """The values kept before cut 0 for input batches `x` (any leading
    axes): the inputs themselves, if anything reads them."""
    return [x] if self._kept[0] else []

  def advance(self, k: int, variables: Any, state: list) -> tuple[list, Array | None]:
    """From the values kept at cut k − 1 (`start` for k = 0) to those kept at
    cut k, and layer k's input there (None for k = L, the end)."""
    last = k >= len(self._layer_in)
    outs = self._run(k, variables, state, self.cuts[k],
                     (*self._kept[k + 1], *(() if last else (self._layer_in[k],))))
    n = len(self._kept[k + 1])
    return outs[:n], None if last else outs[n]

  def norm_input(self, k: int, i: int, variables: Any, state: list) -> Array:
    """The input of BatchNorm i (one of ``norms[k]``) from the values kept at
    cut k − 1, with `variables`' statistics for the BatchNorms before it."""
    return self._run(k, variables, state, self._norm_eqn[i], (self._norm_in[i],))[0]

  def reestimate(self, k: int, variables: Any, state: list, row_weights: Array) -> Any:
    """`variables` with the BatchNorms between cuts k − 1 and k re-estimated
    in call order on the batches of `state` (the values kept at cut k − 1,
    ``[nb, B, …]``; rows weighted by ``row_weights [nb, B]``, 0 for padding):
    each from its input over all rows, the earlier ones already
    re-estimated, inference mode throughout."""
    for i in self.norms[k]:
      def one(inp, i=i, variables=variables):
        st, w = inp
        return batch_moments(self.norm_input(k, i, variables, st), self.norm_axes[i], w)
      stats = jax.lax.map(one, (state, row_weights))
      variables = self.net._with_stats(variables, {i: pooled_moments(*stats)})
    return variables


def segments(net: Network, variables: Any, batch: Any) -> Segments:
  """The `Segments` of `net` for `variables` of this structure and batches
  of ``batch``'s shape and dtype (an array or `jax.ShapeDtypeStruct`),
  cached per network.

  Raises:
    ValueError: a network the cuts cannot describe (a shared layer, a
      BatchNorm called twice); callers fall back to re-running the prefix.
  """
  spec = jax.ShapeDtypeStruct(tuple(batch.shape), batch.dtype)
  shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)
  key = (jax.tree_util.tree_structure(variables),
         tuple((s.shape, str(s.dtype)) for s in jax.tree_util.tree_leaves(shapes)),
         spec.shape, str(spec.dtype))
  cache = _CACHE.setdefault(net, {})
  if key not in cache:
    cache[key] = Segments(net, shapes, spec)
  return cache[key]
