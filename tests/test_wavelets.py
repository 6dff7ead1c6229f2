"""The fixed scattering layer against kymatio's Morlet filters and a direct
circular convolution; the learned scattering network through the adapter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rainbow_jax import models, network, rainbow, wavelets

kfb = pytest.importorskip("kymatio.scattering2d.filter_bank")

# kymatio normalises its Gaussians with 3.1415 for π: 3e-5 relative.
_KYMATIO_PI = 3e-5


def _kymatio(size, num_angles):
  """kymatio's φ and ψ at scale j = 1, in our angle order θ = πℓ/L (its
  angle for index t is (L/2 − 1 − t)π/L; a negative angle is θ + π, whose
  filter is ours mirrored in frequency: ψ_{θ+π} = conj ψ_θ)."""
  bank = kfb.filter_bank(size, size, 2, num_angles)
  phi = bank["phi"]["levels"][0]
  psi = [None] * num_angles
  for t, p in enumerate(q for q in bank["psi"] if q["j"] == 1):
    angle = num_angles // 2 - 1 - t
    hat = p["levels"][0]
    if angle < 0:
      hat = np.roll(hat[::-1, ::-1], 1, axis=(0, 1))
    psi[angle % num_angles] = hat
  return np.stack([phi, *psi])


@pytest.mark.parametrize("size,num_angles", [(16, 4), (32, 8)])
def test_filter_bank_is_kymatios(size, num_angles):
  ours = wavelets.filter_bank(size, num_angles, 1)
  theirs = _kymatio(size, num_angles)
  np.testing.assert_allclose(ours, theirs, atol=3 * _KYMATIO_PI * np.abs(theirs).max())
  # The wavelets have zero mean, the low-pass unit mean.
  np.testing.assert_allclose(ours[1:, 0, 0], 0, atol=1e-9)
  np.testing.assert_allclose(ours[0, 0, 0], 1, rtol=1e-6)


def test_phase_collapse_is_a_circular_convolution_with_kymatios_filters():
  size, num_angles = 12, 4
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
  spatial = np.fft.ifft2(_kymatio(size, num_angles))  # [F, N, N], origin at [0, 0]
  want = np.zeros((2, size // 2, size // 2, 3, 1 + num_angles))
  for b in range(2):
    for c in range(3):
      for f in range(1 + num_angles):
        y = np.zeros((size, size), complex)
        for a in range(size):  # y[n] = Σ_m x[m] k[n − m], periodic
          for d in range(size):
            y += x[b, a, d, c] * np.roll(spatial[f], (a, d), axis=(0, 1))
        y = y[::2, ::2]
        want[b, :, :, c, f] = y.real if f == 0 else np.abs(y)
  got = np.asarray(wavelets.phase_collapse(jnp.asarray(x), num_angles))
  np.testing.assert_allclose(got, want.reshape(got.shape), atol=1e-3 * np.abs(want).max())


def test_phase_collapse_shifts_with_its_input_and_has_finite_gradients():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 16, 16, 2)), jnp.float32)
  y = wavelets.phase_collapse(x, 4)
  y_shifted = wavelets.phase_collapse(jnp.roll(x, (2, 4), axis=(1, 2)), 4)
  np.testing.assert_allclose(y_shifted, jnp.roll(y, (1, 2), axis=(1, 2)), atol=1e-4)
  grad = jax.grad(lambda v: jnp.sum(wavelets.phase_collapse(v, 4)))(jnp.zeros_like(x))
  assert np.all(np.isfinite(grad))
  with pytest.raises(ValueError, match="square with an even side"):
    wavelets.phase_collapse(jnp.zeros((1, 15, 15, 1)))


def test_scattering_net_through_the_adapter_and_rainbow():
  model = models.ScatteringNet(channels=(4, 6), num_angles=4)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(64, 13, 13, 1)), jnp.float32)
  variables = model.init(jax.random.key(0), x[:1])
  net = network.from_linen(model, variables, x[:2])
  assert net.names == ("mix_0", "mix_1", "dense_2")
  # 13 → padded to 16 → 8 → 4; inputs: 1·5 channels, 4·5, then 4·4·6 features.
  assert net.shapes == ((1, 1, 5, 4), (1, 1, 20, 6), (96, 10))
  assert net.norms == ("norm_0", "norm_1")
  gen = rainbow.generate(jax.random.key(1), net, variables, x, num_samples=3, progress=False)
  assert gen.r2.shape == (3, 2)
  assert np.all(np.isfinite(np.asarray(gen.r2)))
  logits = jax.vmap(lambda v: net.apply(v, x))(gen.params)
  assert logits.shape == (3, 64, 10) and np.all(np.isfinite(np.asarray(logits)))
