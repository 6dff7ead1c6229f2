"""The whole SVR graph of a network, its summaries and exports."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import _compile
from rainbow_jax import _precision
from rainbow_jax import _checks
from rainbow_jax.svr._layout import flatten
from rainbow_jax.svr._spectral import Spectral, _gram_stack, _svd_stack, spectra
from rainbow_jax.svr._adjacency import _adjacency, _positions
from rainbow_jax.svr._significance import (_chi2_draws, _sampled_pvalues, benjamini_hochberg,
    null_law, pvalues)
from rainbow_jax.svr._internal import color_intensity, internal_dimensions

Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


# --------------------------------------------------------------------------
# The whole graph.


class SVR(NamedTuple):
  """The SVR of a network of L linear maps.

  Attributes:
    spectra: L `Spectral`.
    adjacency: L − 1 arrays ``[M_{i+1}, M_i]``.
    channels, positions: L − 1 ints, the shared dimension c and the
      positions P of each edge layer (null law Beta(P/2, (c−1)P/2)).
    pvalues: L − 1 arrays of edge p-values under the null law (None with
      ``with_pvalues=False``).
    significant: L − 1 boolean masks.
    internal_dims: L − 1 pairs (d_out, d_in).
    intensity: L − 1 arrays ``[M_i]`` of vertex colour intensities.
    method: ``'svr'`` or ``'cosvr'``.
    sampled: L − 1 bools: True where the edge layer's null law is sampled
      (a co-SVR conv → dense edge, taps on both sides; module docstring).
  """

  spectra: list
  adjacency: list
  channels: list
  positions: list
  pvalues: list
  significant: list
  internal_dims: list
  intensity: list
  method: str = "svr"
  sampled: list | None = None


def _edge_of(u: Array, v: Array, critical, draws, *, channels: int, exact: bool,
             with_pvalues: bool):
  """Everything about one edge layer in one compiled program (one compile
  per distinct shape): adjacency, significance (a above the null law's
  critical value), p-values if asked, internal dimensions, colour intensity.
  A two-sided edge (taps on both sides) samples its null law instead
  (`critical` is then `alpha`, `draws` the pair of `_chi2_draws`)."""
  c = channels
  q_taps, p = u.shape[0] // c, v.shape[0] // c
  a = _adjacency(u, v, c)
  if q_taps > 1 and p > 1:
    q = _sampled_pvalues(a, u, *draws, channels=c)
    sig = q < critical
    q = q if with_pvalues else None
  else:
    q = pvalues(a, c, p * q_taps, exact=exact) if with_pvalues else None
    sig = a > critical
  return a, q, sig, internal_dimensions(a, c), color_intensity(a, c)


_EDGE_STATIC = ("channels", "exact", "with_pvalues")
_edge_full = jax.jit(_edge_of, static_argnames=_EDGE_STATIC)
# Without p-values an edge is a product and a few cumulative sums, run once:
# compiled quickly (`_compile.once`; 0.05 s instead of 0.02 s to run at
# d = 1 024, 0.1 s less to compile). The incomplete beta function of the
# p-values and the sampled null laws run 10× slower so, and keep `jit`.
_edge_quick = _compile.once(_edge_of, static_argnames=_EDGE_STATIC)


def _edge(u, v, critical, draws, *, channels, exact, with_pvalues):
  quick = not with_pvalues and draws is None
  return (_edge_quick if quick else _edge_full)(u, v, critical, draws, channels=channels,
                                                exact=exact, with_pvalues=with_pvalues)


def _check_graph_args(weights: Sequence[Any], alpha: float, method: str,
                      null_draws: int) -> None:
  if len(weights) < 2:
    raise ValueError("an SVR needs at least two layers.")
  if not 0 < alpha < 1:
    raise ValueError(f"alpha must lie in (0, 1), got {alpha}.")
  if method not in ("svr", "cosvr"):
    raise ValueError(f"method must be 'svr' or 'cosvr', got {method!r}.")
  if int(null_draws) < 100:
    raise ValueError(f"null_draws must be at least 100, got {null_draws}.")


def _edge_law(i: int, c: int, q_taps: int, p: int, *, alpha: float, exact: bool,
              null_draws: int, null_seed: int):
  """``(critical, draws, sampled)`` of edge layer `i` for `_edge`: the null
  law's critical value, or for a two-sided edge `alpha` and its χ² draws."""
  if q_taps > 1 and p > 1:
    return alpha, _chi2_draws((null_seed, i), c, q_taps, p, int(null_draws)), True
  return float(null_law(c, p * q_taps, exact=exact).isf(alpha)), None, False


def svr(weights: Sequence[Array], *, alpha: float = 0.15, exact: bool = True,
        fdr: float | None = None, top_k: int | None = None,
        key: Array | None = None, solver: str = "svd", method: str = "svr",
        with_pvalues: bool = True, null_draws: int = 8192, null_seed: int = 0) -> SVR:
  """Full SVR of a network given as native-layout weights in forward order.

  Args:
    weights: ``[out, in]`` / ``[out, in, K, K]`` arrays (see `from_flax`);
      mixed shapes are fine.
    method: ``'svr'`` (default) or ``'cosvr'``: conv layers flattened
      ``[out · K², in]`` (the graph seen by the gradient in back-propagation;
      see the module docstring).
    alpha: an edge is significant when its p-value is below `alpha` (the
      paper's p: under the null only that fraction of edges is kept).
    exact: exact Beta null laws (default) or the paper's asymptotic χ².
    fdr: if given, Benjamini–Hochberg at this false-discovery rate across
      all edges instead of the per-edge `alpha`.
    top_k, key: randomized top-k SVD for layers larger than `top_k`.
    solver: ``'svd'`` or the faster ``'gram'`` (see `spectra`).
    with_pvalues: compute every edge's p-value (the incomplete beta
      function: the costliest step of a large network's SVR). Significance
      at `alpha` never needs them: it compares each edge with the null law's
      critical value. False leaves ``pvalues`` as None (not with `fdr`).
    null_draws, null_seed: draws of a sampled null law and the seed of
      numpy's generator for them (two-sided co-SVR edges only; their
      p-values are at least 1 / (1 + null_draws)).

  Returns:
    `SVR`.
  """
  _check_graph_args(weights, alpha, method, null_draws)
  spec = spectra(weights, co=method == "cosvr", top_k=top_k, key=key,
                 solver=solver)  # checks the weights
  adj, cs, ps, pv, sig, dims, inten, sampled = [], [], [], [], [], [], [], []
  if fdr is not None and not with_pvalues:
    raise ValueError("fdr needs the p-values: with_pvalues=True.")
  for i in range(len(spec) - 1):
    c, q_taps, p = _positions(spec[i], spec[i + 1], jnp.shape(weights[i])[0])
    crit, draws, two_sided = _edge_law(i, c, q_taps, p, alpha=alpha, exact=exact,
                                       null_draws=null_draws, null_seed=null_seed)
    a, q, m, d, ci = _edge(spec[i].u, spec[i + 1].v, crit, draws, channels=c, exact=exact,
                           with_pvalues=with_pvalues)
    for lst, val in zip((adj, cs, ps, pv, sig, dims, inten, sampled),
                        (a, c, p * q_taps, q, m, d, ci, two_sided)):
      lst.append(val)
  if fdr is not None:
    sig = benjamini_hochberg(pv, fdr)
  dims = [tuple(int(v) for v in d) for d in jax.device_get(dims)]
  return SVR(spec, adj, cs, ps, pv, sig, dims, inten, method, sampled)


def path_metric(result: SVR, *, scale: bool = True, threshold: float = 0.0) -> Array:
  """Weighted sum over every path from the first layer's spectral neurons to
  the last's (the reference code's ``pathmetric``).

  A path through spectral neurons (m₀, …, m_{L−1}) weighs
  Π_l s_{l,m_l} · Π_l a_{l}[m_{l+1}, m_l]: x ← a_l (s_l ∘ x) from x = 1,
  summed after the last layer's s. ``scale=False`` sets every singular
  value to 1 (only the adjacency counts); spectral neurons with s ≤
  `threshold` are removed (their paths count 0). A scalar.
  """
  return _path_metric([sp.s for sp in result.spectra], list(result.adjacency), threshold,
                      scale=scale)


@functools.partial(jax.jit, static_argnames=("scale",))
def _path_metric(s, adjacency, threshold, *, scale):
  """`path_metric` in one program (eagerly, some ten per call)."""
  x = None
  for l, sl in enumerate(s):
    w = jnp.where(sl > threshold, sl if scale else 1.0, 0.0)
    x = w if x is None else w * jnp.matmul(adjacency[l - 1], x, precision=_HP)
  return jnp.sum(x)


def entropy(result: SVR) -> Array:
  """``[L − 1]`` −Σ a log a over each adjacency matrix's entries (the
  reference code's ``entropy``; 0 log 0 = 0, where the reference gives NaN).
  Low when each spectral neuron reads few of the previous layer's; the
  weights are not normalised, so compare layers of the same shape."""
  return _entropy(list(result.adjacency))


@jax.jit
def _entropy(adjacency):
  return jnp.stack([-jnp.sum(jax.scipy.special.xlogy(a, a)) for a in adjacency])


def svr_stack(weights: Sequence[Array], *, alpha: float = 0.15, exact: bool = True,
              solver: str = "svd", method: str = "svr", with_pvalues: bool = True,
              null_draws: int = 8192, null_seed: int = 0) -> SVR:
  """The SVR of N networks of the same architecture at once (N seeds, N
  checkpoints): one vmapped SVD per layer and one vmapped program per edge
  layer, instead of N calls of `svr`.

  Args:
    weights: per layer, the N networks' native weights stacked, ``[N, out,
      in]`` / ``[N, out, in, K, K]``.
    alpha, exact, solver, method, with_pvalues, null_draws, null_seed: as
      in `svr` (per-edge significance).

  Returns:
    An `SVR` whose arrays have a leading ``[N]`` axis (spectra, adjacency,
    pvalues, significant, intensity) and whose ``internal_dims`` are
    ``[N, 2]`` int arrays; network i equals ``svr([w[i] for w in weights])``.
  """
  _check_graph_args(weights, alpha, method, null_draws)
  if solver not in ("svd", "gram"):
    raise ValueError(f"solver must be 'svd' or 'gram', got {solver!r}.")
  ws = []
  for i, w in enumerate(weights):
    _checks.check_array(w, f"weights[{i}]", (3, 5))
    ws.append(jnp.asarray(w))
  n = ws[0].shape[0]
  if any(w.shape[0] != n for w in ws):
    raise ValueError(f"every layer needs the same number of networks (leading axis), got"
                     f" {[w.shape[0] for w in ws]}.")
  stack = _svd_stack if solver == "svd" else _gram_stack
  co = functools.partial(flatten, co=method == "cosvr")
  spec = [stack(jax.vmap(co)(w)) for w in ws]
  adj, cs, ps, pv, sig, dims, inten, sampled = [], [], [], [], [], [], [], []
  for i in range(len(spec) - 1):
    one = lambda sp: Spectral(sp.u[0], sp.s[0], sp.v[0])
    c, q_taps, p = _positions(one(spec[i]), one(spec[i + 1]), ws[i].shape[1])
    crit, draws, two_sided = _edge_law(i, c, q_taps, p, alpha=alpha, exact=exact,
                                       null_draws=null_draws, null_seed=null_seed)
    edge = functools.partial(_edge, channels=c, exact=exact, with_pvalues=with_pvalues)
    a, q, m, d, ci = jax.vmap(lambda u, v: edge(u, v, crit, draws))(spec[i].u, spec[i + 1].v)
    for lst, val in zip((adj, cs, ps, pv, sig, dims, inten, sampled),
                        (a, c, p * q_taps, q, m, d, ci, two_sided)):
      lst.append(val)
  dims = [np.stack([np.asarray(d0), np.asarray(d1)], axis=1) for d0, d1 in dims]
  return SVR(spec, adj, cs, ps, pv, sig, dims, inten, method, sampled)


def take(result: SVR, i: int) -> SVR:
  """Network ``i`` of an `svr_stack` result, as `svr` would give it."""
  pick = lambda a: None if a is None else a[i]
  return result._replace(
      spectra=[Spectral(sp.u[i], sp.s[i], sp.v[i]) for sp in result.spectra],
      adjacency=[a[i] for a in result.adjacency], pvalues=[pick(q) for q in result.pvalues],
      significant=[m[i] for m in result.significant],
      internal_dims=[tuple(int(v) for v in d[i]) for d in result.internal_dims],
      intensity=[c[i] for c in result.intensity])


def keep_ranks(result: SVR) -> list[int]:
  """Spectral neurons each layer keeps when pruned to its internal dimensions.

  Layer i sits between edge i − 1 (as its next layer, d_out) and edge i (as
  its previous layer, d_in); it keeps the larger of the two, so no block of
  either adjacency is cut (the first layer: d_in of edge 0; the last: d_out
  of the last edge). `low_rank` with these ranks is the paper's pruning of
  "the bottom part" of the graph, an SVD compression of every layer.
  """
  dims = result.internal_dims
  ranks = []
  for i in range(len(result.spectra)):
    d = [dims[i - 1][0]] if i > 0 else []
    d += [dims[i][1]] if i < len(dims) else []
    ranks.append(int(max(d)))
  return ranks


def low_rank(weights: Sequence[Array], ranks: Sequence[int]) -> list[Array]:
  """Each native weight replaced by its best rank-``r`` approximation of the
  SVR matrix (`flatten`), keeping its shape: SVD compression."""
  if len(ranks) != len(weights):
    raise ValueError(f"{len(ranks)} ranks for {len(weights)} layers.")
  out = []
  for w, (u, s, v), r in zip(weights, spectra(weights), ranks):
    if not 0 <= r <= s.shape[0]:
      raise ValueError(f"rank {r} outside [0, {s.shape[0]}] for a layer of shape {w.shape}.")
    m = jnp.matmul(u[:, :r] * s[None, :r], v[:, :r].T, precision=_HP)
    out.append(m.reshape(jnp.shape(w)).astype(jnp.asarray(w).dtype))
  return out


def edges(result: SVR) -> dict[str, np.ndarray]:
  """Significant edges as columns: ``layer`` (i: from layer i to i+1),
  ``source`` (spectral neuron of layer i), ``target`` (of layer i+1),
  ``weight``, ``pvalue`` (NaN without p-values; numpy, sorted by layer)."""
  cols = {k: [] for k in ("layer", "source", "target", "weight", "pvalue")}
  for i, (a, p, m) in enumerate(zip(result.adjacency, result.pvalues, result.significant)):
    tgt, src = np.nonzero(np.asarray(m))
    cols["layer"].append(np.full(src.shape, i))
    cols["source"].append(src)
    cols["target"].append(tgt)
    cols["weight"].append(np.asarray(a)[tgt, src])
    cols["pvalue"].append(np.full(src.shape, np.nan) if p is None else np.asarray(p)[tgt, src])
  return {k: np.concatenate(v) for k, v in cols.items()}


def to_networkx(result: SVR):
  """The thresholded SVR as a `networkx.DiGraph` (nodes ``(layer, index)``
  with ``singular_value``; edges with ``weight`` and ``pvalue``)."""
  try:
    import networkx as nx
  except ImportError as e:
    raise ImportError("to_networkx needs networkx: pip install 'rainbow-jax[graph]'") from e
  g = nx.DiGraph()
  for i, sp in enumerate(result.spectra):
    for j, s in enumerate(np.asarray(sp.s)):
      g.add_node((i, j), singular_value=float(s))
  e = edges(result)
  for l, s, t, w, p in zip(e["layer"], e["source"], e["target"], e["weight"], e["pvalue"]):
    g.add_edge((int(l), int(s)), (int(l) + 1, int(t)), weight=float(w), pvalue=float(p))
  return g
