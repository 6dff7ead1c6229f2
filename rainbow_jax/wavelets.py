"""Fixed wavelet filters and the phase-collapse layer of learned scattering
networks (Guth, Zarka & Mallat 2022; the rainbow slides' architecture).

A learned scattering layer filters every input channel with a fixed bank of
F = 1 + L filters at one scale — a Gaussian low-pass φ and L complex Morlet
wavelets ψ_θ, θ = πℓ/L — subsamples by 2, and collapses the phase of the
complex wavelet coefficients (their modulus, ``|x ⋆ ψ_θ|``); the low-pass
coefficients stay as they are (real). The learned part of the network is
the 1×1 channel mixing that follows (`rainbow_jax.models.ScatteringNet`).

The filters are Morlet wavelets as the scattering literature (and kymatio)
defines them: ψ(u) = g_σ(u) (e^{iξ·u} − β), g_σ an anisotropic Gaussian
(σ = 0.8·2ʲ, elongated across the wave by the slant 4/L, ξ = 3π/4·2⁻ʲ along
θ), β such that ψ has zero mean; φ = g_σ isotropic. They are sampled on the
periodic N × N grid (periodised over five periods each way) and returned in
the Fourier domain, where filtering is a product (periodic boundaries: pad
images first). The tests compare them with kymatio's filter bank.

We build the filters here (a few lines of numpy, computed once when a model
is traced) rather than depend on kymatio: its last release (2022) predates
current JAX, and a network layer needs only one scale of its filters.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _gabor(size: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
  """g_σ(u) e^{iξ(u₁cosθ + u₂sinθ)} on the periodic ``size × size`` grid
  (u₁ down the rows), summed over 5 × 5 periods, normalised by 2πσ²/slant."""
  rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  prec = rot @ np.diag([1.0, slant ** 2]) @ rot.T / (2 * sigma ** 2)
  shifts = np.arange(-2, 3)[:, None] * size + np.arange(size)[None, :]  # [5, N]
  u1, u2 = np.meshgrid(shifts.reshape(-1), shifts.reshape(-1), indexing="ij")
  quad = prec[0, 0] * u1 * u1 + 2 * prec[0, 1] * u1 * u2 + prec[1, 1] * u2 * u2
  g = np.exp(-quad + 1j * xi * (u1 * np.cos(theta) + u2 * np.sin(theta)))
  g = g.reshape(5, size, 5, size).sum(axis=(0, 2))
  return g / (2 * np.pi * sigma ** 2 / slant)


@functools.lru_cache(maxsize=64)
def filter_bank(size: int, num_angles: int = 8, scale: int = 1) -> np.ndarray:
  """The Fourier transforms of φ and ψ_θ, θ = πℓ/L, ℓ = 0…L−1, on a
  periodic ``size × size`` grid, at scale 2ʲ (j = `scale`; 1 for a layer
  that subsamples by 2).

  Returns:
    ``[1 + L, size, size]`` float64 (real: the filters are symmetric up to
    conjugation); index 0 is the low-pass φ.
  """
  if size < 2 or num_angles < 1 or scale < 0:
    raise ValueError(f"need size ≥ 2, num_angles ≥ 1, scale ≥ 0; got {size}, {num_angles},"
                     f" {scale}.")
  sigma, xi, slant = 0.8 * 2 ** scale, 0.75 * np.pi / 2 ** scale, 4.0 / num_angles
  out = [np.fft.fft2(_gabor(size, sigma, 0.0, 0.0, 1.0)).real]
  for ell in range(num_angles):
    theta = np.pi * ell / num_angles
    wave = _gabor(size, sigma, theta, xi, slant)
    envelope = _gabor(size, sigma, theta, 0.0, slant)
    psi = wave - (wave.sum() / envelope.sum()) * envelope  # zero mean
    out.append(np.fft.fft2(psi).real)
  return np.stack(out)


@functools.lru_cache(maxsize=16)
def layer_matrix(size: int, num_angles: int = 8) -> np.ndarray:
  """The fixed layer's linear part as one real matrix: image (``size²``,
  row-major) → the (size/2)² subsampled positions × (1 + 2L) real outputs
  (low-pass, then the real parts of the L wavelet coefficients, then their
  imaginary parts). Exact periodic filtering (built with FFTs from
  `filter_bank`); applying it is one large matrix product (a Fashion-MNIST
  epoch of 2 seeds at L = 8 took 112 s this way, 155 s with batched FFTs).

  Returns:
    ``[size², (size/2)² · (1 + 2L)]`` float32.
  """
  if size % 2:
    raise ValueError(f"size must be even, got {size}.")
  filt = filter_bank(size, num_angles, 1)  # [F, N, N]
  half = size // 2
  basis = np.fft.fft2(np.eye(size * size).reshape(-1, size, size))  # [N², N, N]
  parts = []
  for f in range(filt.shape[0]):
    prod = (basis * filt[f]).reshape(-1, 2, half, 2, half).mean(axis=(1, 3))
    y = np.fft.ifft2(prod).reshape(size * size, half * half)
    parts.append(y.real)
    if f:
      parts.append(y.imag)
  # Order (position, output) with outputs [φ, re ψ₁…ψ_L, im ψ₁…ψ_L].
  order = [0] + [1 + 2 * l for l in range(num_angles)] + [2 + 2 * l for l in range(num_angles)]
  m = np.stack([parts[i] for i in order], axis=-1)  # [N², half², 1 + 2L]
  return m.reshape(size * size, -1).astype(np.float32)


def _modulus(re: Array, im: Array) -> Array:
  """√(re² + im²) with gradient 0 (not NaN) where both are 0."""
  sq = re * re + im * im
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1)), 0)


def phase_collapse(x: Array, num_angles: int = 8) -> Array:
  """One fixed scattering layer: every channel filtered by φ and the L
  wavelets (periodic boundaries), subsampled by 2, wavelet coefficients
  replaced by their modulus.

  Args:
    x: ``[B, H, W, C]`` real, square, H even.
    num_angles: L.

  Returns:
    ``[B, H/2, W/2, C·(1 + L)]``, channel ``c·(1 + L) + f`` the filter f
    (0: low-pass, 1 + ℓ: |⋆ψ_θℓ|) of input channel c.
  """
  if x.ndim != 4:
    raise ValueError(f"x must be images [B, H, W, C], got shape {x.shape}.")
  b, h, w, c = x.shape
  if h != w or h % 2:
    raise ValueError(f"x must be square with an even side (pad it), got {h} × {w}.")
  m = jnp.asarray(layer_matrix(h, num_angles), x.dtype)
  lin = jnp.moveaxis(x, 3, 1).reshape(b * c, h * w) @ m
  lin = lin.reshape(b, c, h // 2, w // 2, 1 + 2 * num_angles)
  mod = _modulus(lin[..., 1:1 + num_angles], lin[..., 1 + num_angles:])
  out = jnp.concatenate([lin[..., :1], mod], axis=-1)  # [B, C, h, w, F]
  return jnp.moveaxis(out, 1, 3).reshape(b, h // 2, w // 2, c * (1 + num_angles))


__all__ = ["filter_bank", "layer_matrix", "phase_collapse"]
