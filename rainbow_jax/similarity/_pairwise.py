"""Layer × layer matrices of a measure between two models, from in-memory
activations or streamed `Moments`, with one table of the measures they know;
and `features`, how conv maps become datapoints × neurons."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rainbow_jax import _checks
from rainbow_jax import _precision
from rainbow_jax import moments as _moments
from rainbow_jax.similarity._base import (_mm,
    _ratio)
from rainbow_jax.similarity._table import MEASURES
from rainbow_jax.similarity._cca import (_cca_pair, _check_signs, _check_svcca, _check_threshold,
    _pwcca_pair, _side, _top_directions)

Array = jax.Array


# --------------------------------------------------------------------------
# Layer × layer matrices.


def _seq(f, *xs):
  """``vmap(f)(*xs)`` computed one slice at a time (`lax.map`).

  Batched LAPACK calls (vmapped eigh/svd) inside a larger program have
  deadlocked XLA:CPU when the program was run repeatedly (jax 0.10); one
  slice at a time never did, and costs nothing on these O(d³) steps.
  """
  return lax.map(lambda a: f(*a), xs)


def _pairwise_from_stats(measure: str, covx, covy, cross, mx, my, maskx, masky, *,
                         epsilon, threshold, keep, variance, signs) -> Array:
  """``[Lx, Ly]`` values from zero-padded, masked per-layer statistics.

  covx ``[Lx, D, D]``, covy ``[Ly, E, E]``, cross ``[Lx, Ly, D, E]`` (ddof 0),
  means ``[L, D]``, masks ``[L, D]`` (False on padding). Per-layer work
  (whitening, norms) is done once per layer, not once per pair.
  """
  def grid(f, a, b, c):
    return _seq(lambda ai, ci: _seq(lambda bj, cij: f(ai, bj, cij), b, ci), a, c)

  if measure == "cca":
    side = lambda cov, mask: _seq(lambda s, m: _side(s, m, epsilon, False), cov, mask)
    return grid(lambda a, b, c: _cca_pair(a, b, c, threshold).mean,
                side(covx, maskx), side(covy, masky), cross)
  if measure == "svcca":
    def side(s, m):
      v, top = _top_directions(s, keep, variance)
      return v, _side(_mm(v.T, _mm(s, v)), top, epsilon, False)
    vx, sx = _seq(side, covx, maskx)
    vy, sy = _seq(side, covy, masky)
    pair = lambda a, b, c: _cca_pair(a[1], b[1], _mm(a[0].T, _mm(c, b[0])), threshold).mean
    return grid(pair, (vx, sx), (vy, sy), cross)
  if measure == "pwcca":
    side = lambda cov, mask: _seq(lambda s, m: _side(s, m, epsilon, True), cov, mask)
    pair = lambda a, b, c: _pwcca_pair(a[0], b[0], c, a[1], b[1], epsilon, signs).value
    return grid(pair, (side(covx, maskx), mx), (side(covy, masky), my), cross)
  if measure == "linear_cka":
    fro = lambda c: jnp.sqrt(jnp.sum(c * c, axis=(-2, -1)))
    return grid(lambda a, b, c: _ratio(jnp.sum(c * c), a * b), fro(covx), fro(covy), cross)
  if measure == "procrustes_distance":
    tr = lambda c: jnp.trace(c, axis1=-2, axis2=-1)
    dist = lambda a, b, c: jnp.clip(
        2.0 - 2.0 * _ratio(jnp.sum(jnp.linalg.svd(c, compute_uv=False)), jnp.sqrt(a * b)),
        0.0, 2.0)
    return grid(dist, tr(covx), tr(covy), cross)
  raise ValueError(f"unknown measure {measure!r}; choose one of {MEASURES}.")


def _stack_padded(mats: Sequence[Array], width: int) -> tuple[Array, Array]:
  """Square ``[d, d]`` matrices (or ``[d]`` vectors) zero-padded to `width`."""
  pad = lambda a: jnp.pad(a, [(0, width - a.shape[0])] * a.ndim)
  masks = [jnp.arange(width) < m.shape[0] for m in mats]
  return jnp.stack([pad(m) for m in mats]), jnp.stack(masks)


def _cross_grid(blocks, wx: int, wy: int) -> Array:
  """``[Lx, Ly, wx, wy]`` from a nested list of cross blocks, zero-padded."""
  return jnp.stack([jnp.stack([jnp.pad(b, [(0, wx - b.shape[0]), (0, wy - b.shape[1])])
                               for b in row]) for row in blocks])


def _check_measure(measure, threshold, keep, variance):
  _checks.check_choice(measure, MEASURES, "measure")
  _check_threshold(threshold)
  _check_svcca(keep, variance)


@functools.partial(jax.jit, static_argnames=("measure", "epsilon", "threshold", "keep",
                                             "variance", "signs"))
def _pairwise_jit(xs, ys, *, measure, epsilon, threshold, keep, variance, signs):
  dx = [x.shape[1] for x in xs]
  dy = [y.shape[1] for y in ys]
  centre = lambda a: a - jnp.mean(a, axis=0)[None, :]
  xa = centre(jnp.concatenate(xs, axis=1))
  ya = centre(jnp.concatenate(ys, axis=1))
  n = xa.shape[0]
  cross = _mm(xa.T, ya) / n  # every layer pair's block in one GEMM
  ox = [sum(dx[:i]) for i in range(len(dx))]
  oy = [sum(dy[:j]) for j in range(len(dy))]
  blocks = [[cross[ox[i]:ox[i] + dx[i], oy[j]:oy[j] + dy[j]] for j in range(len(dy))]
            for i in range(len(dx))]

  def self_cov(a, o, d):
    c = a[:, o:o + d]
    return _mm(c.T, c) / n

  covx, maskx = _stack_padded([self_cov(xa, o, d) for o, d in zip(ox, dx)], max(dx))
  covy, masky = _stack_padded([self_cov(ya, o, d) for o, d in zip(oy, dy)], max(dy))
  mx, _ = _stack_padded([jnp.mean(x, axis=0) for x in xs], max(dx))
  my, _ = _stack_padded([jnp.mean(y, axis=0) for y in ys], max(dy))
  return _pairwise_from_stats(measure, covx, covy, _cross_grid(blocks, max(dx), max(dy)),
                              mx, my, maskx, masky, epsilon=epsilon, threshold=threshold,
                              keep=keep, variance=variance, signs=signs)


CONV = ("mean", "flatten", "positions", "cls")
"""How `features` turns a conv feature map ``[n, H, W, C]`` or a token
sequence ``[n, T, d]`` into ``[n', d]``."""


def features(h: Array, conv: str = "mean") -> Array:
  """One layer's representation as datapoints × neurons, by the convention
  every layer × layer comparison of rainbow_jax uses (`pairwise`,
  ``rainbow-jax analyze`` and ``compare``).

  Args:
    h: ``[n, d]`` (returned as is), a conv map ``[n, *space, C]`` or a
      token sequence ``[n, T, d]`` (tokens are positions).
    conv: ``"mean"`` (default) averages over positions, ``[n, C]``: every
      layer of a network compares with every other whatever its spatial
      size, and d stays the channel count (what CCA's d × d covariances
      and a layer × layer matrix can afford); ``"flatten"`` keeps one
      vector per image, ``[n, H·W·C]`` (Kornblith et al.'s CKA; d grows
      with the map: use linear CKA there); ``"positions"`` makes every
      position a datapoint, ``[n·H·W, C]`` (the SVCCA tutorial's conv CCA;
      only layers with equal n·H·W compare); ``"cls"`` keeps the first
      token of a sequence ``[n, T, d]`` (a ViT's or BERT's class token) and
      averages conv maps (rank 4 and more) over positions.

  Returns:
    ``[n, d]`` (``[n·H·W, C]`` for ``"positions"``).
  """
  _checks.check_choice(conv, CONV, "conv")
  if not isinstance(h, (np.ndarray, jax.Array)):
    h = jnp.asarray(h)  # numpy stays numpy: reshaped on the host, no program
  if h.ndim <= 2:
    return h
  if conv == "cls" and h.ndim == 3:
    return h[:, 0]
  if conv in ("mean", "cls"):
    return h.reshape(h.shape[0], -1, h.shape[-1]).mean(axis=1)
  if conv == "flatten":
    return h.reshape(h.shape[0], -1)
  return h.reshape(-1, h.shape[-1])


@_precision.follow_inputs
def pairwise(xs: Sequence[Array], ys: Sequence[Array] | None = None, *,
             measure: str = "linear_cka", conv: str = "mean", epsilon: float = 0.0,
             threshold: float = 0.98, keep: int | None = None, variance: float = 0.99,
             signs: str = "svd") -> Array:
  """Layer × layer matrix of a measure, in one jitted call.

  Compare every layer of one model with every layer of another (or of the
  same model with ``ys=None``; for K seeds pass the seeds' layers one after
  another). Widths may differ: layers are zero-padded to the widest and the
  padding masked out, so every entry equals the measure called on that pair
  alone (for ``"pwcca"`` with ``signs="largest_positive"``; with the SVD's
  signs the padded SVD may orient a direction otherwise). The
  cross-covariances of all pairs come from one matrix product; whitening and
  norms are done once per layer.

  Args:
    xs: layers of the first model, each ``[n, d_i]`` or a conv map
      ``[n, H, W, d_i]`` (turned into ``[n, d]`` by `features` with `conv`).
    ys: layers of the second model, each ``[n, e_j]``; None for ``xs``.
    measure: one of `MEASURES`: ``"cca"`` (svcca's mean), ``"svcca"``,
      ``"pwcca"``, ``"linear_cka"`` (similarities in [0, 1]) or
      ``"procrustes_distance"`` (a distance in [0, 2]).
    conv: how conv maps become datapoints × neurons (`CONV`; default
      ``"mean"``, averaged over positions; see `features`).
    epsilon, threshold: as in `cca`; keep, variance: as in `svcca` (with
      `keep` at most the narrowest width); signs: as in `pwcca`.

  Returns:
    ``[len(xs), len(ys)]`` matrix.
  """
  _check_measure(measure, threshold, keep, variance)
  _check_signs(signs)
  same = ys is None
  ys = xs if same else ys
  for side, layers in (("xs", xs), ("ys", () if same else ys)):
    for i, a in enumerate(layers):
      _checks.check_array(a, f"{side}[{i}]", (2, 3, 4, 5), "([n, d] or [n, *space, C])")
  fx = [features(x, conv) for x in xs]
  fy = fx if same else [features(y, conv) for y in ys]
  sizes = [(f"xs[{i}]", a.shape[0]) for i, a in enumerate(fx)]
  sizes += [] if same else [(f"ys[{j}]", a.shape[0]) for j, a in enumerate(fy)]
  if len({n for _, n in sizes}) != 1:
    listed = ", ".join(f"{name}: {n}" for name, n in sizes)
    hint = (" With conv='positions' every position is a datapoint, so only layers whose"
            " n·H·W agree compare; conv='mean' (the default) or 'flatten' compare any two"
            " layers of the same images." if conv == "positions" else
            " Pass every layer's activations on the same inputs, in the same order.")
    raise ValueError(f"all layers need the same number of datapoints; got {listed}.{hint}")
  if sizes[0][1] < 2:
    raise ValueError("need at least 2 datapoints.")
  return _pairwise_jit(fx, fy, measure=measure, epsilon=epsilon, threshold=threshold,
                       keep=keep, variance=variance, signs=signs)


@functools.partial(jax.jit, static_argnames=("rows", "cols", "measure", "epsilon", "threshold",
                                             "keep", "variance", "signs"))
def _pairwise_moments_jit(state, *, rows, cols, measure, epsilon, threshold, keep, variance,
                          signs):
  cov = lambda a, b=None: _moments.covariance(state, a, b, centered=True)
  wx = max(state.mean[i].shape[0] for i in rows)
  wy = max(state.mean[j].shape[0] for j in cols)
  covx, maskx = _stack_padded([cov(i) for i in rows], wx)
  covy, masky = _stack_padded([cov(j) for j in cols], wy)
  mx, _ = _stack_padded([_moments.mean(state, i) for i in rows], wx)
  my, _ = _stack_padded([_moments.mean(state, j) for j in cols], wy)
  cross = _cross_grid([[cov(i, j) for j in cols] for i in rows], wx, wy)
  return _pairwise_from_stats(measure, covx, covy, cross, mx, my, maskx, masky,
                              epsilon=epsilon, threshold=threshold, keep=keep,
                              variance=variance, signs=signs)


def pairwise_moments(state: _moments.Moments, rows: Sequence[int], cols: Sequence[int], *,
                     measure: str = "linear_cka", epsilon: float = 0.0,
                     threshold: float = 0.98, keep: int | None = None,
                     variance: float = 0.99, signs: str = "svd") -> Array:
  """`pairwise` from streamed `Moments`: maps `rows` × maps `cols`.

  Every pair (i, j) with i ≠ j needs its cross moments, e.g. from
  ``layer_moments(..., params2=..., cross="all")``, whose first model's
  maps are ``range(L1)`` and second's ``range(L1, L1 + L2)``.

  Conv maps in `Moments` have positions as datapoints (``conv="positions"``
  of `pairwise`).

  Returns:
    ``[len(rows), len(cols)]`` matrix, equal to `pairwise` on the data.
  """
  _check_measure(measure, threshold, keep, variance)
  _check_signs(signs)
  rows, cols = tuple(int(i) for i in rows), tuple(int(j) for j in cols)
  for i in rows:
    for j in cols:
      if i != j and (i, j) not in state.pairs and (j, i) not in state.pairs:
        raise ValueError(f"no cross moments of maps {i} and {j}; accumulate with"
                         f" cross='all' (kept: {state.pairs}).")
  return _pairwise_moments_jit(state, rows=rows, cols=cols, measure=measure, epsilon=epsilon,
                               threshold=threshold, keep=keep, variance=variance, signs=signs)
