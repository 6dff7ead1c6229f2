"""The Singular Value Representation (SVR) of a network's weights.

Meller & Berkouk, "Singular Value Representation: A New Graph Perspective On
Neural Networks" (AISTATS 2023). Every linear map A = U S Vᵀ contributes one
*spectral neuron* per singular value: its input representation (a column of
V) and output representation (a column of U). Spectral neurons of
consecutive layers are joined by edges weighted by how much the output
representation of one overlaps the input representation of the next.

Weight layout (the *native* one, PyTorch's): a dense layer is ``[out, in]``,
a conv layer ``[out, in, K, K]``. `from_flax` converts a list of Flax
kernels (PyTorch weights: ``from_flax(network.from_torch(m).kernels)``); a dense layer after a conv layer reads its input flattened
channels-first, ``in = C · P`` with index ``c · P + position`` (PyTorch's
``flatten`` of NCHW; `from_flax` reorders Flax's NHWC flatten to it).

Conventions:
  * conv weights are flattened to ``[out, in · K²]`` for the SVR (``[out · K², in]``
    for the co-SVR);
  * ``adjacency(prev, next)`` is ``[M_next, M_prev]``: rows are the next
    layer's spectral neurons, columns the previous layer's (the paper's
    A_{i,j} = ⟨V_i, U_j⟩²), spectral neurons in descending singular value;
  * an edge between spectral neuron m of layer i and n of layer i+1 that
    sees P positions through c shared channels has weight
    a = Σ_p (Σ_k u_{k,m} V_{k,p,n})² (dense: P = 1, a = ⟨V_n, U_m⟩²; conv:
    P = K²; conv → dense: P = the spatial positions of the flattened map);
    a ≤ 1, and a is invariant to positive rescaling of either layer.

Which layers form a graph: consecutive weight layers where each one's output
is read by the next one only. For a network with skip connections, take the
chains of `rainbow_jax.network.Network.chains` (a residual network: one per
block, its convs) and compute one SVR per chain; ``rainbow-jax analyze``
does this.

Null laws of an edge between independent uniformly random representations
(`null_law`): exactly Beta(P/2, (c − 1)P/2) (the squared norm of the
projection of a uniform unit vector of ℝ^{cP} on a P-dimensional subspace);
the paper's asymptotic χ²(P)/(cP) (χ²(1)/c for dense layers) is its c → ∞
limit and is wrong in the upper tail for small c.

The co-SVR (``svr(..., method='cosvr')``, the reference code's name; section
4.4) flattens a conv layer the other way, ``[out · K², in]``: it first mixes
the input channels, scales, then convolves. Its kernel taps sit on the
*output* side of the previous layer, so an edge reads
a_{n,m} = Σ_{p,q} (Σ_k u_{k,q,m} v_{k,p,n})² with q the previous layer's taps
and p the next layer's positions (the co-SVR of a network is the SVR of the
network reversed with every layer transposed). Where only one side carries
positions the null law is the same Beta. Where both do (a conv → dense edge
of the co-SVR) the law depends on u: with λ_j² the squared singular values
of u_m seen as a ``[c, Q]`` matrix (Σ λ_j² = 1, r = min(c, Q) of them),
a = Σ_j λ_j² X_j / (Σ_j X_j + R) exactly, X_j ~ χ²(P) and R ~ χ²((c − r)P)
independent (a uniform unit vector is a normalised Gaussian). Its p-values
are Monte Carlo estimates, (1 + #{draws ≥ a}) / (1 + draws), from
`null_draws` draws per column (`SVR.sampled`).

Graph summaries from the reference code: `path_metric` (all input→output
paths, weighted by edges and singular values), `entropy` (of each adjacency),
and `effective_filters` (the K×K filter A_{n,m} joining two spectral neurons
of consecutive conv layers, whose squared norm is the edge weight).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax import lax

from rainbow_jax import _precision
from rainbow_jax import _checks
from rainbow_jax import _linalg

Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


# --------------------------------------------------------------------------
# Layouts.


def from_flax(kernels: Sequence[Any]) -> list[Array]:
  """Flax kernels (Dense ``[in, out]``, Conv ``[K, K, C_in, C_out]``) in
  forward order → native layout.

  A Dense layer right after a Conv layer reads Flax's NHWC flatten (index
  ``position · C + c``); it is reordered to the native channels-first
  ``c · P + position``, so the SVR does not depend on the framework. Use
  ``net.kernels(variables)`` of a `rainbow_jax.network.Network` for any Flax model.
  """
  return _relayout(kernels, "kernels", native_out=True)


def to_flax(weights: Sequence[Any]) -> list[Array]:
  """Native-layout weights → Flax kernels; the inverse of `from_flax`
  (a dense layer after a conv layer gets Flax's NHWC flatten order back)."""
  return _relayout(weights, "weights", native_out=False)


def _relayout(arrays: Sequence[Any], name: str, *, native_out: bool) -> list[Array]:
  """Flax ↔ native layouts; a dense layer after a conv layer swaps its input
  order between Flax's ``position · C + c`` and native ``c · P + position``."""
  out, prev_c = [], None
  for i, a in enumerate(arrays):
    _checks.check_array(a, f"{name}[{i}]", (2, 4))
    a = jnp.asarray(a)
    if a.ndim == 4:
      out.append(jnp.transpose(a, (3, 2, 0, 1) if native_out else (2, 3, 1, 0)))
      prev_c = a.shape[3] if native_out else a.shape[0]
      continue
    w = a.T if native_out else a  # native [out, in]
    if prev_c is not None and w.shape[1] != prev_c:
      w = _linalg.reorder_flatten(w, prev_c, channels_first=not native_out, name=f"{name}[{i}]")
    out.append(w if native_out else w.T)
    prev_c = None
  return out


def flatten(w: Array, *, co: bool = False) -> Array:
  """Native weight → the matrix whose SVD defines the spectral neurons.

  Dense ``[out, in]`` unchanged; conv ``[out, in, K, K]`` → ``[out, in·K²]``
  (SVR) or, with ``co=True``, ``[out·K², in]`` (co-SVR, section 5.2).
  """
  if w.ndim == 2:
    return w
  o, i, k1, k2 = w.shape
  if co:
    return jnp.transpose(w, (0, 2, 3, 1)).reshape(o * k1 * k2, i)
  return w.reshape(o, i * k1 * k2)


# --------------------------------------------------------------------------
# Spectral neurons.


class Spectral(NamedTuple):
  """Spectral neurons of one linear map ``W = U diag(s) Vᵀ`` (descending s).

  Attributes:
    u: ``[rows, M]`` output representations (columns).
    s: ``[M]`` singular values.
    v: ``[cols, M]`` input representations (columns; for a conv layer the
      rows are ``in · K²``, index ``c · K² + position``).
  """

  u: Array
  s: Array
  v: Array


@jax.jit
def _svd_stack(m: Array) -> Spectral:
  u, s, vh = jax.vmap(lambda a: jnp.linalg.svd(a, full_matrices=False))(m)
  return Spectral(u, s, jnp.swapaxes(vh, -1, -2))


def _gram_one(a: Array) -> Spectral:
  flip = a.shape[0] > a.shape[1]
  b = a.T if flip else a  # rows ≤ cols
  w, x = jnp.linalg.eigh(jnp.matmul(b, b.T, precision=_HP))
  w, x = w[::-1], x[:, ::-1]
  y = jnp.matmul(b.T, x, precision=_HP)
  norm = jnp.linalg.norm(y, axis=0)
  y = y / jnp.where(norm > 0, norm, 1.0)[None, :]
  s = jnp.sqrt(jnp.clip(w, 0.0, None))
  return Spectral(y, s, x) if flip else Spectral(x, s, y)


@jax.jit
def _gram_stack(m: Array) -> Spectral:
  # lax.map, not vmap: batched LAPACK inside a larger XLA:CPU program has
  # deadlocked (rainbow_jax.similarity).
  return lax.map(_gram_one, m)


@functools.partial(jax.jit, static_argnames=("k", "oversample", "iters"))
def randomized_svd(m: Array, key: Array, k: int, *, oversample: int = 10,
                   iters: int = 2) -> Spectral:
  """Top-`k` SVD of ``[rows, cols]`` by randomized range finding.

  Halko, Martinsson & Tropp (2011): a Gaussian sketch with `oversample`
  extra columns and `iters` power iterations (re-orthonormalised by QR),
  then an exact SVD of the small projected matrix. Cost O(rows·cols·k);
  for layers too large for a full SVD.
  """
  l = min(k + oversample, *m.shape)
  flip = m.shape[0] < m.shape[1]
  a = m.T if flip else m
  q, _ = jnp.linalg.qr(jnp.matmul(a, jax.random.normal(key, (a.shape[1], l), a.dtype),
                                  precision=_HP))
  for _ in range(iters):
    z, _ = jnp.linalg.qr(jnp.matmul(a.T, q, precision=_HP))
    q, _ = jnp.linalg.qr(jnp.matmul(a, z, precision=_HP))
  ub, s, vh = jnp.linalg.svd(jnp.matmul(q.T, a, precision=_HP), full_matrices=False)
  u = jnp.matmul(q, ub, precision=_HP)[:, :k]
  v = vh[:k].T
  s = s[:k]
  return Spectral(v, s, u) if flip else Spectral(u, s, v)


def spectra(weights: Sequence[Array], *, co: bool = False, top_k: int | None = None,
            key: Array | None = None, solver: str = "svd") -> list[Spectral]:
  """Spectral neurons of every layer (native layout, see `from_flax`).

  Layers of the same flattened shape share one vmapped SVD. With `top_k`,
  layers whose smaller side exceeds it keep their top `top_k` spectral
  neurons from `randomized_svd` (`key` required).

  ``solver``: ``'svd'`` (default) is LAPACK's divide-and-conquer SVD.
  ``'gram'`` takes the eigendecomposition of the smaller Gram matrix W Wᵀ
  (or WᵀW) and the other side's vectors as normalised Wᵀu: 3–5× faster on
  large layers (one GEMM + one symmetric eigensolver), and as accurate for
  singular values above about √ε·s_max (3·10⁻⁴ s_max in float32); below
  that the singular values and their vectors are unreliable. Still a full,
  untruncated spectrum.
  """
  if solver not in ("svd", "gram"):
    raise ValueError(f"solver must be 'svd' or 'gram', got {solver!r}.")
  mats = []
  for i, w in enumerate(weights):
    _checks.check_array(w, f"weights[{i}]", (2, 4))
    mats.append(flatten(jnp.asarray(w), co=co))
  out: list[Spectral | None] = [None] * len(mats)
  big = [i for i, m in enumerate(mats) if top_k is not None and min(m.shape) > top_k]
  if big and key is None:
    raise ValueError("top_k needs a PRNG key for the randomized SVD.")
  for n, i in enumerate(big):
    out[i] = randomized_svd(mats[i], jax.random.fold_in(key, n), top_k)
  groups: dict[tuple, list[int]] = {}
  for i, m in enumerate(mats):
    if out[i] is None:
      groups.setdefault((m.shape, m.dtype), []).append(i)
  for idx in groups.values():
    res = (_svd_stack if solver == "svd" else _gram_stack)(jnp.stack([mats[i] for i in idx]))
    for n, i in enumerate(idx):
      out[i] = Spectral(res.u[n], res.s[n], res.v[n])
  return out


# --------------------------------------------------------------------------
# Adjacency.


def _positions(prev: Spectral, nxt: Spectral, channels: int | None = None
               ) -> tuple[int, int, int]:
  """(c, Q, P): shared channels, taps of the previous layer's output
  representations (1 but in the co-SVR), positions of the next layer's
  input representations."""
  out, rows = prev.u.shape[0], nxt.v.shape[0]
  c = out if channels is None else int(channels)
  if c < 1 or out % c:
    raise ValueError(f"channels={c} does not divide the previous layer's {out} output rows.")
  if rows % c:
    raise ValueError(f"layer with {rows} inputs cannot follow one with {c} outputs"
                     " (need inputs = outputs · positions).")
  return c, out // c, rows // c


@functools.partial(jax.jit, static_argnames=("channels",))
def _filters(u: Array, v: Array, channels: int | None = None) -> Array:
  """``[M', M, P, Q]``: Σ_k v_{k,p,n} u_{k,q,m}."""
  c = u.shape[0] if channels is None else channels
  uu = u.reshape(c, u.shape[0] // c, u.shape[1])  # [c, Q, M]
  vv = v.reshape(c, v.shape[0] // c, v.shape[1])  # [c, P, M']
  return jnp.einsum("cqm,cpn->nmpq", uu, vv, precision=_HP)


@functools.partial(jax.jit, static_argnames=("channels",))
def _adjacency(u: Array, v: Array, channels: int | None = None) -> Array:
  t = _filters(u, v, channels)
  return jnp.sum(t * t, axis=(2, 3))


def adjacency(prev: Spectral, nxt: Spectral, *, channels: int | None = None) -> Array:
  """``[M_next, M_prev]`` edge weights a_{n,m} = Σ_p (Σ_k u_{k,m} V_{k,p,n})².

  Dense → dense: |V_nextᵀ U_prev|². Conv → conv: the squared Frobenius norm
  of the effective K×K filter between the spectral neurons. Conv → dense:
  the positions of the flattened map play the role of the kernel taps.
  Every entry lies in [0, 1]; each column of a square orthogonal case sums to 1.

  ``channels``: the shared dimension c, needed only when the previous
  layer's output representations carry taps too (co-SVR spectra of a conv
  layer, ``u`` of ``[c · K², M]``); default ``prev.u.shape[0]``.
  """
  c, _, _ = _positions(prev, nxt, channels)
  return _adjacency(prev.u, nxt.v, c)


def effective_filters(prev: Spectral, nxt: Spectral, *, channels: int | None = None,
                      kernel: Sequence[int] | None = None) -> Array:
  """The effective filters A_{n,m} between spectral neurons (section 4.2).

  With no nonlinearity, the next layer's spectral activation n is
  z_n = Σ_m A_{n,m} ⋆ y_m: the previous layer's spectral activations y_m,
  each convolved with A_{n,m} = Σ_k u_{k,m} V_{k,n}. Its squared Frobenius
  norm is the edge weight (`adjacency`).

  Args:
    prev, nxt: `Spectral` of consecutive layers (both from ``spectra`` or
      both from ``spectra(..., co=True)``).
    channels: the shared dimension, as in `adjacency` (needed for co-SVR
      spectra of a conv layer).
    kernel: reshape the taps to this spatial shape, e.g. ``(K, K)``
      (conv → conv), or ``(H, W)`` (conv → dense: the flattened map).

  Returns:
    ``[M_next, M_prev, P]`` (P taps; ``[M_next, M_prev, *kernel]`` with
    `kernel`). The taps belong to the next layer in the SVR, to the previous
    one in the co-SVR; where both carry taps (a co-SVR conv → dense edge) P
    is their product, the next layer's positions major.
  """
  c, _, _ = _positions(prev, nxt, channels)
  f = _filters(prev.u, nxt.v, c)
  f = f.reshape(f.shape[0], f.shape[1], -1)
  if kernel is None:
    return f
  kernel = tuple(int(k) for k in kernel)
  if int(np.prod(kernel)) != f.shape[2]:
    raise ValueError(f"kernel={kernel} does not hold the edge's {f.shape[2]} taps.")
  return f.reshape(*f.shape[:2], *kernel)


def svr_to_co_svr(prev: Spectral, nxt_co: Spectral) -> Array:
  """``[M_next, M_prev]`` signed matrix Ṽ_nextᵀ U_prev between the SVR of a
  layer and the co-SVR of the next (section 5.2, Figure 7 shows its
  absolute value). The next layer's co-SVR input representations live in
  its input channels, so this needs a conv/dense → conv/dense edge without
  a flatten in between."""
  if nxt_co.v.shape[0] != prev.u.shape[0]:
    raise ValueError(f"co-SVR inputs {nxt_co.v.shape[0]} ≠ previous outputs {prev.u.shape[0]}.")
  return jnp.matmul(nxt_co.v.T, prev.u, precision=_HP)


# --------------------------------------------------------------------------
# Significance.


def null_law(channels: int, positions: int = 1, *, exact: bool = True):
  """scipy.stats distribution of an edge weight under the null hypothesis.

  ``exact``: Beta(P/2, (c − 1)P/2), exact for uniformly random unit
  representations. Otherwise the paper's asymptotic χ²(P)/(cP).
  """
  c, p = int(channels), int(positions)
  if c < 2 or p < 1:
    raise ValueError(f"need channels ≥ 2 and positions ≥ 1, got {c}, {p}.")
  if exact:
    return scipy.stats.beta(p / 2, (c - 1) * p / 2)
  return scipy.stats.chi2(p, scale=1.0 / (c * p))


def _beta_sf(a: Array, al: float, be: float) -> Array:
  """P(Beta(α, β) > a) = 1 − I_a(α, β) = I_{1−a}(β, α); the first form is
  accurate for small a, the second in the upper tail. One betainc call with
  per-entry parameters evaluates whichever applies."""
  a = jnp.clip(a, 0.0, 1.0)
  low = a < al / (al + be)
  r = jax.scipy.special.betainc(jnp.where(low, al, be), jnp.where(low, be, al),
                                jnp.where(low, a, 1.0 - a))
  return jnp.where(low, 1.0 - r, r)


@functools.partial(jax.jit, static_argnames=("channels", "positions", "exact"))
def pvalues(a: Array, channels: int, positions: int = 1, *, exact: bool = True) -> Array:
  """Survival function of `null_law` at each edge weight (jittable)."""
  c, p = channels, positions
  if exact:
    return _beta_sf(a, p / 2, (c - 1) * p / 2)
  return jax.scipy.special.gammaincc(p / 2, c * p * jnp.clip(a, 0.0, 1.0) / 2)


def _chi2_draws(seed: Sequence[int], channels: int, taps: int, positions: int,
                draws: int) -> tuple[np.ndarray, np.ndarray]:
  """``([draws, r], [draws])``: the X_j ~ χ²(P) and R ~ χ²((c − r)P) of a
  two-sided edge's null law (module docstring), r = min(c, Q). Drawn by
  numpy on the host (data-independent, like the Beta laws' critical values)."""
  c, r, p = channels, min(channels, taps), positions
  gen = np.random.default_rng(list(seed))
  x = 2.0 * gen.standard_gamma(p / 2, (draws, r))
  rest = 2.0 * gen.standard_gamma((c - r) * p / 2, draws) if c > r else np.zeros(draws)
  return x.astype(np.float32), rest.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("channels",))
def _sampled_pvalues(a: Array, u: Array, x: Array, rest: Array, *, channels: int) -> Array:
  """Monte Carlo p-values of a two-sided edge (module docstring): ``a``
  ``[M', M]``, ``u`` ``[c · Q, M]``, the χ² draws of `_chi2_draws` (the
  same draws serve every column)."""
  c = channels
  uu = jnp.moveaxis(u.reshape(c, u.shape[0] // c, u.shape[1]), -1, 0)  # [M, c, Q]
  lam2 = jnp.linalg.svd(uu, compute_uv=False) ** 2  # [M, r]
  x, rest = x.astype(a.dtype), rest.astype(a.dtype)
  null = jnp.sort(jnp.matmul(lam2, x.T, precision=_HP)
                  / (jnp.sum(x, axis=1) + rest)[None, :], axis=1)  # [M, draws]
  below = jax.vmap(jnp.searchsorted, in_axes=(0, 1), out_axes=1)(null, a)  # [M', M]
  draws = x.shape[0]
  return (1.0 + draws - below) / (1.0 + draws)


def benjamini_hochberg(pvals: Sequence[Array], q: float) -> list[Array]:
  """Benjamini–Hochberg at false-discovery rate `q` across all edges of all
  layers; returns a boolean mask per array."""
  if not 0 < q < 1:
    raise ValueError(f"q must lie in (0, 1), got {q}.")
  flat = jnp.concatenate([jnp.ravel(p) for p in pvals])
  m = flat.shape[0]
  order = jnp.sort(flat)
  ok = order <= q * jnp.arange(1, m + 1) / m
  cut = jnp.where(jnp.any(ok), jnp.max(jnp.where(ok, order, -1.0)), -1.0)
  return [p <= cut for p in pvals]


# --------------------------------------------------------------------------
# Internal dimensions.


@functools.partial(jax.jit, static_argnames=("n",))
def internal_dimensions(a: Array, n: int) -> tuple[Array, Array]:
  """(d_out, d_in) = argmax_{i,j} B_ij − ij/n, B the 2-D cumulative sum of a.

  Rows i index the next layer's spectral neurons, columns j the previous
  layer's (1-based counts). `n` is the shared dimension (1/n is the null
  mean of an edge weight).
  """
  b = jnp.cumsum(jnp.cumsum(a, axis=0), axis=1)
  i = jnp.arange(1, a.shape[0] + 1)[:, None]
  j = jnp.arange(1, a.shape[1] + 1)[None, :]
  flat = jnp.argmax(b - i * j / n)
  return flat // a.shape[1] + 1, flat % a.shape[1] + 1


@functools.partial(jax.jit, static_argnames=("n",))
def color_intensity(a: Array, n: int) -> Array:
  """``[M_prev]`` max_i (Σ_{k≤i} a_{k,j} − i/n), divided by its maximum over j
  (so in [0, 1] per layer; the paper's vertex colour)."""
  i = jnp.arange(1, a.shape[0] + 1)[:, None]
  x = jnp.max(jnp.cumsum(a, axis=0) - i / n, axis=0)
  top = jnp.max(x)
  return jnp.where(top > 0, jnp.maximum(x, 0.0) / jnp.where(top > 0, top, 1.0), 0.0)


def noisy_block_orthogonal(key: Array, n: int, p: int, eps: float) -> Array:
  """Appendix B.1's P(ε) = diag(Q_p, Q_{n−p}) exp(ε(A − Aᵀ)), Q uniform on
  O(p), O(n − p), A standard normal: orthogonal, block-structured for small ε."""
  kp, kq, ka = jax.random.split(key, 3)
  blocks = jnp.zeros((n, n))
  blocks = blocks.at[:p, :p].set(_haar(kp, p)).at[p:, p:].set(_haar(kq, n - p))
  a = jax.random.normal(ka, (n, n))
  return blocks @ jax.scipy.linalg.expm(eps * (a - a.T))


def _haar(key, n):
  q, r = jnp.linalg.qr(jax.random.normal(key, (n, n)))
  return q * jnp.sign(jnp.diagonal(r))[None, :]


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


@functools.partial(jax.jit, static_argnames=("channels", "exact", "with_pvalues"))
def _edge(u: Array, v: Array, critical, draws, *, channels: int, exact: bool,
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
  x = None
  for l, sp in enumerate(result.spectra):
    w = jnp.where(sp.s > threshold, sp.s if scale else 1.0, 0.0)
    x = w if x is None else w * jnp.matmul(result.adjacency[l - 1], x, precision=_HP)
  return jnp.sum(x)


def entropy(result: SVR) -> Array:
  """``[L − 1]`` −Σ a log a over each adjacency matrix's entries (the
  reference code's ``entropy``; 0 log 0 = 0, where the reference gives NaN).
  Low when each spectral neuron reads few of the previous layer's; the
  weights are not normalised, so compare layers of the same shape."""
  return jnp.stack([-jnp.sum(jax.scipy.special.xlogy(a, a)) for a in result.adjacency])


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


__all__ = ["SVR", "Spectral", "adjacency", "benjamini_hochberg", "color_intensity",
           "edges", "effective_filters", "entropy", "flatten", "from_flax",
           "internal_dimensions", "keep_ranks", "low_rank", "noisy_block_orthogonal",
           "null_law", "path_metric", "pvalues", "randomized_svd", "spectra", "svr",
           "svr_stack", "svr_to_co_svr", "take", "to_flax", "to_networkx"]
