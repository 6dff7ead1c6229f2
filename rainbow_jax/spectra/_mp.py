"""Weight and activation spectra and the Marchenko–Pastur law of a layer's
initialisation (learned components above its edge)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from rainbow_jax import _compile
from rainbow_jax import _precision
from rainbow_jax import _checks
from rainbow_jax import align as _align

Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


def check_kernel(kernel: Any) -> None:
  """A Dense or Conv kernel in the canonical (Flax) layout, checked as
  `_checks.check_array` does (values only when concrete)."""
  _checks.check_array(kernel, "kernel", (2, 3, 4, 5), "(a Dense or Conv kernel)")


def matrix_shape(kernel_shape: Sequence[int]) -> tuple[int, int]:
  """``(n_out, fan_in)`` of `weight_matrix` for a kernel of this shape."""
  return int(kernel_shape[-1]), int(np.prod(kernel_shape[:-1]))


def weight_matrix(kernel: Array) -> Array:
  """Canonical (Flax) kernel → ``[n_out, fan_in]`` (conv: ``[C_out, K·K·C_in]``).
  The one place where a conv's fan-in order, ``(*window, C_in)``, is fixed."""
  check_kernel(kernel)
  k = jnp.asarray(kernel)
  return k.reshape(-1, k.shape[-1]).T


def weight_spectrum(kernel: Array) -> tuple[Array, Array]:
  """Weight covariance C = WᵀW / n_out of a Flax kernel, largest first.

  Returns:
    ``(eigenvalues [r], eigenvectors [r, fan_in])`` (rows), r = min(n_out,
    fan_in); the other fan_in − r eigenvalues are zero.
  """
  check_kernel(kernel)
  return _weight_spectrum(kernel)


@_compile.once
def _weight_spectrum(kernel):
  """`weight_spectrum` as one quickly compiled program (eagerly, the
  reshape, SVD, square and scaling were four)."""
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
  edge = law.upper * (1.0 + margin)
  if isinstance(eigenvalues, jax.core.Tracer):
    return jnp.sum(eigenvalues > edge)
  return jnp.asarray(np.sum(np.asarray(eigenvalues) > edge))  # concrete: counted on the host


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
  check_kernel(kernel)
  n, d = matrix_shape(jnp.shape(kernel))
  if isinstance(init, str):
    variance = init_variance(init, d)
  elif callable(init):
    variance = float(jnp.mean(jnp.square(init(jax.random.key(0), shape, jnp.float32))))
  else:
    variance = float(init)
  return marchenko_pastur(n, d, variance)
