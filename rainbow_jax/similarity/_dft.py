"""CCA of conv layers per 2-D spatial frequency: google/svcca's
``dft_ccas.fourier_ccas`` (Raghu et al. 2017, section 3.2)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rainbow_jax import _checks
from rainbow_jax import _precision
from rainbow_jax.similarity import _cca


class FourierCCAResult(NamedTuple):
  """Result of `fourier_cca`: one CCA per spatial frequency.

  Attributes:
    coefficients: ``[h, w, min(C_x, C_y)]`` canonical correlations at
      frequency ``(i, j)`` (numpy's `fft2` order: ``i`` is frequency
      ``fftfreq(h)[i]·h``), descending, as `rainbow_jax.similarity.cca`'s.
    num_coefficients: ``[h, w]`` how many are not removed by `epsilon`.
    mean: ``[h, w]`` svcca's thresholded mean per frequency.
    sum: ``[h, w]`` their sum per frequency.
    frequencies: ``([h], [w])`` the integer frequencies of the rows and
      columns.
  """

  coefficients: jax.Array
  num_coefficients: jax.Array
  mean: jax.Array
  sum: jax.Array
  frequencies: tuple


def _kept(size: int, new: int) -> np.ndarray:
  """Indices of the DFT frequencies of a length-`size` axis that lie in
  ``[-new/2, new/2)``: the reference's resizing to `new`."""
  freqs = np.fft.fftfreq(size, d=1.0 / size)
  return np.flatnonzero((freqs >= -new / 2.0) & (freqs < new / 2.0))


def _as_map(a, name: str):
  a = jnp.asarray(a)
  if a.ndim == 2:  # a vector per datapoint: one 1 × 1 map (its DC component)
    a = a[:, None, None, :]
  _checks.check_array(a, name, 4, "([n, H, W, C] conv maps, or [n, d] vectors)")
  return a


@functools.partial(jax.jit, static_argnames=("rows_x", "cols_x", "rows_y", "cols_y",
                                             "batch_size"))
def _frequency_covariances(x, y, rows_x, cols_x, rows_y, cols_y, batch_size):
  """Per kept frequency: the centred covariances of the DFT coefficients
  over the datapoints, ``[h·w, C, C]`` (complex; Σ = E[f̄ fᵀ] − m̄ mᵀ),
  accumulated over batches of `batch_size` datapoints."""
  n = x.shape[0]
  nb = -(-n // batch_size)
  pad = nb * batch_size - n

  def chunks(a):
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
    return a.reshape(nb, batch_size, *a.shape[1:])

  def spectrum(a, r, c):
    f = jnp.fft.fft2(a.astype(jnp.complex64), axes=(1, 2))
    f = f[:, np.asarray(r)][:, :, np.asarray(c)]
    return f.reshape(f.shape[0], -1, f.shape[-1]).transpose(1, 0, 2)  # [h·w, b, C]

  mm = lambda a, b: jnp.einsum("fna,fnb->fab", jnp.conj(a), b, precision=_precision.STATS)

  def body(acc, batch):
    xb, yb, wb = batch  # wb: 0 on the padding rows
    fx = spectrum(xb, rows_x, cols_x) * wb[None, :, None]
    fy = spectrum(yb, rows_y, cols_y) * wb[None, :, None]
    sx, sy, sxx, syy, sxy = acc
    return (sx + fx.sum(1), sy + fy.sum(1), sxx + mm(fx, fx), syy + mm(fy, fy),
            sxy + mm(fx, fy)), None

  f, cx, cy = len(rows_x) * len(cols_x), x.shape[-1], y.shape[-1]
  zero = lambda *s: jnp.zeros(s, jnp.complex64)
  init = (zero(f, cx), zero(f, cy), zero(f, cx, cx), zero(f, cy, cy), zero(f, cx, cy))
  w = chunks(jnp.ones((n,), jnp.float32))
  (sx, sy, sxx, syy, sxy), _ = lax.scan(body, init, (chunks(x), chunks(y), w))
  mx, my = sx / n, sy / n
  outer = lambda a, b: jnp.conj(a)[:, :, None] * b[:, None, :]
  return sxx / n - outer(mx, mx), syy / n - outer(my, my), sxy / n - outer(mx, my)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _ccas(sxx, syy, sxy, epsilon, threshold):
  """`similarity.cca`'s CCA of each frequency's Hermitian covariances."""
  one = lambda a, c, e: _cca._cca_pair(_cca._side(a, None, epsilon, False),
                                       _cca._side(c, None, epsilon, False), e, threshold)
  return jax.vmap(one)(sxx, syy, sxy)


def fourier_cca(x, y, *, epsilon: float = 0.0, threshold: float = 0.98,
                batch_size: int = 1000) -> FourierCCAResult:
  """CCA between two conv layers, one per 2-D spatial frequency (google/svcca's
  ``dft_ccas.fourier_ccas``).

  Each map is Fourier-transformed over its spatial axes; at every frequency
  the C channels' complex coefficients over the n datapoints are one
  representation, and CCA (`rainbow_jax.similarity.cca`'s semantics, on
  Hermitian covariances) compares them. When the data are translation
  invariant, the covariance of a conv map is diagonal in frequency, so these
  per-frequency CCAs are the exact CCA of the flattened maps, at
  ``H·W`` problems of size C instead of one of size ``H·W·C`` (Raghu et
  al. 2017, section 3.2); for image data they are a close approximation.

  Maps of different spatial sizes are compared on the frequencies both
  hold: the larger is resized in frequency (the reference keeps the
  frequencies k with ``−s/2 ≤ k < s/2``, s the smaller size, per axis).
  A vector ``[n, d]`` is a 1 × 1 map: against a conv map it meets only the
  map's DC component (its sum over positions), the reference's way to
  compare a conv layer with logits or a class.

  Args:
    x: ``[n, H_x, W_x, C_x]`` (or ``[n, d_x]``).
    y: ``[n, H_y, W_y, C_y]`` (or ``[n, d_y]``) on the same datapoints.
    epsilon, threshold: as in `rainbow_jax.similarity.cca`.
    batch_size: datapoints transformed at once (memory: ``batch_size·H·W·C``
      complex numbers; the covariances are accumulated over batches).

  Returns:
    `FourierCCAResult` (the reference returns one row per frequency with the
    same coefficients, mean and sum). The covariances are complex64 and
    accumulated at HIGHEST precision; the CCAs are vmapped over frequencies.

  Raises:
    ValueError: maps that are not ``[n, H, W, C]``, different n, or fewer
      than 2 datapoints.
  """
  x, y = _as_map(x, "x"), _as_map(y, "y")
  _checks.check_same_leading([x, y], ("x", "y"), noun="datapoints")
  _checks.check_floating(x, "x")
  _checks.check_floating(y, "y")
  if x.shape[0] < 2:
    raise ValueError(f"x: need at least 2 datapoints, got {x.shape[0]}.")
  _checks.check_finite(x, "x")
  _checks.check_finite(y, "y")
  _cca._check_threshold(threshold)
  h, w = min(x.shape[1], y.shape[1]), min(x.shape[2], y.shape[2])
  rows_x, cols_x = tuple(_kept(x.shape[1], h)), tuple(_kept(x.shape[2], w))
  rows_y, cols_y = tuple(_kept(y.shape[1], h)), tuple(_kept(y.shape[2], w))
  # The larger map keeps exactly the smaller one's frequencies, in fftfreq order.
  freq = lambda size, idx: np.round(np.fft.fftfreq(size, 1.0 / size)[list(idx)]).astype(int)
  rows, cols = freq(x.shape[1], rows_x), freq(x.shape[2], cols_x)
  b = int(min(batch_size, x.shape[0]))
  sxx, syy, sxy = _frequency_covariances(x, y, rows_x, cols_x, rows_y, cols_y, b)
  res = _ccas(sxx, syy, sxy, float(epsilon), float(threshold))
  shape = (len(rows), len(cols))
  return FourierCCAResult(res.coefficients.reshape(*shape, -1),
                          res.num_coefficients.reshape(shape), res.mean.reshape(shape),
                          res.sum.reshape(shape), (rows, cols))


__all__ = ["FourierCCAResult", "fourier_cca"]
