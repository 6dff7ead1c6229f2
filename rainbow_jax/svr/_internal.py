"""Internal dimensions and colour intensities of an adjacency."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rainbow_jax import _precision

Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend


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
