"""Gaussian rainbow networks: new networks sampled from a trained one.

The rainbow model (Guth, Ménard, Rochette & Mallat) says the neurons of a
trained layer behave like i.i.d. samples of a Gaussian whose covariance is
the layer's weight covariance, up to a rotation fixed by the previous
layers. `generate` samples S new networks layer by layer, as the tutorial's
``generate_network`` does, but all S at once:

1. layer j's rows are drawn from N(0, C_j), C_j = WⱼᵀWⱼ / n the reference
   weight covariance in the reference's input basis: W' = G F with G white
   ``[n', R]`` and F = S Vᵀ/√n from the SVD W = U S Vᵀ (`weight_factor`;
   with several seeds, their rows stacked after alignment, i.e. the
   averaged covariance). The tutorial's code omits the 1/√n, which scales
   every row by √n: harmless for bias-free ReLU networks, which only change
   their logits' scale, but wrong in general; we use the covariance itself;
2. the sampled weights are realigned to the generated network's own input
   basis, W' ← W' Aᵀ, with A the alignment of the previous layer (A φ ≈ ψ
   between reference and generated activations; `rainbow_jax.align`);
3. one pass over the data computes the cross second moment between the
   reference's and every generated network's input to layer j + 1, and its
   Procrustes map gives the next A. The pass is linear in depth: each
   network's forward pass is cut at its weight layers' inputs
   (`rainbow_jax.network.Segments`), and the values it kept at layer j's
   input (its residual stream and branches, per example) are carried to
   layer j + 1's — only the layers in between run, one compiled program
   per layer (draw, realign, pass, alignment). Where a forward pass cannot
   be cut (a layer called twice), each pass evaluates the whole networks;
4. the classifier is the reference's, realigned.

Biases: a neuron of a layer with a bias is its ``(weights, bias)`` vector;
rows are sampled from the joint second moment of those vectors
(`neuron_matrix`), and only the weight part is realigned.

BatchNorm: after each layer is drawn, the generated networks' BatchNorm
statistics are re-estimated on the data before the next alignment pass —
what the rainbow paper's code does after resampling; stale statistics of
the reference would normalise the new neurons with the old neurons' means
and variances. Each BatchNorm gets the mean and variance of its input
over the data, in inference mode with the earlier ones already
re-estimated (`Segments.reestimate`); where the pass cannot be cut, one
batch-mode pass per layer and one at the end
(`Network.estimate_batch_stats`; the same numbers when the data is one
batch). A sampled layer's BatchNorm scale and
offset stay the reference's, channel by channel: the generated neurons are
exchangeable, so this pairs each new neuron with a reference (γ, β) at
random.

Residual networks. A neuron can be resampled only where nothing else reads
its channel index: layer j is sampled only if its output reaches no weight
layer but layer j + 1, and layer j + 1 reads nothing else, without passing
through another weight layer (`Network.chain_links`). A layer whose output
is added to a skip connection
(a ResNet's stem and the last conv of every block, which write into the
residual stream) is not: a new random neuron in channel c would be added to
the skip path's unrelated channel c. Those layers keep the reference's
output neurons — the stream's alignment is the identity, shared by the skip
path and the block output — and are realigned on their inputs like every
layer; the convs inside the blocks are sampled from their covariances. By
default every layer that can be sampled is; asking for another raises an
error naming it. (The rainbow paper samples chains; this extension is ours.)
With ``streams=True`` the stream writers are sampled too, jointly: each
stream channel's lineage — its neuron in every writer, across blocks and
the zero-padded shortcuts between stages, with the scale and offset of the
BatchNorm after each writer — is one Gaussian vector, drawn from the second
moment of the reference's lineages with the same writers (the scale and
offset around their mean: a zero-mean scale would flip half the channels)
(`stream_lineages`, found from the dataflow), so a new channel c is the same
new channel in every block that adds into it.

Layers not listed in ``layers`` keep the reference weights (realigned), and a
generated network may be wider or narrower than the reference
(``gen=``). Everything runs under `jit`; the S samples of a pass share one
compiled program (vmapped on GPU/TPU, in turn on CPU: `stack_axis`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from rainbow_jax import _precision
from rainbow_jax import _axis, _batches, _checks, _compile
from rainbow_jax._linalg import weight_factor as weight_factor
from rainbow_jax import align as _align
from rainbow_jax import consensus as _consensus
from rainbow_jax import spectra as _spectra
from rainbow_jax import network as _network

Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


def neuron_matrix(kernel: Array, bias: Array | None = None) -> Array:
  """The neurons of a layer as rows: ``[n_out, fan_in]`` (`spectra.weight_matrix`),
  with the bias as a last column ``[n_out, fan_in + 1]`` when given."""
  w = _spectra.weight_matrix(kernel)
  if bias is None:
    return w
  _checks.check_array(bias, "bias", 1)
  _checks.check_shape(bias, (w.shape[0],), "bias", "One bias per output neuron.")
  return jnp.concatenate([w, jnp.asarray(bias, w.dtype)[:, None]], axis=1)


def sample_kernel(key: Array, factor: Array, shape: Sequence[int], *,
                  bias: bool = False) -> Array | tuple[Array, Array]:
  """A Flax kernel of `shape` whose ``n_out`` rows are i.i.d. N(0, FᵀF).

  With ``bias=True`` the factor's last column is the bias: returns
  ``(kernel, bias [n_out])``, each neuron's (weights, bias) drawn jointly.
  """
  _checks.check_array(factor, "factor", 2, "[R, fan_in (+1 with a bias)]")
  n_out, fan_in = shape[-1], int(np.prod(shape[:-1]))
  if factor.shape[1] != fan_in + int(bias):
    raise ValueError(f"factor has {factor.shape[1]} columns; a kernel of shape {tuple(shape)}"
                     f" needs {fan_in + int(bias)} (fan-in {fan_in}{' + bias' if bias else ''}).")
  g = jax.random.normal(key, (n_out, factor.shape[0]), factor.dtype)
  return _kernel_of(g, factor, shape, bias)


def _kernel_of(g: Array, factor: Array, shape: Sequence[int], bias: bool):
  """`sample_kernel` given its standard normals ``g [n_out, R]``."""
  w = jnp.matmul(g, factor, precision=_HP)  # [n_out, fan_in (+1)]
  if bias:
    return w[:, :-1].T.reshape(shape), w[:, -1]
  return w.T.reshape(shape)


def sampleable(net: Any, links: Sequence[bool]) -> list[int]:
  """The layers `generate` samples by default: those whose output only the
  next weight layer reads (`links`, `Network.chain_links`), unless it or
  the next layer is a grouped convolution (a new or realigned channel would
  mix channels across its groups)."""
  groups = [l.groups for l in net.layers]
  return [j for j, link in enumerate(links)
          if link and groups[j] == 1 and groups[j + 1] == 1]


@functools.partial(jax.jit, static_argnums=1)
def _broadcast(arrays: list, s: int) -> list:
  """Each array repeated `s` times on a new leading axis, one program."""
  return [jnp.broadcast_to(a, (s, *a.shape)) for a in arrays]


def realign(kernel: Array, a: Array) -> Array:
  """Kernel reading the reference's input → kernel reading the generated
  network's input ψ ≈ A φ (W ← W Aᵀ; ``a`` is ``[d_gen, d_ref]``). Conv
  kernels are realigned on their input channels."""
  _checks.check_array(kernel, "kernel", (2, 3, 4, 5))
  _checks.check_array(a, "a", 2, "[d_gen, d_ref]")
  _checks.check_shape(a, (None, np.shape(kernel)[-2]), "a",
                      "Its columns index the kernel's input channels (d_ref).")
  return jnp.einsum("gr,...ro->...go", a, kernel, precision=_HP)


def _fold(x: Array) -> Array:
  return x.reshape(-1, x.shape[-1])


def _pair_moments(ref_ins, gen_ins, ref_vars, gen_vars, xb: Array, wb: Array,
                  axis: str) -> list:
  """One scan over batches ``xb [nb, B, ...]`` with row weights ``wb [nb, B]``:
  for every pair of folded inputs ``ref_ins(vars, x)[i]``, ``gen_ins(vars,
  x)[i]`` (lists), (Σ ψ φᵀ ``[S, d_gen, d_ref]``, Σ‖φ‖², Σ‖ψ‖² ``[S]``) over
  the S stacked generated networks, run in turn or vmapped (`axis`, resolved)."""

  def body(carry, inp):
    x, w = inp
    phis = []
    for phi in ref_ins(ref_vars, x):
      wf = jnp.repeat(w, phi.shape[0] // x.shape[0])  # conv inputs: positions share a row
      phis.append((phi * wf[:, None], wf))
    if axis == "map":
      # One 2-D product ψᵀ φ per sample.
      def one(v):
        return [(jnp.matmul(psi.T, phi, precision=_HP), jnp.sum(psi * psi * wf[:, None]))
                for psi, (phi, wf) in zip(gen_ins(v, x), phis)]
      sums = lax.map(one, gen_vars)
    else:
      # Samples on axis 1, so that the S products are one 2-D matmul over
      # [n, S·d_gen]: XLA:CPU ran the batched 'snd,ne->sde' 1.6-2.1× slower.
      psis = jax.vmap(gen_ins, in_axes=(0, None), out_axes=1)(gen_vars, x)
      sums = []
      for psi, (phi, wf) in zip(psis, phis):
        n, s, d = psi.shape
        prod = jnp.matmul(psi.reshape(n, s * d).T, phi, precision=_HP).reshape(s, d, -1)
        sums.append((prod, jnp.einsum("nsd,n->s", psi * psi, wf, precision=_HP)))
    out = [(cross + c, tphi + jnp.sum(phi * phi), tpsi + t)
           for (cross, tphi, tpsi), (phi, _), (c, t) in zip(carry, phis, sums)]
    return out, None

  s = jax.tree_util.tree_leaves(gen_vars)[0].shape[0]
  probe = jax.eval_shape(lambda: (
      ref_ins(ref_vars, xb[0]), gen_ins(jax.tree_util.tree_map(lambda a: a[0], gen_vars), xb[0])))
  init = []
  for p_ref, p_gen in zip(*probe):
    dt = jnp.result_type(p_ref.dtype, p_gen.dtype, wb.dtype)  # float64 under x64
    init.append((jnp.zeros((s, p_gen.shape[-1], p_ref.shape[-1]), dt), jnp.zeros((), dt),
                 jnp.zeros((s,), dt)))
  out, _ = lax.scan(body, init, (xb, wb))
  return out


@functools.partial(jax.jit, static_argnames=("ref_net", "gen_net", "layer", "stack_axis"))
def cross_moments(ref_net, gen_net, layer: int, ref_vars, gen_vars, xb: Array, wb: Array,
                  stack_axis: str = "auto"):
  """One pass: Σ ψ φᵀ ``[S, d_gen, d_ref]``, Σ‖φ‖² and Σ‖ψ‖² ``[S]`` at the
  input of `layer`, over batches ``xb [nb, B, ...]`` with row weights
  ``wb [nb, B]`` (0 for padding). Conv inputs fold space into the batch.
  Only the layers before `layer` are evaluated. `stack_axis`: the S
  generated networks run in turn (``'map'``) or vmapped (``'vmap'``);
  ``'auto'``: in turn on CPU, vmapped on GPU/TPU (same numbers)."""
  ins = lambda n: lambda v, x: [_fold(n.layer_inputs(v, x, upto=layer)[layer])]
  return tuple(_pair_moments(ins(ref_net), ins(gen_net), ref_vars, gen_vars, xb, wb,
                             _axis.resolve(stack_axis, "stack_axis"))[0])


def _restat_stack(net, variables, x, upto, batch_size):
  """BatchNorm statistics of S stacked networks re-estimated on ``x`` (up
  to layer `upto`'s input); unchanged without BatchNorm."""
  if not net.norms:
    return variables
  return lax.map(lambda v: net.estimate_batch_stats(v, x, batch_size=batch_size, upto=upto),
                 variables)


_restat = jax.jit(_restat_stack, static_argnames=("net", "upto", "batch_size"))


@functools.partial(jax.jit, static_argnames=("ref_net", "gen_net", "batch_size", "stack_axis"))
def _all_input_moments(ref_net, gen_net, ref_vars, gen_vars, x, xb, wb, batch_size, stack_axis):
  """The generated networks' BatchNorm statistics re-estimated, then
  `cross_moments` at every layer input at once, the whole networks
  evaluated: one compiled program for all layers (the fallback where a
  network's forward pass cannot be cut at its layers, `Segments`)."""
  gen_vars = _restat_stack(gen_net, gen_vars, x, None, batch_size)
  ins = lambda n: lambda v, xs: [_fold(h) for h in n.layer_inputs(v, xs)[1:]]
  return _pair_moments(ins(ref_net), ins(gen_net), ref_vars, gen_vars, xb, wb, stack_axis)


def _restat_stacked(axis: str, seg, k: int, gen_vars, gen_state: list, wb: Array):
  """`Segments.reestimate` for each of the S generated networks (``gen_vars
  [S, …]``, states ``[nb, S, B, …]``), vmapped or in turn (`axis`)."""
  fn = lambda v, st: seg.reestimate(k, v, st, wb)
  if not seg.norms[k]:
    return gen_vars
  if axis == "vmap":
    return jax.vmap(fn, in_axes=(0, 1))(gen_vars, gen_state)
  return lax.map(lambda a: fn(*a), (gen_vars, [jnp.swapaxes(a, 0, 1) for a in gen_state]))


def _advance(ref_seg, gen_seg, k: int, ref_vars, gen_vars, kernel, bias, ref_state, gen_state,
             wb, axis):
  """Cut k − 1 → cut k (`Segments`) over all batches, for the reference
  and the S generated networks (``gen_vars [S, …]``, states ``[nb, S, B,
  …]``): first the generated networks' BatchNorms in between re-estimated,
  then one scan that carries every network's kept values to cut k and sums
  Σ ψ φᵀ ``[S, d_gen, d_ref]``, Σ‖φ‖², Σ‖ψ‖² ``[S]`` at layer k's input.
  Layer k − 1's kernel and bias (``[S, …]``, the generated networks'
  newest layer) are written into ``gen_vars`` first. Returns ``(gen_vars,
  ref_state, gen_state, moments)``; moments are None at k = 0 (the input)
  and at the end of the pass, k = L, where only statistics are
  re-estimated."""
  if k > 0:
    gen_vars = jax.vmap(lambda v, w, b: gen_seg.net.with_kernels(
        v, {k - 1: w}, None if b is None else {k - 1: b}))(gen_vars, kernel, bias)
  gen_vars = _restat_stacked(axis, gen_seg, k, gen_vars, gen_state, wb)
  if k == len(gen_seg.net):
    return gen_vars, None, None, None
  if k == 0:
    ref_state = lax.map(lambda st: ref_seg.advance(0, ref_vars, st)[0], ref_state)
    gen_state = jax.vmap(lambda v, st: lax.map(lambda b: gen_seg.advance(0, v, b)[0], st),
                         in_axes=(0, 1), out_axes=1)(gen_vars, gen_state)
    return gen_vars, ref_state, gen_state, None

  def body(carry, inp):
    rs, gs, w = inp
    rs, phi = ref_seg.advance(k, ref_vars, rs)
    phi = _fold(phi)
    wf = jnp.repeat(w, phi.shape[0] // w.shape[0])  # conv inputs: positions share a row
    phi = phi * wf[:, None]

    def one(v, g):
      g, psi = gen_seg.advance(k, v, g)
      psi = _fold(psi)
      return g, psi, jnp.sum(psi * psi * wf[:, None])

    if axis == "map":
      def product(v, g):
        g, psi, t = one(v, g)
        return g, jnp.matmul(psi.T, phi, precision=_HP), t
      gs, cross, tpsi = lax.map(lambda a: product(*a), (gen_vars, gs))
    else:
      gs, psi, tpsi = jax.vmap(one, out_axes=(0, 1, 0))(gen_vars, gs)
      n, s, d = psi.shape  # one 2-D product over [n, S·d], as in _pair_moments
      cross = jnp.matmul(psi.reshape(n, s * d).T, phi, precision=_HP).reshape(s, d, -1)
    c_cross, c_phi, c_psi = carry
    return (c_cross + cross, c_phi + jnp.sum(phi * phi), c_psi + tpsi), (rs, gs)

  s = jax.tree_util.tree_leaves(gen_vars)[0].shape[0]
  probe = jax.eval_shape(lambda: (
      ref_seg.advance(k, ref_vars, [a[0] for a in ref_state])[1],
      gen_seg.advance(k, jax.tree_util.tree_map(lambda a: a[0], gen_vars),
                      [a[0, 0] for a in gen_state])[1]))
  dt = jnp.result_type(probe[0].dtype, probe[1].dtype, wb.dtype)
  init = (jnp.zeros((s, probe[1].shape[-1], probe[0].shape[-1]), dt), jnp.zeros((), dt),
          jnp.zeros((s,), dt))
  moments, (ref_state, gen_state) = lax.scan(body, init, (ref_state, gen_state, wb))
  return gen_vars, ref_state, gen_state, moments


def _align_stack(cross, tphi, tpsi):
  # Sequential over samples: batched LAPACK inside larger XLA:CPU programs
  # has deadlocked (see rainbow_jax.similarity).
  return lax.map(lambda c: _align.align(c[0], tphi, c[1]), (cross, tpsi))


_align_all = jax.jit(_align_stack)


def _draw(g, factor, ref_w, ref_b, a, s: int, shape: tuple, sample: bool, bias: bool,
          drawn: bool = False):
  """Layer j's kernel and bias for the S generated networks ``[S, …]``:
  drawn from `factor` (the reference's own when None) with the standard
  normals ``g [S, n_out, R]`` (`_normals`), the reference's, or (``drawn``)
  ``ref_w, ref_b`` already ``[S, …]`` (a stream writer's joint draw); then
  realigned on ``a [S, d_gen, d_ref]`` (None: not realigned)."""
  if drawn:
    w, b = ref_w, ref_b
  elif sample:
    if factor is None:
      factor = weight_factor([neuron_matrix(ref_w, ref_b)])
    new = jax.vmap(lambda gk: _kernel_of(gk, factor, shape, bias))(g)
    w, b = new if bias else (new, None)
  else:
    w = jnp.broadcast_to(ref_w, (s, *ref_w.shape))
    b = None if ref_b is None else jnp.broadcast_to(ref_b, (s, *ref_b.shape))
  if a is not None:
    w = jax.vmap(realign)(w, a)
  return w, b


@_compile.once(static_argnames=("specs",))
def _normals(key, specs):
  """The standard normals of every sampled layer, one program compiled
  quickly by `_compile.once` on CPU (threefry's compile cost, paid once
  rather than in every layer's program): for each ``(j, S, n_out, R,
  dtype)`` of `specs`, ``[S, n_out, R]`` — sample k of layer j drawn as
  `sample_kernel` with key ``split(fold_in(key, j), S)[k]``."""
  out = []
  for j, s, n_out, r, dtype in specs:
    keys = jax.random.split(jax.random.fold_in(key, j), s)
    out.append(jax.vmap(lambda k: jax.random.normal(k, (n_out, r), dtype))(keys))
  return tuple(out)


def _factor_rows(factor, ref_w, ref_b) -> tuple[int, str]:
  """(R, dtype) of the factor `_draw` samples layer j from."""
  if factor is None:
    factor = jax.eval_shape(lambda w, b: weight_factor([neuron_matrix(w, b)]), ref_w, ref_b)
  return int(factor.shape[0]), jax.dtypes.canonicalize_dtype(factor.dtype).name


_draw_all = jax.jit(_draw, static_argnames=("s", "shape", "sample", "bias", "drawn"))


@functools.partial(jax.jit, static_argnums=0)
def _build(gen_net, templates, kernels, biases):
  """The S generated networks' variables from their stacked templates,
  kernels and biases."""
  return jax.vmap(gen_net.with_kernels)(templates, kernels, biases)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _stack_template(gen_net, template, affine, s: int):
  """S copies of `template` ``[S, …]``, BatchNorm scales and offsets
  replaced by ``affine`` (``{i: (scale, offset) [S, C]}``, a stream draw)."""
  stacked = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (s, *v.shape)), template)
  return jax.vmap(gen_net.with_norm_affine)(stacked, affine) if affine else stacked


@functools.partial(jax.jit, static_argnames=("ref_seg", "gen_seg", "j", "s", "shape", "sample",
                                             "bias", "drawn", "axis", "dtype"))
def _layer_step(ref_seg, gen_seg, j: int, g, factor, ref_w, ref_b, a, ref_vars, gen_vars,
                ref_state, gen_state, yb, *, s, shape, sample, bias, drawn, axis, dtype):
  """One layer of layer-by-layer rainbow sampling, one compiled program:
  layer j of the S generated networks drawn and realigned (`_draw`),
  written in, then every network carried from cut j to cut j + 1 over the
  data (`_advance`) and the alignments at layer j + 1's input. At j = 0,
  ``gen_vars`` are the stacked templates and the states the padded batches
  ``xb``: the S networks are carried to cut 0 first. Returns
  ``(gen_vars, ref_state, gen_state, alignment)`` (alignment None after
  the classifier)."""
  wb = (yb >= 0).astype(dtype)  # padding rows weigh 0
  if j == 0:
    xb = ref_state
    ref_state = ref_seg.start(xb)
    gen_state = [jnp.broadcast_to(v[:, None], (v.shape[0], s, *v.shape[1:]))
                 for v in gen_seg.start(xb)]
    gen_vars, ref_state, gen_state, _ = _advance(ref_seg, gen_seg, 0, ref_vars, gen_vars, None,
                                                 None, ref_state, gen_state, wb, axis)
  w, b = _draw(g, factor, ref_w, ref_b, a, s, shape, sample, bias, drawn)
  gen_vars, ref_state, gen_state, moments = _advance(ref_seg, gen_seg, j + 1, ref_vars,
                                                     gen_vars, w, b, ref_state, gen_state, wb,
                                                     axis)
  return gen_vars, ref_state, gen_state, None if moments is None else _align_stack(*moments)


class Streams(NamedTuple):
  """The residual streams of a network (`stream_lineages`).

  Attributes:
    writers: the weight layers whose outputs are added into a stream (a
      ResNet's stem and the last conv of every block), sorted.
    lineages: one per stream channel: the ``(writer, channel)`` pairs that
      write into it, across blocks and stages (a channel carried through
      zero-padded shortcuts keeps its lineage), sorted by writer.
    norms: ``(writer, BatchNorm index)`` for each writer followed by a
      BatchNorm that normalises its output alone; that BatchNorm's scale
      and offset are coordinates of the lineage.
  """

  writers: tuple
  lineages: tuple
  norms: tuple


def stream_lineages(net: Any, variables: Any, x: Array) -> Streams:
  """The residual streams of `net`, from its dataflow on example batch
  ``x`` (`Network.channel_reach`): every layer that meets a skip connection
  and whose output channels reach later layers without mixing (no input
  feature of a later layer reads two of its channels) is a writer; channels
  that reach the same input feature of a later layer share a lineage.
  Rainbow sampling draws a lineage's neurons — one per writer — jointly
  (`generate`'s ``streams``).

  Raises:
    ValueError: a layer whose channels two skip paths merge into one
      lineage twice (a channel-mixing skip), named.
  """
  x = jnp.asarray(x)[:8]
  n = len(net)
  links = net.chain_links(variables, x)
  candidates = [j for j in range(n - 1) if not links[j] and net.layers[j].groups == 1
                and net.kinds[j] in ("dense", "conv")]
  reach, writers, edges = {}, [], []
  for j in candidates:
    r = net.channel_reach(variables, x, j)
    top = max((float(m.max()) for m in r.values()), default=0.0)
    r = {key: m > 1e-6 * top for key, m in r.items()}
    layers = {key[1]: m for key, m in r.items() if key[0] == "layer"}
    # A channel may reach many input features of a later layer (a flattened
    # map: one per position), but no feature may read two of its channels.
    if not layers or any(m.sum(0).max() > 1 for m in layers.values()):
      continue  # nothing read, or channels mixed on the way (attention)
    reach[j] = r
    writers.append(j)
    edges += [(("w", j, int(c)), ("in", k, int(d))) for k, m in layers.items()
              for c, d in zip(*np.nonzero(m))]
  parent: dict = {}

  def root(a):
    parent.setdefault(a, a)
    while parent[a] != a:
      parent[a] = parent[parent[a]]
      a = parent[a]
    return a

  for j in writers:
    for c in range(net.layers[j].kernel_shape[-1]):
      root(("w", j, c))
  for a, b in edges:
    parent[root(a)] = root(b)
  groups: dict = {}
  for j in writers:
    for c in range(net.layers[j].kernel_shape[-1]):
      groups.setdefault(root(("w", j, c)), []).append((j, c))
  lineages = []
  for members in groups.values():
    layers = [j for j, _ in members]
    if len(set(layers)) != len(layers):
      raise ValueError(f"layer {members[0][0]} ({net.names[members[0][0]]}): two of its channels"
                       " reach the same input channel of a later layer; its stream cannot be"
                       " split into channels.")
    lineages.append(tuple(sorted(members)))
  norms = []
  for j in writers:  # the BatchNorm that normalises j's output alone, channel to channel
    own = [i for (kind, i), m in reach[j].items() if kind == "norm" and m.shape[0] == m.shape[1]
           and np.array_equal(m, np.eye(m.shape[0], dtype=bool))
           and not any(("norm", i) in reach[w] for w in writers if w != j)]
    if own:
      norms.append((j, min(own)))
  return Streams(tuple(writers), tuple(sorted(lineages)), tuple(norms))


@functools.partial(jax.jit, static_argnums=(1, 3, 4))
def _stream_draw(key, net, variables, streams: Streams, s: int):
  """The writers' neurons of S networks, each lineage drawn jointly from
  the reference's lineages of the same writers (weights: their second
  moment, zero mean; BatchNorm scale and offset: their mean and
  covariance): per writer ``(kernel [S, …], bias [S, C] or None)``, per
  BatchNorm after a writer ``(scale, offset) [S, C]``."""
  kernels, biases = net.kernels(variables), net.biases(variables)
  affine = net.norm_affine(variables)
  after = dict(streams.norms)
  coords, split = {}, {}
  for j in streams.writers:
    parts = [neuron_matrix(kernels[j], biases[j])]
    if j in after:
      parts += [v[:, None] for v in affine[after[j]] if v is not None]
    coords[j] = jnp.concatenate(parts, axis=1)  # [C_j, D_j]
    split[j] = [p.shape[1] for p in parts]
  out = {j: jnp.zeros((s, *coords[j].shape), coords[j].dtype) for j in streams.writers}
  classes: dict = {}
  for lineage in streams.lineages:
    classes.setdefault(tuple(j for j, _ in lineage), []).append([c for _, c in lineage])
  for i, (members, channels) in enumerate(sorted(classes.items())):
    idx = np.asarray(channels)  # [n, writers]
    rows = jnp.concatenate([coords[j][idx[:, m]] for m, j in enumerate(members)], axis=1)
    # Weights are zero-mean (the rainbow model); a BatchNorm's scale and
    # offset are not (scales near 1): those coordinates are drawn around the
    # lineages' mean, from their covariance.
    affine_cols = np.concatenate([np.r_[np.zeros(split[j][0]), np.ones(sum(split[j][1:]))]
                                  for j in members]).astype(bool)
    mean = jnp.where(affine_cols, jnp.mean(rows, axis=0), 0.0)[None]  # [1, D]
    f = weight_factor([rows - mean])
    g = jax.random.normal(jax.random.fold_in(key, 2**20 + i), (s, rows.shape[0], f.shape[0]),
                          f.dtype)
    drawn = mean[None] + jnp.einsum("snr,rd->snd", g, f, precision=_HP)
    start = 0
    for m, j in enumerate(members):
      d = coords[j].shape[1]
      out[j] = out[j].at[:, idx[:, m]].set(drawn[:, :, start:start + d])
      start += d
  weights, norm_affine = {}, {}
  for j in streams.writers:
    pieces = jnp.split(out[j], np.cumsum(split[j])[:-1], axis=2)
    w = pieces[0][..., :-1] if biases[j] is not None else pieces[0]
    kernel = jnp.swapaxes(w, 1, 2).reshape(s, *kernels[j].shape)
    weights[j] = (kernel, pieces[0][..., -1] if biases[j] is not None else None)
    if j in after:
      new = iter(p[..., 0] for p in pieces[1:])
      norm_affine[after[j]] = tuple(None if v is None else next(new) for v in affine[after[j]])
  return weights, norm_affine


class Generated(NamedTuple):
  """Result of `generate`.

  Attributes:
    params: ``[S, ...]`` variables of the S generated networks (of the
      generating `Network`; score them with
      ``rainbow_jax.evaluate.accuracy(net, params, x, y, stacked=True)``).
    alignments: per layer j ≥ 1, ``[S, d_gen, d_ref]`` A with A φ ≈ ψ at its
      input.
    r2: ``[S, L − 1]`` alignment r² at the inputs of layers 1…L−1.
  """

  params: Any
  alignments: list
  r2: Array


def reference_factors(kernels_per_seed: Sequence[Sequence[Array]],
                      input_alignments: Sequence[Sequence[Array | None]] | None = None,
                      biases_per_seed: Sequence[Sequence[Array | None]] | None = None
                      ) -> list[Array]:
  """Weight factors of every layer but the classifier, from one or several
  trained seeds.

  Args:
    kernels_per_seed: K lists of Flax kernels (seed 0 is the reference),
      e.g. ``net.kernels(variables_k)``.
    input_alignments: for seeds k ≥ 1, per layer the alignment ``[d_k, d_0]``
      of their input onto the reference's (A φ₀ ≈ φ_k; None for the first
      layer, which reads pixels). Their weights are brought into the
      reference's input basis (W_k A) before stacking.
    biases_per_seed: K lists of biases (``net.biases(variables_k)``; None
      entries for bias-free layers); a neuron is then its (weights, bias).

  Returns:
    L − 1 factors F ``[R, fan_in (+1)]`` (`weight_factor`).
  """
  ref = kernels_per_seed[0]
  bias_of = lambda k, j: None if biases_per_seed is None else biases_per_seed[k][j]
  out = []
  for j in range(len(ref) - 1):
    mats = [neuron_matrix(ref[j], bias_of(0, j))]
    for k in range(1, len(kernels_per_seed)):
      kern = kernels_per_seed[k][j]
      a = None if input_alignments is None else input_alignments[k - 1][j]
      if a is not None:  # kernel reading φ_k ≈ A φ₀ → reading φ₀: contract with A
        kern = realign(kern, a.T)
      elif j > 0:
        raise ValueError(f"seed {k}, layer {j}: an input alignment is needed to average"
                         " weight covariances across seeds.")
      mats.append(neuron_matrix(kern, bias_of(k, j)))
    out.append(weight_factor(mats))
  return out


def seed_averaged_factors(net: Any, seed_variables: Sequence[Any], x: Array
                          ) -> tuple[list[Array], list[Array]]:
  """Weight factors of the covariances averaged over K trained seeds, in
  the basis of seed 0 (the reference `generate` samples around).

  At the input of every weight layer j ≥ 1 but the classifier's, the K
  seeds' features on `x` are aligned to their mean network
  (`rainbow_jax.consensus.align_to_mean`, gauge A₀ = I): A_k φ_k ≈ M, M in
  seed 0's basis. Seed k's neurons, which read φ_k ≈ A_kᵀ M, are brought
  into that basis (W_k ← W_k A_kᵀ as a map, `realign`) and the K seeds'
  rows are pooled (`reference_factors`). Layer 0 reads the data, which
  needs no alignment. The rainbow paper's "many seeds" estimate of C_ℓ.

  Args:
    net: the `rainbow_jax.network.Network` of the seeds.
    seed_variables: K ≥ 2 variables (seed 0 first).
    x: ``[N, ...]`` inputs for the alignments (memory: every seed's
      features at one layer input at a time, ``[K, N, …]``, and what its
      forward pass keeps there: each layer is reached from the previous
      one's input, linear in depth).

  Returns:
    ``(factors, r2)``: L − 1 factors ``[R, fan_in (+1)]`` for `generate`'s
    ``factors=``, and per aligned layer ``[K]`` the seeds' r² to the mean.
  """
  if len(seed_variables) < 2:
    raise ValueError(f"seed_variables: need at least 2 seeds, got {len(seed_variables)}.")
  x = jnp.asarray(x)
  n_layers = len(net)
  stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *seed_variables)
  kernels = [net.kernels(v) for v in seed_variables]
  biases = [net.biases(v) for v in seed_variables]
  k_seeds = len(seed_variables)
  aligns = [[None] * (n_layers - 1) for _ in range(k_seeds - 1)]
  r2 = []
  try:  # layer by layer: each seed's kept values carried from one input to the next
    seg = _network.segments(net, variables=seed_variables[0], batch=x)
    state = [jnp.broadcast_to(a, (k_seeds, *a.shape)) for a in seg.start(x)]
  except ValueError:  # a shared layer: each layer's inputs from the input
    seg = None
  for j in range(1, n_layers - 1):
    if seg is not None:
      for k in range(j if j > 1 else 0, j + 1):  # cuts up to j (from 0 the first time)
        state, feats = _advance_seeds(seg, k, stacked, state)  # [K, N, …, d]
    else:
      feats = jax.vmap(lambda v: net.layer_inputs(v, x, upto=j)[j])(stacked)
    mean = _consensus.align_to_mean(_consensus.seed_cross_moments(feats))
    for k in range(1, k_seeds):
      aligns[k - 1][j] = mean.alignments[k].T  # φ_k ≈ A_kᵀ φ₀: [d_k, d_0]
    r2.append(mean.r2)
  return reference_factors(kernels, aligns, biases), r2


@functools.partial(jax.jit, static_argnums=(0, 1))
def _advance_seeds(seg, k: int, stacked, state: list):
  """`Segments.advance` to cut k for K seeds at once (``[K, …]``)."""
  return jax.vmap(lambda v, st: seg.advance(k, v, st))(stacked, state)


def generate(key: Array, net: Any, variables: Any, x: Array, *, num_samples: int = 1,
             gen: tuple[Any, Any] | None = None, factors: Sequence[Array] | None = None,
             layers: Sequence[int] | None = None, streams: "bool | Streams" = False,
             batch_size: int = 1000, stack_axis: str = "auto",
             progress: bool = True) -> Generated:
  """Samples `num_samples` rainbow networks from a trained reference.

  Args:
    key: PRNG key.
    net, variables: the reference `rainbow_jax.network.Network` and its
      variables (one seed).
    x: ``[N, ...]`` data for the alignments (the tutorial: the training set).
    num_samples: S, generated by one compiled program per pass.
    gen: ``(gen_net, gen_variables)``, the architecture of the generated
      networks and template variables of it (default: the reference's); its
      hidden widths may differ from the reference's on sampled layers.
    factors: per sampled layer the weight factor (default: the reference's
      own, `weight_factor` of `neuron_matrix`); see `reference_factors` to
      average seeds.
    layers: indices of the layers to sample (default: every layer but the
      classifier whose output only the next weight layer reads, and that
      neither is nor feeds a grouped convolution; see the module docstring
      on residual networks). Others keep the reference weights, realigned
      (a grouped convolution's as they are: its kernel cannot hold a
      channel-mixing alignment).
    streams: also sample the layers that write into residual streams
      (`stream_lineages`: a ResNet's stem and every block's last conv),
      each stream channel's neurons — one per writer, across blocks and
      stages, with the scale and offset of the BatchNorm after each writer
      as extra coordinates, drawn around their mean — drawn jointly from
      the reference's channels with the same writers. Without it (the
      default), those layers keep the reference's neurons. A `Streams`
      already found (`stream_lineages` of this network) is used as it is.
    batch_size: batch of the alignment passes. Memory: layer by layer,
      the S + 1 networks' values kept at one layer input for all N
      examples (a ResNet-20's stream and branch: 2 × 50 KB per 28 × 28
      image at ×1, ×(S + 1)), plus one batch's activations.
    stack_axis: the S networks in each alignment pass run in turn
      (``'map'``) or vmapped (``'vmap'``); ``'auto'`` (default): in turn on
      CPU, where stacked convolutions are slow (the tutorial's CNN at
      S = 8: alignment passes 1.4× faster in turn; its MLP: within 5 %),
      vmapped on GPU/TPU. Same numbers either way.
    progress: a progress bar over layers.

  Returns:
    `Generated`.

  Raises:
    ValueError: a layer in `layers` that cannot be sampled (the classifier,
      or a layer whose output reaches a skip connection; named), or shapes
      that do not fit.
  """
  gen_net, template = (net, variables) if gen is None else gen
  net.check_input(x)
  net.check_variables(variables)
  ref_k, ref_b = net.kernels(variables), net.biases(variables)
  n_layers = len(ref_k)
  x = x if isinstance(x, jax.Array) else np.asarray(x)  # host data: batched on the host
  example = jax.ShapeDtypeStruct((2, *x.shape[1:]), x.dtype)
  links = net.chain_links(variables, example)
  groups = [l.groups for l in net.layers]
  free = sampleable(net, links)
  if layers is None:
    layers = free
  layers = sorted({int(j) for j in layers})
  for j in layers:
    if not 0 <= j < n_layers - 1:
      raise ValueError(f"layers must lie in [0, {n_layers - 2}] (the classifier is never"
                       f" sampled), got {layers}.")
    if j not in free and (groups[j] > 1 or groups[j + 1] > 1):
      raise ValueError(
          f"layer {j} ({net.names[j]}) cannot be sampled: it or the next layer is a grouped"
          f" convolution, whose kernel cannot hold new or realigned channels across its"
          f" groups. Layers that can be sampled: {free}.")
    if j not in free:
      raise ValueError(
          f"layer {j} ({net.names[j]}) cannot be sampled: its output meets a skip connection"
          f" (the next weight layer reads other layers' outputs too, or later layers read"
          f" this one's; see Network.producers), where new neurons would be added to"
          f" unrelated channels. Layers that can be sampled: {free}.")
  if num_samples < 1:
    raise ValueError(f"num_samples must be ≥ 1, got {num_samples}.")
  axis = _axis.resolve(stack_axis, "stack_axis")
  if factors is None:
    factors = {}  # the reference's own, computed in the layer's program
  elif not isinstance(factors, dict):
    factors = dict(enumerate(factors))
  gen_shapes = list(gen_net.shapes)
  if len(gen_shapes) != n_layers:
    raise ValueError(f"the generated network has {len(gen_shapes)} weight layers, the"
                     f" reference {n_layers}.")
  gen_bias = [l.bias for l in gen_net.layers]
  for j in range(n_layers):
    if j not in layers and gen_shapes[j][-1] != ref_k[j].shape[-1]:
      raise ValueError(f"layer {j} is not sampled, so its width must be the reference's"
                       f" ({ref_k[j].shape[-1]}), not {gen_shapes[j][-1]}.")
    if gen_bias[j] != (ref_b[j] is not None):
      raise ValueError(f"layer {j}: the reference and generated networks differ in having a"
                       " bias.")
  s = num_samples
  # Padded batches, the padding rows weighing 0 (label −1): padded on the
  # host for host data, moved to the device once (every pass reads them).
  xb, yb = jax.device_put(_batches.eval_batches(x, np.zeros((x.shape[0],), np.int32),
                                                batch_size))
  dtype = str(jnp.result_type(x.dtype, jnp.float32))
  batch = jax.ShapeDtypeStruct(xb.shape[1:], xb.dtype)
  try:  # layer by layer, each network's kept values carried over the data
    segs = (_network.segments(net, variables, batch), _network.segments(gen_net, template, batch))
  except ValueError:  # a shared layer: every pass evaluates the whole networks
    segs = None
  stream_w, affine = {}, {}
  if streams:
    if gen is not None:
      raise ValueError("streams=True samples the reference's own residual streams: it needs"
                       " gen=None (the generated networks have the reference's widths).")
    found = streams if isinstance(streams, Streams) else stream_lineages(net, variables, x[:8])
    bad = sorted(set(found.writers) & set(layers))
    if bad:
      raise ValueError(f"layers {bad} write into a residual stream, sampled with streams=True;"
                       " leave them out of layers.")
    stream_w, affine = _stream_draw(key, net, variables, found, s)
  templates = _stack_template(gen_net, template, affine, s)
  specs = tuple((j, s, int(gen_shapes[j][-1]), *_factor_rows(factors.get(j), ref_k[j], ref_b[j]))
                for j in layers)
  normals = dict(zip(layers, _normals(key, specs)))
  gen_k = gen_b = None
  if segs is None:
    gen_k = _broadcast(gen_net.kernels(template), s)
    biases = {j: b for j, b in enumerate(gen_net.biases(template)) if b is not None}
    gen_b = dict(zip(biases, _broadcast(list(biases.values()), s)))
  a = None  # [S, d_gen, d_ref] at the current layer's input
  alignments, r2 = [], []
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=n_layers, desc=f"rainbow: {s} sample(s)", unit="layer")
  state = (templates, xb, xb)  # gen_vars, ref_state, gen_state (cut 0: the batches)
  for j in range(n_layers):
    # Shape in the reference's input basis, the generated output width.
    ref_shape = (*ref_k[j].shape[:-1], gen_shapes[j][-1])
    # A grouped conv keeps the reference's kernel: its producer is never
    # sampled, and a realigned kernel would mix channels across groups.
    a_j = a if groups[j] == 1 else None
    want = ref_shape if a_j is None else (*ref_shape[:-2], a_j.shape[1], ref_shape[-1])
    if want != tuple(gen_shapes[j]):
      raise ValueError(f"layer {j}: generated kernel {want} ≠ the generated network's"
                       f" {gen_shapes[j]}.")
    draw = dict(s=s, shape=ref_shape, sample=j in layers, bias=gen_bias[j],
                drawn=j in stream_w)
    args = (normals.get(j), factors.get(j), *stream_w.get(j, (ref_k[j], ref_b[j])), a_j)
    if segs is not None:
      gen_vars, ref_state, gen_state, al = _layer_step(
          *segs, j, *args, variables, *state, yb, **draw, axis=axis, dtype=dtype)
      state = (gen_vars, ref_state, gen_state)
    else:
      gen_k[j], b = _draw_all(*args, **draw)
      if b is not None:
        gen_b[j] = b
      al = None if j == n_layers - 1 else _align_all(*_all_input_moments(
          net, gen_net, variables, _build(gen_net, templates, gen_k, gen_b), jnp.asarray(x), xb,
          (yb >= 0).astype(dtype), batch_size, axis)[j])
    if al is not None:
      a = al.matrix
      alignments.append(a)
      r2.append(al.r2)
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  r2 = jnp.asarray(np.stack([np.asarray(r) for r in r2], axis=1) if r2 else np.zeros((s, 0)))
  if segs is not None:
    return Generated(state[0], alignments, r2)
  final = _build(gen_net, templates, gen_k, gen_b)
  if gen_net.norms:
    final = _restat(gen_net, final, jnp.asarray(x), None, batch_size)
  return Generated(final, alignments, r2)


__all__ = ["Generated", "Streams", "cross_moments", "generate", "neuron_matrix", "realign",
           "reference_factors", "sample_kernel", "sampleable", "seed_averaged_factors",
           "stream_lineages", "weight_factor"]
