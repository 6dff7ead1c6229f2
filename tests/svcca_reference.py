"""Our float64 numpy reading of google/svcca's algorithms (neurons ×
datapoints inputs): the benchmark's peer, and the reference for the
conventions of `rainbow_jax.similarity.pwcca` (its PWCCA fixes the signs and
reads y's own activations, unlike the real reference; `compat.svcca` is
tested against the real reference's outputs instead). Its CCA coefficients
are checked against those outputs in `test_pwcca_compat.py`."""

import numpy as np


def cca_parts(acts1, acts2, epsilon=0.0):
  """Rescaled, cropped covariances → (u, s, vh, invsqrt_xx, invsqrt_yy, kx, ky)."""
  nx = acts1.shape[0]
  cov = np.cov(np.concatenate([acts1, acts2]).astype(np.float64))
  sxx, sxy, syy = cov[:nx, :nx], cov[:nx, nx:], cov[nx:, nx:]
  xmax, ymax = np.abs(sxx).max(), np.abs(syy).max()
  sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)
  kx = np.abs(np.diag(sxx)) >= epsilon
  ky = np.abs(np.diag(syy)) >= epsilon
  sxx = sxx[np.ix_(kx, kx)] + epsilon * np.eye(kx.sum())
  syy = syy[np.ix_(ky, ky)] + epsilon * np.eye(ky.sum())
  sxy = sxy[np.ix_(kx, ky)]

  def invsqrt(a):
    w, v = np.linalg.eigh(np.linalg.pinv(a))
    return v @ np.diag(np.sqrt(np.maximum(w, 0))) @ v.T

  ix, iy = invsqrt(sxx), invsqrt(syy)
  u, s, vh = np.linalg.svd(ix @ sxy @ iy)
  return u, np.abs(s), vh, ix, iy, kx, ky


def summary(s, threshold):
  for i in range(len(s)):
    if s[:i].sum() / s.sum() >= threshold:
      return s[:i].mean(), s.sum()
  return s.mean(), s.sum()


def cca(acts1, acts2, epsilon=0.0, threshold=0.98):
  """(coefficients, mean, sum, x_idxs, y_idxs)."""
  _, s, _, _, _, kx, ky = cca_parts(acts1, acts2, epsilon)
  return (s, *summary(s, threshold), kx, ky)


def fix_signs(d):
  """The library's convention for the reference's arbitrary direction signs:
  each column's largest-magnitude entry positive."""
  i = np.argmax(np.abs(d), axis=0)
  return d * np.sign(d[i, np.arange(d.shape[1])])


def pwcca(acts1, acts2, epsilon=0.0, signs=True):
  """compute_pwcca with y's own activations on the y side and kept neurons'
  means; `signs` applies `fix_signs` (no effect on centred activations)."""
  u, s, vh, _, _, kx, ky = cca_parts(acts1, acts2, epsilon)
  if kx.sum() <= ky.sum():
    coef, acts, idx = u, acts1, kx
  else:
    coef, acts, idx = vh.T, acts2, ky
  if signs:
    coef = fix_signs(coef)
  a = acts[idx].astype(np.float64)
  m = a.mean(axis=1, keepdims=True)
  dirns = coef.T @ (a - m) + m
  p, _ = np.linalg.qr(dirns.T)
  w = np.sum(np.abs(p.T @ a.T), axis=1)
  w = w / w.sum()
  return np.sum(w * s), w, s
