"""WeightWatcher's heavy-tail measures: the empirical spectral density, its
power-law fit, and correlation traps."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Float

from rainbow_jax import _compile
from rainbow_jax import _precision
from rainbow_jax import _checks
from rainbow_jax import align as _align
from rainbow_jax.spectra._mp import (MarchenkoPastur, check_kernel, marchenko_pastur,
                                     matrix_shape, weight_matrix)

Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


# --------------------------------------------------------------------------
# Heavy tails (WeightWatcher's measures).


def esd(kernel: Array) -> Array:
  """The empirical spectral density WeightWatcher fits, ascending: the
  squared singular values of the weight matrix (no 1/n); for a conv kernel
  ``[*window, C_in, C_out]``, those of every spatial slice ``[C_in, C_out]``
  scaled by √(1/2) (its default ``conv2d_norm``, √(count/2) with count 1
  outside its ``ww2x`` mode), concatenated. Power-law exponents do not
  depend on these scalings; ``alpha_weighted`` does."""
  check_kernel(kernel)
  return _esd(kernel)


@_compile.once
def _esd(k):
  """`esd` as one quickly compiled program."""
  if k.ndim == 2:
    return jnp.sort(jnp.linalg.svd(k, compute_uv=False) ** 2)
  window = int(np.prod(k.shape[:-2]))
  slices = k.reshape(window, *k.shape[-2:]) * np.sqrt(0.5)
  return jnp.sort(jax.vmap(lambda w: jnp.linalg.svd(w, compute_uv=False))(slices).ravel() ** 2)


class PowerLawFit(NamedTuple):
  """A power law p(λ) ∝ λ^−α fitted to the tail λ ≥ x_min of a spectrum.

  Attributes:
    alpha: α, the maximum-likelihood exponent of the chosen tail.
    xmin: the tail's lower end, chosen to minimise the KS distance.
    ks_distance: D, the KS distance between the tail and the fitted law.
    sigma: (α − 1)/√n_tail, the standard error of α.
    num_tail: eigenvalues in the tail.
    alpha_weighted: α · log₁₀ λ_max (WeightWatcher's ``alpha_weighted``).
  """

  alpha: Array
  xmin: Array
  ks_distance: Array
  sigma: Array
  num_tail: Array
  alpha_weighted: Array


_SMALL_N = 20  # below: WeightWatcher's small-sample estimator
_SMALL_K_MIN = 8


def _power_law(x, threshold):
  n_all = x.shape[0]
  x = jnp.sort(x)
  valid = x > threshold
  n_valid = jnp.sum(valid)
  logs = jnp.log(jnp.where(valid, x, 1.0))
  suffix = jnp.cumsum(logs[::-1])[::-1]  # Σ_{k ≥ i} log x_k
  idx = jnp.arange(n_all)
  n = (n_all - idx).astype(x.dtype)  # tail sizes
  s = suffix - n * logs  # Σ log(x_k / x_i)
  small = n_valid < _SMALL_N
  alpha = jnp.where(small, 1.0 + (n - 1.0) / jnp.where(s > 0, s, 1.0),
                    1.0 + n / jnp.where(s > 0, s, 1.0))
  alpha = jnp.where(s > 0, alpha, 1.0)

  def ks(i):
    ratio = jnp.where(idx >= i, x / x[i], 1.0)
    fit = 1.0 - ratio ** (1.0 - alpha[i])
    emp = (idx - i) / n[i]
    return jnp.max(jnp.where(idx >= i, jnp.abs(fit - emp), 0.0))

  d = lax.map(ks, idx)
  # WeightWatcher's small-sample path fits only tails of ≥ 8 (the others
  # keep α = 0, D = 1); both paths then take the x_min of smallest D.
  eligible = ~small | ((n >= _SMALL_K_MIN) & (s > 1e-12))
  alpha = jnp.where(eligible, alpha, 0.0)
  d = jnp.where(eligible & (alpha > 1.0), d, 1.0)
  candidate = valid & (idx < n_all - 1)
  best = jnp.argmin(jnp.where(candidate, d, jnp.inf))
  a = alpha[best]
  return PowerLawFit(a, x[best], d[best], (a - 1.0) / jnp.sqrt(n[best]), n_all - best,
                     a * jnp.log10(x[-1]))


def power_law(eigenvalues: Float[Array, "n"], *, threshold: float = 1e-5) -> PowerLawFit:
  """WeightWatcher's power-law fit of a spectrum's tail (its default
  ``pl_package``): for every candidate x_min among the eigenvalues above
  `threshold` (but the largest), the continuous maximum-likelihood exponent
  α = 1 + n / Σ log(λ/x_min) of the n eigenvalues ≥ x_min and the KS
  distance D = max |1 − (λ/x_min)^(1−α) − (rank/n)|; the x_min of smallest D
  wins (Clauset, Shalizi & Newman 2009). With fewer than 20 eigenvalues,
  WeightWatcher's small-sample variant: α = 1 + (n − 1)/Σ log(λ/x_min) on
  tails of at least 8 (its final choice of x_min is by D there too). Every
  candidate in one jitted program (O(n²) work, O(n) memory).

  Args:
    eigenvalues: ``[n]`` a spectrum (e.g. `esd`), any order.
    threshold: eigenvalues at or below it are left out (WeightWatcher: 1e-5).

  Returns:
    `PowerLawFit`.
  """
  _checks.check_array(eigenvalues, "eigenvalues", 1, "[n]")
  _checks.check_finite(eigenvalues, "eigenvalues")
  ev = np.asarray(eigenvalues)
  if int(np.sum(ev > threshold)) < 2:
    raise ValueError(f"eigenvalues: need at least 2 above threshold={threshold} to fit a"
                     f" power law, got {int(np.sum(ev > threshold))} of {ev.size}.")
  fit = _power_law_quick if ev.size <= _QUICK_MAX else _power_law_full
  return fit(jnp.asarray(eigenvalues), threshold)


# The O(n²) fit compiled quickly (`_compile.once`) runs 2× slower: 0.27
# against 0.16 s at n = 4 608 (a 3×3×512×512 conv's ESD), and compiles in
# 0.1 s instead of 0.5–0.75 s, once per spectrum size. It pays up to about
# n = 8 192; larger spectra get XLA's optimised program.
_QUICK_MAX = 8192
_power_law_full = jax.jit(_power_law, static_argnames=("threshold",))
_power_law_quick = _compile.once(_power_law, static_argnames=("threshold",))


def correlation_traps(key: Array, kernel: Array) -> tuple[Array, Array, MarchenkoPastur]:
  """WeightWatcher's correlation traps: the layer's weights shuffled
  element-wise destroy every learned correlation, so the spectrum of the
  shuffled matrix should follow Marchenko–Pastur; eigenvalues above the
  edge come from a few very large entries ("traps").

  Args:
    key: PRNG key of the shuffle.
    kernel: Dense or Conv kernel (`weight_matrix` layout).

  Returns:
    ``(num_traps, eigenvalues, law)``: the number of eigenvalues of the
    shuffled C = WᵀW/n above the upper edge of the Marchenko–Pastur law
    with the entries' variance, the eigenvalues (descending) and the law.
  """
  check_kernel(kernel)
  variance, ev = _shuffled_spectrum(key, kernel)
  n, d = matrix_shape(kernel.shape)
  law = marchenko_pastur(n, d, float(variance))
  # Counted on the host: eagerly, the comparison and the sum compiled two programs.
  return jax.device_put(np.int32(np.sum(np.asarray(ev) > law.upper))), ev, law


@_compile.once
def _shuffled_spectrum(key, kernel):
  """The entries' variance and the eigenvalues of the element-wise shuffled
  weight matrix, in one quickly compiled program."""
  w = weight_matrix(kernel)
  shuffled = jax.random.permutation(key, w.ravel()).reshape(w.shape)
  return jnp.var(w), _align.weight_eigenvectors(shuffled)[0]
