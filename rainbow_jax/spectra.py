"""Weight and activation spectra, the Marchenko–Pastur law, clipping.

The tutorial reads what a layer has learned off two spectra:

* the **activation** second moment E[φφᵀ] of the layer's input (see
  `rainbow_jax.moments`), eigenpairs largest first (`activation_spectrum`);
* the **weight covariance** C = WᵀW / n of its n neurons (rows of the
  ``[n, fan_in]`` weight; a conv kernel is flattened to
  ``[C_out, K·K·C_in]``), from the SVD W = U S Vᵀ: eigenvalues s²/n,
  eigenvectors the rows of Vᵀ (`weight_spectrum`).

At initialisation the n rows are i.i.d. with covariance σ²·I, so the
eigenvalues of C follow the Marchenko–Pastur law of ratio γ = fan_in / n
with edges σ²(1 ± √γ)² (`marchenko_pastur`); eigenvalues above the upper
edge after training are the *learned components* (`learned_components`).

*Clipping* projects a layer's input on its top-k eigenvectors (of either
spectrum) and measures the accuracy left; `clip_sweep` evaluates every k of
a list in one vmapped program (the tutorial deep-copies a model per k).

Kernels are in Flax layout (Dense ``[in, out]``, Conv ``[K, K, C_in, C_out]``)
and conv patches flatten in ``(K, K, C_in)`` order, as our models do.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Float

from rainbow_jax import _precision
from rainbow_jax import _checks
from rainbow_jax import align as _align

Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


def weight_matrix(kernel: Array) -> Array:
  """Canonical (Flax) kernel → ``[n_out, fan_in]`` (conv: ``[C_out, K·K·C_in]``).
  The one place where a conv's fan-in order, ``(*window, C_in)``, is fixed."""
  _checks.check_array(kernel, "kernel", (2, 3, 4, 5), "(a Dense or Conv kernel)")
  k = jnp.asarray(kernel)
  return k.reshape(-1, k.shape[-1]).T


def weight_spectrum(kernel: Array) -> tuple[Array, Array]:
  """Weight covariance C = WᵀW / n_out of a Flax kernel, largest first.

  Returns:
    ``(eigenvalues [r], eigenvectors [r, fan_in])`` (rows), r = min(n_out,
    fan_in); the other fan_in − r eigenvalues are zero.
  """
  return _align.weight_eigenvectors(weight_matrix(kernel))


def activation_spectrum(cov: Float[Array, "d d"]) -> tuple[Array, Array]:
  """Eigenpairs of an activation second moment ``[d, d]``, largest first
  (eigenvectors in rows)."""
  return _align.eigh_descending(cov)


def init_variance(init: str, fan_in: int) -> float:
  """Per-entry weight variance σ² of an initialiser (`rainbow_jax.models`):
  ``'torch'`` U(±1/√fan_in) → 1/(3·fan_in); ``'flax'`` LeCun normal → 1/fan_in."""
  if fan_in < 1:
    raise ValueError(f"fan_in must be positive, got {fan_in}.")
  if init == "torch":
    return 1.0 / (3.0 * fan_in)
  if init == "flax":
    return 1.0 / fan_in
  raise ValueError(f"init must be 'torch' or 'flax', got {init!r}.")


class MarchenkoPastur(NamedTuple):
  """Marchenko–Pastur law of the eigenvalues of WᵀW/n, W ``[n, d]`` with
  i.i.d. entries of variance σ²: ratio γ = d/n, support [lower, upper] with
  edges σ²(1 ± √γ)², and for γ > 1 an atom of mass 1 − 1/γ at 0."""

  ratio: float
  variance: float
  lower: float
  upper: float

  def pdf(self, x):
    """Density of the continuous part at ``x`` (numpy), integrating to
    min(1, 1/γ)."""
    x = np.asarray(x, np.float64)
    inside = (x > self.lower) & (x < self.upper)
    num = np.sqrt(np.clip((self.upper - x) * (x - self.lower), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
      dens = num / (2 * np.pi * self.variance * self.ratio * x)
    return np.where(inside, dens, 0.0)


def marchenko_pastur(n: int, d: int, variance: float) -> MarchenkoPastur:
  """The law for a layer of `n` neurons with `d` inputs each (W ``[n, d]``)."""
  if n < 1 or d < 1:
    raise ValueError(f"need n ≥ 1 and d ≥ 1, got n={n}, d={d}.")
  if not variance > 0:
    raise ValueError(f"variance must be positive, got {variance}.")
  g = d / n
  return MarchenkoPastur(g, float(variance), float(variance * (1 - np.sqrt(g)) ** 2),
                         float(variance * (1 + np.sqrt(g)) ** 2))


def learned_components(eigenvalues: Array, law: MarchenkoPastur, *,
                       margin: float = 0.0) -> Array:
  """Number of eigenvalues above the law's upper edge × (1 + margin)."""
  _checks.check_array(eigenvalues, "eigenvalues", min_rank=1, what="[..., d]")
  return jnp.sum(jnp.asarray(eigenvalues) > law.upper * (1.0 + margin))


def layer_law(kernel: Array, init: Any = "torch") -> MarchenkoPastur:
  """Marchenko–Pastur law of a kernel's shape at initialisation.

  Args:
    kernel: canonical (Flax) kernel.
    init: the initialiser the layer was drawn from: ``'torch'`` or
      ``'flax'`` (`init_variance`), the per-entry variance σ² as a number,
      or a JAX initialiser ``init(key, shape, dtype)`` (e.g.
      ``nn.initializers.he_normal()``), whose σ² is measured on one draw of
      the kernel's shape.
  """
  n, d = weight_matrix(kernel).shape
  if isinstance(init, str):
    variance = init_variance(init, d)
  elif callable(init):
    shape = tuple(jnp.shape(kernel))
    variance = float(jnp.mean(jnp.square(init(jax.random.key(0), shape, jnp.float32))))
  else:
    variance = float(init)
  return marchenko_pastur(n, d, variance)


# --------------------------------------------------------------------------
# Clipping.


def projector(basis: Array, k: Array) -> Array:
  """``[d, d]`` orthogonal projector on the first `k` rows of `basis`
  (``[m, d]``, orthonormal rows); `k` may be traced (vmap over ranks)."""
  mask = (jnp.arange(basis.shape[0]) < k).astype(basis.dtype)
  return jnp.matmul(basis.T * mask[None, :], basis, precision=_HP)


def clip_kernel(kernel: Array, basis: Array, k: Array) -> Array:
  """The kernel of a layer whose input is first projected on the top-`k`
  rows of `basis`: W → W·P (the tutorial's ``weight @ projector``).

  `basis` is ``[m, d]`` with d either the kernel's full fan-in (weight
  eigenvectors; conv: ``K·K·C_in``) or, for a conv kernel, its input
  channels ``C_in`` (activation eigenvectors with space folded into the
  batch, projected at every position).
  """
  _checks.check_array(kernel, "kernel", (2, 3, 4, 5))
  _checks.check_array(basis, "basis", 2, "[m, d] (orthonormal rows)")
  kernel = jnp.asarray(kernel)
  p = projector(basis, k)
  if kernel.ndim >= 3 and basis.shape[1] == kernel.shape[-2]:
    return jnp.einsum("ij,...jo->...io", p, kernel, precision=_HP)
  flat = kernel.reshape(-1, kernel.shape[-1])
  if basis.shape[1] != flat.shape[0]:
    raise ValueError(f"basis of dimension {basis.shape[1]} does not match the kernel's"
                     f" fan-in {flat.shape[0]} (or its input channels).")
  return jnp.matmul(p, flat, precision=_HP).reshape(kernel.shape)


def clip_sweep(net: Any, variables: Any, layer: int, basis: Array, ranks: Sequence[int],
               x: Array, y: Array, *, batch_size: int = 1000) -> Array:
  """Test accuracy (%) with `layer`'s input clipped to each rank of `ranks`.

  One pass over ``x``: the clipped kernels of every rank are vmapped, and
  the layers before `layer` do not depend on the rank, so they run once per
  batch (the tutorial deep-copies a model per rank and runs each on the
  whole network). Works on any classifier `rainbow_jax.network.Network`.

  Args:
    net: the `Network` (one network).
    variables: its variables (no seed axis).
    layer: index of the weight layer whose input is clipped (0 = first).
    basis: ``[m, d]`` orthonormal rows, largest eigenvalue first (`clip_kernel`).
    ranks: the k's; each must be in [0, m].
    x, y: evaluation data.

  Returns:
    ``[len(ranks)]`` accuracies in percent.
  """
  from rainbow_jax import evaluate

  if not -len(net) <= layer < len(net):
    raise ValueError(f"layer {layer} out of range for {len(net)} weight layers.")
  ranks = np.asarray(ranks)
  if ranks.ndim != 1 or ranks.size == 0 or ranks.min() < 0 or ranks.max() > basis.shape[0]:
    raise ValueError(f"ranks must be a non-empty list in [0, {basis.shape[0]}], got {ranks}.")
  xb, yb = evaluate.eval_batches(jnp.asarray(x), jnp.asarray(y), batch_size)
  return 100.0 * _clip_counts(net, layer % len(net), variables, basis, jnp.asarray(ranks),
                              xb, yb) / len(x)


@functools.partial(jax.jit, static_argnames=("net", "layer"))
def _clip_counts(net, layer, variables, basis, ranks, xb, yb):
  """Correct predictions per rank."""
  kernel = net.kernels(variables)[layer]

  def one_rank(k, x):
    return net.apply(net.with_kernels(variables, {layer: clip_kernel(kernel, basis, k)}), x)

  def body(counts, batch):
    x, y = batch
    logits = jax.vmap(one_rank, in_axes=(0, None))(ranks, x)
    return counts + jnp.sum(jnp.argmax(logits, -1) == y[None, :], axis=1), None

  return lax.scan(body, jnp.zeros(ranks.shape, jnp.int32), (xb, yb))[0]


def input_map(a: Array, kernel_shape: Sequence[int]) -> Array:
  """Alignment ``a`` of a layer's input channels as a map on its flattened
  fan-in (`weight_matrix`): a conv fan-in flattens as (*window, C_in), so
  the map is kron(I_window, A); a dense layer's is A itself."""
  if len(kernel_shape) > 2:
    window = int(np.prod(kernel_shape[:-2]))
    return jnp.kron(jnp.eye(window, dtype=a.dtype), a)
  return a


def explained_variance(eigenvalues: Float[Array, "d"]) -> Float[Array, "d"]:
  """Cumulative fraction of the total variance in the top-k eigenvalues
  (all zeros when the total is zero: nothing to explain)."""
  _checks.check_array(eigenvalues, "eigenvalues", 1, "[d]")
  e = jnp.clip(jnp.asarray(eigenvalues), 0.0, None)
  total = jnp.sum(e)
  return jnp.where(total > 0, jnp.cumsum(e) / jnp.where(total > 0, total, 1.0), 0.0)


# --------------------------------------------------------------------------
# Heavy tails (WeightWatcher's measures).


def esd(kernel: Array) -> Array:
  """The empirical spectral density WeightWatcher fits, ascending: the
  squared singular values of the weight matrix (no 1/n); for a conv kernel
  ``[*window, C_in, C_out]``, those of every spatial slice ``[C_in, C_out]``
  scaled by √(1/2) (its default ``conv2d_norm``, √(count/2) with count 1
  outside its ``ww2x`` mode), concatenated. Power-law exponents do not
  depend on these scalings; ``alpha_weighted`` does."""
  _checks.check_array(kernel, "kernel", (2, 3, 4, 5), "(a Dense or Conv kernel)")
  k = jnp.asarray(kernel)
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


@functools.partial(jax.jit, static_argnames=("threshold",))
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
  return _power_law(jnp.asarray(eigenvalues), threshold)


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
  w = weight_matrix(kernel)
  n, d = w.shape
  shuffled = jax.random.permutation(key, w.ravel()).reshape(n, d)
  law = marchenko_pastur(n, d, float(jnp.var(w)))
  ev, _ = _align.weight_eigenvectors(shuffled)
  return jnp.sum(ev > law.upper), ev, law


__all__ = ["MarchenkoPastur", "PowerLawFit", "activation_spectrum", "correlation_traps", "esd",
           "power_law", "clip_kernel", "clip_sweep",
           "explained_variance", "init_variance", "input_map", "layer_law", "learned_components",
           "marchenko_pastur", "projector", "weight_matrix", "weight_spectrum"]
