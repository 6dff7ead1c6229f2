"""Generalised shape metrics between representations (Williams et al., 2021).

A shape metric is a true distance between two ``[n, p]`` representations of
the same n inputs, after removing the transformations a reader should not
care about. One parameter spans the family: each representation is centred
and *partially whitened*, ``X ↦ X Z``, ``Z = V diag(α + (1 − α) λ^−½) Vᵀ``
(``XᵀX = V diag(λ) Vᵀ``, rescaled so the total variance is kept), then the
two are rotated onto each other (orthogonal Procrustes) and compared by the
angle between them, ``arccos(⟨X̃, Ỹ⟩_F / (‖X̃‖ ‖Ỹ‖))`` (or their Euclidean
distance). α = 1 is Procrustes shape distance (invariant to rotations,
translations and, for the angle, scale); α = 0 allows any invertible linear
map: the angle is ``arccos`` of the mean canonical correlation. The
conventions are netrep's ``LinearMetric`` (centring, variance-preserving
whitening, eigenvalues clipped at 1e-7, narrower representations zero-padded).

What this module adds over netrep: `pairwise` computes the K × K distance
matrix of K networks' layers in one compiled program (each representation
whitened once, all pairs vmapped; netrep loops, or farms pairs to a process
pool), cross-validated when given test data (alignment fitted on one split,
scored on another), and `frechet_mean` finds the representation closest to
K others (generalised Procrustes averaging).

Reference:
  Williams, Kunz, Kornblith & Linderman, "Generalized Shape Metrics on
  Neural Representations", NeurIPS 2021 (github.com/ahwillia/netrep).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from rainbow_jax import _precision
from rainbow_jax import _checks, align

_HP = _precision.STATS  # float32-exact products on every backend
_EIG_TOL = 1e-7
SCORES = ("angular", "euclidean")


class Whitening(NamedTuple):
  """A fitted centring and partial whitening: ``(x − mean) @ matrix``."""

  mean: Array  # [p]
  matrix: Array  # [p, p]


def _whitening(x: Array, alpha: float) -> Whitening:
  mean = jnp.mean(x, axis=0)
  xc = x - mean[None, :]
  # Eigenpairs of xcᵀxc from the SVD of xc: squaring the data into a
  # covariance squares its condition number, and the float32 whitening of
  # an invertible map of x then left 7e-3 of angle at α = 0.
  if xc.shape[0] >= xc.shape[1]:
    _, s, vt = jnp.linalg.svd(xc, full_matrices=False)
    lam, v = jnp.square(s), vt.T
  else:  # fewer inputs than neurons: the full eigenbasis, null directions included
    lam, v = jnp.linalg.eigh(jnp.matmul(xc.T, xc, precision=_HP))
  lam = jnp.maximum(lam, _EIG_TOL)
  d = alpha + (1 - alpha) * lam ** -0.5
  # Keep the total variance: Σ λ (α + (1 − α) λ^−½)² → Σ λ.
  new_var = jnp.sum(alpha**2 * lam + 2 * alpha * (1 - alpha) * jnp.sqrt(lam) + (1 - alpha) ** 2)
  d = d * jnp.sqrt(jnp.sum(lam) / new_var)
  return Whitening(mean, jnp.matmul(v * d[None, :], v.T, precision=_HP))


def _apply(w: Whitening, x: Array) -> Array:
  return jnp.matmul(x - w.mean[None, :], w.matrix, precision=_HP)


def _rotation(xw: Array, yw: Array) -> Array:
  """``[p, p]`` orthogonal R minimising ‖xw R − yw‖ (`align.procrustes`)."""
  return align.procrustes(jnp.matmul(yw.T, xw, precision=_HP)).T


def _score(a: Array, b: Array, score: str) -> Array:
  if score == "euclidean":
    return jnp.linalg.norm(a - b)
  # The angle as 2·atan2(‖â − b̂‖, ‖â + b̂‖) of the unit vectors (Kahan):
  # accurate to float32 rounding at every angle. arccos of the cosine turned
  # a 3e-5 rounding of a cosine near 1 into 7e-3 of angle.
  ua, ub = a / _safe_norm(a), b / _safe_norm(b)
  return 2.0 * jnp.arctan2(jnp.linalg.norm(ua - ub), jnp.linalg.norm(ua + ub))


def _safe_norm(a: Array) -> Array:
  n = jnp.linalg.norm(a)
  return jnp.where(n > 0, n, 1.0)


def _pad(xs: Sequence[Array], names: Sequence[str]) -> list[Array]:
  """Checks ``[n, p_k]`` representations of the same n inputs and zero-pads
  them to the widest p."""
  out = []
  for x, name in zip(xs, names):
    _checks.check_rank(x, 2, name, "([inputs, neurons])")
    _checks.check_floating(x, name)
    _checks.check_finite(x, name)
    out.append(jnp.asarray(x))
  _checks.check_same_leading(out, names, noun="inputs")
  if out[0].shape[0] < 2:
    raise ValueError(f"need at least 2 inputs, got {out[0].shape[0]}.")
  p = max(x.shape[1] for x in out)
  return [jnp.pad(x, ((0, 0), (0, p - x.shape[1]))) for x in out]


def _check(alpha: float, score: str) -> None:
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1] (0: CCA, 1: Procrustes), got {alpha}.")
  _checks.check_choice(score, SCORES, "score")


@functools.partial(jax.jit, static_argnames=("score",))
def _distance(x, y, xt, yt, alpha, *, score):
  wx, wy = _whitening(x, alpha), _whitening(y, alpha)
  r = _rotation(_apply(wx, x), _apply(wy, y))
  return _score(jnp.matmul(_apply(wx, xt), r, precision=_HP), _apply(wy, yt), score)


def distance(x: Float[Array, "n px"], y: Float[Array, "n py"], *, alpha: float = 1.0,
             score: str = "angular", x_test: Array | None = None,
             y_test: Array | None = None) -> Float[Array, ""]:
  """The shape distance between two representations of the same inputs.

  Args:
    x: ``[n, p_x]``, y: ``[n, p_y]`` (the narrower is zero-padded).
    alpha: 1 (Procrustes, the default) … 0 (CCA).
    score: ``"angular"`` (in [0, π/2] for these alignments) or
      ``"euclidean"``.
    x_test, y_test: optional ``[m, p]`` representations of other inputs: the
      centring, whitening and rotation are fitted on (x, y) and the distance
      is measured on the test pair (cross-validated, as netrep's
      ``fit(train).score(test)``). Without them it is netrep's ``fit_score``.

  Returns:
    ``[]`` distance; 0 for representations equal up to the allowed maps.
  """
  _check(alpha, score)
  x, y = _pad([x, y], ("x", "y"))
  if (x_test is None) != (y_test is None):
    raise ValueError("give both x_test and y_test, or neither.")
  xt, yt = (x, y) if x_test is None else _pad([x_test, y_test], ("x_test", "y_test"))
  if xt.shape[1] != x.shape[1]:
    raise ValueError(f"test representations have {xt.shape[1]} neurons (after padding),"
                     f" training ones {x.shape[1]}.")
  return _distance(x, y, xt, yt, float(alpha), score=score)


@functools.partial(jax.jit, static_argnames=("score",))
def _pairwise(train, test, alpha, *, score):
  k = train.shape[0]
  w = jax.vmap(_whitening, in_axes=(0, None))(train, alpha)
  fit = jax.vmap(_apply)(w, train)  # [K, n, p]
  held = jax.vmap(_apply)(w, test)  # [K, m, p]
  i, j = jnp.triu_indices(k, 1)

  def one(a, b):
    return _score(jnp.matmul(held[a], _rotation(fit[a], fit[b]), precision=_HP), held[b],
                  score)

  d = lax.map(lambda ab: one(*ab), (i, j))  # one pair at a time: O(n·p) memory
  out = jnp.zeros((k, k), d.dtype).at[i, j].set(d)
  return out + out.T


def pairwise(reps: Sequence[Float[Array, "n p"]], *, alpha: float = 1.0,
             score: str = "angular", test: Sequence[Array] | None = None
             ) -> Float[Array, "K K"]:
  """The K × K shape-distance matrix of K representations, one program.

  Each representation is centred and whitened once; the K(K − 1)/2 pairs
  are aligned and scored in one compiled loop.

  Args:
    reps: K ``[n, p_k]`` representations of the same n inputs (narrower
      ones zero-padded to the widest).
    alpha, score: as in `distance`.
    test: optional K ``[m, p_k]`` representations of held-out inputs: the
      alignments are fitted on `reps` and scored on these.

  Returns:
    ``[K, K]`` symmetric distances, zero diagonal.
  """
  _check(alpha, score)
  if len(reps) < 2:
    raise ValueError(f"pairwise needs at least 2 representations, got {len(reps)}.")
  names = [f"reps[{i}]" for i in range(len(reps))]
  train = jnp.stack(_pad(reps, names))
  if test is None:
    held = train
  else:
    if len(test) != len(reps):
      raise ValueError(f"got {len(test)} test representations for {len(reps)}.")
    held = jnp.stack(_pad(list(test), [f"test[{i}]" for i in range(len(test))]))
    widths = [r.shape[1] for r in reps], [t.shape[1] for t in test]
    if widths[0] != widths[1]:
      raise ValueError(f"test widths {widths[1]} differ from the training widths {widths[0]}.")
  return _pairwise(train, held, float(alpha), score=score)


@functools.partial(jax.jit, static_argnames=("iterations",))
def _frechet(stack, alpha, *, iterations):
  w = jax.vmap(_whitening, in_axes=(0, None))(stack, alpha)
  xs = jax.vmap(_apply)(w, stack)  # [K, n, p]

  def step(mean, _):
    def onto(x):
      return jnp.matmul(x, _rotation(x, mean), precision=_HP)
    aligned = jax.vmap(onto)(xs)
    new = jnp.mean(aligned, axis=0)
    return new, jnp.sum((aligned - new[None]) ** 2)

  mean, spread = lax.scan(step, xs[0], None, length=iterations)
  return mean, spread


def frechet_mean(reps: Sequence[Float[Array, "n p"]], *, alpha: float = 1.0,
                 iterations: int = 50) -> tuple[Float[Array, "n p"], Float[Array, " iters"]]:
  """The representation nearest to K others in the Euclidean shape metric
  (generalised Procrustes averaging).

  Each representation is centred and partially whitened; then, repeatedly,
  every one is rotated onto the current mean and the mean is recomputed.
  The sum of squared distances to the mean never increases.

  Args:
    reps: K ``[n, p_k]`` representations of the same inputs.
    alpha: as in `distance` (1: Procrustes).
    iterations: alignment rounds (static).

  Returns:
    ``(mean [n, p], spread [iterations])``: the mean in the (whitened)
    frame of the first representation, and after each round the sum of
    squared Euclidean distances of the aligned representations to it.
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
  if len(reps) < 2:
    raise ValueError(f"frechet_mean needs at least 2 representations, got {len(reps)}.")
  if iterations < 1:
    raise ValueError(f"iterations must be ≥ 1, got {iterations}.")
  stack = jnp.stack(_pad(reps, [f"reps[{i}]" for i in range(len(reps))]))
  return _frechet(stack, float(alpha), iterations=iterations)


__all__ = ["SCORES", "Whitening", "distance", "frechet_mean", "pairwise"]
