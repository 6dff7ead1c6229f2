"""Alignment of two representations by orthogonal Procrustes.

Given feature maps φ(x) ∈ ℝ^{d_φ} (network 1) and ψ(x) ∈ ℝ^{d_ψ}
(network 2) on the same inputs, the orthogonal map A minimising
E‖Aφ − ψ‖² is A = UVᵀ from the SVD of the cross second moment
E[ψφᵀ] = UΣVᵀ, and the fraction of variance it explains is

    r² = tr Σ / sqrt(E‖φ‖² · E‖ψ‖²).

With different widths A is a partial isometry (``[d_ψ, d_φ]``, orthonormal
rows or columns). Everything here is a pure function of arrays, jittable and
vmappable over leading axes (layers of equal width, pairs of models).

Orientation: this module's A maps network 1 into network 2 (``A φ ≈ ψ``,
shape ``[d_ψ, d_φ]``). The PyTorch tutorial stores its transpose, E[φψᵀ]'s
``U Vᵀ`` of shape ``[d_φ, d_ψ]``; `stability` documents both.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Float

from rainbow_jax import _precision
from rainbow_jax import _checks
from rainbow_jax import moments as _moments

Array = jax.Array


class Alignment(NamedTuple):
  """Result of `align`.

  Attributes:
    matrix: ``[..., d_ψ, d_φ]`` orthogonal (partial isometry) A, A φ ≈ ψ.
    r2: ``[...]`` explained variance tr Σ / sqrt(E‖φ‖² E‖ψ‖²), in [0, 1].
    singular_values: ``[..., min(d_ψ, d_φ)]`` Σ, descending.
  """

  matrix: Array
  r2: Array
  singular_values: Array


def _check_matrix(x, name):
  _checks.check_array(x, name, min_rank=2, what="(a matrix [..., m, n])")


def procrustes(cross: Float[Array, "d_psi d_phi"]) -> Float[Array, "d_psi d_phi"]:
  """Orthogonal Procrustes map A = UVᵀ from a cross second moment.

  Args:
    cross: ``[..., d_ψ, d_φ]`` cross second moment E[ψφᵀ] (any positive
      multiple works: sums or means).

  Returns:
    ``[..., d_ψ, d_φ]`` A = UVᵀ, the orthogonal map minimising E‖Aφ − ψ‖².

  Examples:
    >>> import jax.numpy as jnp
    >>> q = jnp.array([[0., -1.], [1., 0.]])
    >>> procrustes(q @ jnp.diag(jnp.array([3., 1.]))).round(5).tolist()
    [[0.0, -1.0], [1.0, 0.0]]
  """
  _check_matrix(cross, "cross")
  u, _, vh = jnp.linalg.svd(cross, full_matrices=False)
  return jnp.matmul(u, vh, precision=_precision.STATS)


def align(cross: Float[Array, "d_psi d_phi"], trace_x: Float[Array, ""],
          trace_y: Float[Array, ""]) -> Alignment:
  """Procrustes alignment and explained variance from second moments.

  Args:
    cross: ``[..., d_ψ, d_φ]`` E[ψφᵀ].
    trace_x: ``[...]`` E‖φ‖² (trace of φ's uncentered second moment).
    trace_y: ``[...]`` E‖ψ‖².

  Returns:
    `Alignment` with A (``[..., d_ψ, d_φ]``), r² and the singular values;
    r² = 0 when φ or ψ is identically zero.

  Raises:
    ValueError: NaN or Inf in a concrete input.

  Examples:
    >>> import jax.numpy as jnp
    >>> c = jnp.eye(3)  # ψ = φ, E[φφᵀ] = I
    >>> float(align(c, jnp.trace(c), jnp.trace(c)).r2)
    1.0
  """
  _check_matrix(cross, "cross")
  for v, name in ((trace_x, "trace_x"), (trace_y, "trace_y")):  # cross: checked above
    _checks.check_finite(v, name)
  u, s, vh = jnp.linalg.svd(cross, full_matrices=False)
  a = jnp.matmul(u, vh, precision=_precision.STATS)
  den = jnp.sqrt(trace_x * trace_y)
  # Features without energy leave nothing to explain: r² = 0, not NaN.
  r2 = jnp.where(den > 0, jnp.sum(s, axis=-1) / jnp.where(den > 0, den, 1.0), 0.0)
  return Alignment(matrix=a, r2=r2, singular_values=s)


def align_features(phi: Float[Array, "n d_phi"], psi: Float[Array, "n d_psi"]) -> Alignment:
  """Alignment of two in-memory feature maps (uncentered, as the tutorial).

  Args:
    phi: ``[n, d_φ]`` (or ``[n, H, W, d_φ]``) features of network 1.
    psi: ``[n, d_ψ]`` features of network 2 on the same inputs.

  Returns:
    `Alignment` of φ onto ψ.
  """
  x, y = _moments.fold_pair(phi, psi, ("phi", "psi"))
  _checks.check_finite(x, "phi")
  _checks.check_finite(y, "psi")
  hp = _precision.STATS
  n = x.shape[0]
  cross = jnp.matmul(y.T, x, precision=hp) / n
  return align(cross, jnp.sum(x * x) / n, jnp.sum(y * y) / n)


def align_moments(state: _moments.Moments, i: int, j: int) -> Alignment:
  """Alignment of map `i` (φ) onto map `j` (ψ) from streamed `Moments`.

  The pair ``(i, j)`` or ``(j, i)`` must have been kept as a cross pair.
  """
  cross = _moments.covariance(state, j, i)  # E[ψφᵀ], [d_j, d_i]
  return align(
      cross,
      _moments.second_moment_trace(state, i),
      _moments.second_moment_trace(state, j),
  )


def eigh_descending(cov: Float[Array, "d d"]) -> tuple[Float[Array, "d"], Float[Array, "d d"]]:
  """Eigenpairs of a symmetric matrix, largest first.

  Args:
    cov: ``[..., d, d]`` symmetric matrix.

  Returns:
    ``(eigenvalues [..., d], eigenvectors [..., d, d])`` with eigenvalues
    descending and eigenvector ``k`` in **row** ``k``.
  """
  _check_matrix(cov, "cov")
  w, v = jnp.linalg.eigh(cov)
  return w[..., ::-1], jnp.swapaxes(v[..., :, ::-1], -1, -2)


def weight_eigenvectors(weight: Array) -> tuple[Array, Array]:
  """Weight covariance spectrum and eigenvectors, largest first.

  Args:
    weight: ``[..., n_out, d_in]`` weight matrix in the (out, in) layout (a
      Flax Dense kernel is ``[d_in, n_out]``: pass its transpose).

  Returns:
    ``(eigenvalues [..., r], eigenvectors [..., r, d_in])`` of the weight
    covariance C = WᵀW / n_out, r = min(n_out, d_in), from the SVD of W.
  """
  _check_matrix(weight, "weight")
  _, s, vh = jnp.linalg.svd(weight, full_matrices=False)
  return s**2 / weight.shape[-2], vh


def stability(e1: Array, e2: Array, a: Array | None = None) -> Array:
  """Eigenvector stability matrix S = |E₁ Aᵀ E₂ᵀ|, S_ij = |⟨A e1_i, e2_j⟩|.

  Compares eigenvector ``i`` of network 1, carried into network 2's space by
  the alignment, with eigenvector ``j`` of network 2. Rows of `e1`/`e2` are
  unit eigenvectors; an identity-like S means the eigenvectors are shared.
  (The tutorial writes |E₁ A E₂ᵀ| with its transposed A of shape
  ``[d_φ, d_ψ]``; the numbers are the same.)

  Args:
    e1: ``[..., r1, d_φ]`` eigenvectors of network 1 (rows).
    e2: ``[..., r2, d_ψ]`` eigenvectors of network 2 (rows).
    a: ``[..., d_ψ, d_φ]`` alignment from `align` (None: identity, for
      spaces already aligned, such as the input layer).

  Returns:
    ``[..., r1, r2]`` absolute cosines.
  """
  _check_matrix(e1, "e1")
  _check_matrix(e2, "e2")
  hp = _precision.STATS
  if a is not None:
    _check_matrix(a, "a")
    _checks.check_shape(a, (..., e2.shape[-1], e1.shape[-1]), "a",
                        "It maps network 1's space onto network 2's: [d_ψ, d_φ].")
    e1 = jnp.matmul(e1, jnp.swapaxes(a, -1, -2), precision=hp)
  elif e1.shape[-1] != e2.shape[-1]:
    raise ValueError(
        f"without an alignment e1 and e2 need the same width, got {e1.shape}"
        f" and {e2.shape}."
    )
  return jnp.abs(jnp.matmul(e1, jnp.swapaxes(e2, -1, -2), precision=hp))


def activation_stability(cov1: Float[Array, "d d"], cov2: Float[Array, "d d"],
                         a: Float[Array, "d d"]) -> Array:
  """Stability of activation eigenvectors after alignment.

  Args:
    cov1: ``[..., d_φ, d_φ]`` second moment of network 1's features.
    cov2: ``[..., d_ψ, d_ψ]`` second moment of network 2's features.
    a: ``[..., d_ψ, d_φ]`` alignment of network 1 onto network 2.

  Returns:
    ``[..., d_φ, d_ψ]`` |⟨A u_i, v_j⟩| over eigenvectors ranked largest first.
  """
  return stability(eigh_descending(cov1)[1], eigh_descending(cov2)[1], a)


def weight_stability(w1: Array, w2: Array, a: Array | None = None) -> Array:
  """Stability of weight-covariance eigenvectors after input alignment.

  Args:
    w1: ``[..., n1, d_φ]`` (out, in) weights of network 1's layer reading φ.
    w2: ``[..., n2, d_ψ]`` weights of network 2's layer reading ψ.
    a: ``[..., d_ψ, d_φ]`` alignment of the layers' inputs (None at the input
      layer, where both read the same pixels).

  Returns:
    ``[..., r1, r2]`` |⟨A u_i, v_j⟩| over weight eigenvectors, largest first.
  """
  return stability(weight_eigenvectors(w1)[1], weight_eigenvectors(w2)[1], a)


__all__ = [
    "Alignment", "procrustes", "align", "align_features", "align_moments",
    "eigh_descending", "weight_eigenvectors", "stability",
    "activation_stability", "weight_stability",
]
