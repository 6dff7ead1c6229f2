"""What a measure gives on unrelated data of the same shapes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Float

from rainbow_jax import _precision
from rainbow_jax.similarity._base import (_folded, _safe)

Array = jax.Array


# --------------------------------------------------------------------------
# Null baselines.


class NullBaseline(NamedTuple):
  """A measure's values on unrelated data of the same shapes.

  Attributes:
    samples: ``[num_samples]`` values of the measure under the null.
    mean: ``[]`` their mean: the score unrelated data gets by chance.
    std: ``[]`` their standard deviation (ddof 1).
    score: ``[]`` the measure on the real pairing, ``fn(x, y)``, computed in
      the same program as the draws.
  """

  samples: Array
  mean: Array
  std: Array
  score: Array | None = None

  def zscore(self, score: Array | None = None) -> Array:
    """How many null standard deviations `score` (default: ``fn(x, y)``,
    `null_baseline`'s ``score``) lies above the null mean."""
    if score is None:
      score = self.score
    return (score - self.mean) / _safe(self.std)


@_precision.follow_inputs
def null_baseline(fn: Callable[[Array, Array], Array], x: Float[Array, "n dx"],
                  y: Float[Array, "n dy"], key: Array, *, num_samples: int = 100,
                  method: str = "permutation") -> NullBaseline:
  """Values of ``fn(x, y)`` when x and y carry no shared information.

  With few datapoints per neuron CCA (and biased CKA) are high by chance —
  a mean CCA of 0.9 means nothing if unrelated data also scores 0.9. This
  draws `num_samples` null pairs in one jitted `lax.map` (one draw at a
  time, so memory stays O(n·d)), in the same program as ``fn(x, y)`` itself
  (the baseline's ``score``), compiled once per `fn` object, method and
  shapes (pass the same `fn`, not a new lambda per call, to reuse it):

  * ``"permutation"`` shuffles y's datapoints against x's: each side keeps
    its exact distribution, only the correspondence is destroyed;
  * ``"gaussian"`` replaces both by independent standard normal data of the
    same shapes (what the SVCCA tutorial's toy baseline does).

  Args:
    fn: jittable ``(x [n, d_x], y [n, d_y]) -> []``, e.g.
      ``lambda a, b: cca(a, b).mean``.
    x: ``[n, d_x]``, y: ``[n, d_y]`` (conv maps are folded first).
    key: PRNG key.
    num_samples: number of null draws (≥ 2).
    method: ``"permutation"`` or ``"gaussian"``.

  Returns:
    `NullBaseline`; ``baseline.zscore()`` reports ``fn(x, y)`` against it
    (``baseline.zscore(score)`` any other score).
  """
  if method not in ("permutation", "gaussian"):
    raise ValueError(f"method must be 'permutation' or 'gaussian', got {method!r}.")
  if num_samples < 2:
    raise ValueError(f"need num_samples ≥ 2 for a spread, got {num_samples}.")
  xf, yf = (jnp.asarray(a) for a in _folded(x, y))
  keys = jax.random.split(key, num_samples)
  score, samples = _draws(fn, method, keys, xf, yf)
  return NullBaseline(samples, *_spread(samples), score)


@functools.partial(jax.jit, static_argnames=("fn", "method"))
def _draws(fn, method, keys, a, b):
  """``fn(a, b)`` and its null draws, one at a time (memory O(n·d)) in one
  program per `fn`, method and shapes: the data are arguments, not
  constants folded into it, and the same `fn` object reuses the program."""
  n = a.shape[0]

  def one(k):
    if method == "permutation":
      return fn(a, b[jax.random.permutation(k, n)])
    kx, ky = jax.random.split(k)
    return fn(jax.random.normal(kx, a.shape, a.dtype), jax.random.normal(ky, b.shape, b.dtype))

  return fn(a, b), lax.map(one, keys)


@jax.jit
def _spread(samples):
  return jnp.mean(samples), jnp.std(samples, ddof=1)
