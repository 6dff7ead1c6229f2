"""Init ensembles: finite-width statistics of deep networks, vmapped over keys.

An MLP at initialisation with widths n₁…n_L, weights N(0, C_W / fan_in),
biases N(0, C_b), activation σ (linear, ReLU, tanh), evaluated on k inputs
x_α. With preactivations z^{(ℓ)} of layer ℓ (counted from 1) we measure,
over N independent initialisations ("The Principles of Deep Learning
Theory", Roberts & Yaida):

* the kernel G2^{(ℓ)}_{αβ} = E[z_i(α) z_i(β)];
* the connected four-point function across neurons (i ≠ j),
  E[z_i(α)z_i(β) z_j(γ)z_j(δ)] − G2_{αβ} G2_{γδ}, and within a neuron,
  E[z_i(α)z_i(β)z_i(γ)z_i(δ)] − (G_{αβ}G_{γδ} + G_{αγ}G_{βδ} + G_{αδ}G_{βγ}).

Theory. Given layer ℓ − 1, each preactivation of layer ℓ is Gaussian with
covariance Σ^{(ℓ)} = C_b + C_W/n_{ℓ−1} · Gram(σ(z^{(ℓ−1)})) (layer 1:
C_b + C_W/n₀ · x xᵀ), independently across neurons. For a *linear* network
this gives exact finite-width recursions for K = E[Σ] and S = E[Σ ⊗ Σ]
(`linear_theory`); bias-free with one input, G2^{(ℓ)} = C_W^ℓ q₀ and the
cross-neuron connected function is G2²((1 + 2/n)^{ℓ−1} − 1), exactly zero at
ℓ = 1 and 3× that within a neuron. For ReLU and tanh, `kernel_theory` gives the
infinite-width kernel recursion and the leading-order 1/n four-point
recursion V^{(ℓ+1)} = C_W²(⟨σ⁴⟩ − ⟨σ²⟩²) + χ∥² V^{(ℓ)} for one input
(connected cross-neuron function V/n).

The same conditional Gaussianity is an exact sampler (`sample(method='gram')`): the
next layer's preactivations on the k inputs are n independent
N(0, Σ^{(ℓ)}) vectors — O(n k²) per layer and init, no n × n weight matrix.
`sample(method='brute')` draws the weights.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rainbow_jax import _precision
from rainbow_jax import _checks

Array = jax.Array
_HP = _precision.STATS  # float32-exact products on every backend
ACTIVATIONS = ("linear", "relu", "tanh")
MEMORY_LIMIT_BYTES = 4 * 2**30
# Brute force on CPU: one chunk's widest weights (chunk × fan_in × n floats)
# sized to a core's L2, so the draws are still in cache when the matmul reads
# them. 1 000 × (n = 1 000, L = 3) ran 24 % faster at chunk 1 (4 MB) than at
# 10; n = 100 was fastest at chunk 50 (2 MB).
_CPU_CHUNK_BYTES = 4 * 2**20


def _act(name: str):
  if name == "linear":
    return lambda z: z
  if name == "relu":
    return jax.nn.relu
  if name == "tanh":
    return jnp.tanh
  raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}.")


def _check_inputs(x, widths) -> list[int]:
  """Inputs ``[k, n0]`` and hidden widths, as every entry point takes them."""
  _checks.check_array(x, "x", 2, "[k inputs, n0 features]")
  widths = [int(w) for w in widths]
  if not widths or min(widths) < 1:
    raise ValueError(f"widths must be a non-empty list of positive ints, got {widths}.")
  return widths


def _check(x, widths, num_inits, activation, chunk=None):
  widths = _check_inputs(x, widths)
  if num_inits < 2:
    raise ValueError(f"need at least 2 initialisations for error bars, got {num_inits}.")
  _act(activation)
  k = jnp.shape(x)[0]
  per = 4 * k * sum(widths) * (chunk or num_inits)
  if per > MEMORY_LIMIT_BYTES:
    raise ValueError(f"the preactivations of {chunk or num_inits} inits × {k} inputs ×"
                     f" {sum(widths)} neurons need {per / 2**30:.1f} GiB (limit"
                     f" {MEMORY_LIMIT_BYTES / 2**30:.0f} GiB): use fewer inputs or inits.")
  return widths


# --------------------------------------------------------------------------
# Samplers. Both return a list over layers of [N, k, n_ℓ] preactivations.


def _brute_one(key, x, widths, c_w, c_b, act):
  zs, h = [], x
  for l, n in enumerate(widths):
    kw, kb = jax.random.split(jax.random.fold_in(key, l))
    fan_in = h.shape[1]
    w = jax.random.normal(kw, (fan_in, n), x.dtype) * jnp.sqrt(c_w / fan_in)
    b = jax.random.normal(kb, (n,), x.dtype) * jnp.sqrt(c_b)
    z = jnp.matmul(h, w, precision=_HP) + b[None, :]
    zs.append(z)
    h = act(z)
  return zs


def _gram_one(key, x, widths, c_w, c_b, act):
  zs, h = [], x
  for l, n in enumerate(widths):
    fan_in = h.shape[1]
    sigma = c_b + c_w / fan_in * jnp.matmul(h, h.T, precision=_HP)  # [k, k]
    # Any F with F Fᵀ = Σ gives z = F g ~ N(0, Σ); the eigendecomposition's
    # (not Cholesky's) also holds for singular Σ: duplicate inputs, k > n₀,
    # dead ReLUs.
    lam, vec = jnp.linalg.eigh(sigma)
    factor = vec * jnp.sqrt(jnp.maximum(lam, 0.0))[None, :]
    g = jax.random.normal(jax.random.fold_in(key, l), (x.shape[0], n), x.dtype)
    z = jnp.matmul(factor, g, precision=_HP)
    zs.append(z)
    h = act(z)
  return zs


@functools.partial(jax.jit, static_argnames=("widths", "activation", "method", "chunk"))
def _sample(keys, x, widths, c_w, c_b, activation, method, chunk):
  one = _brute_one if method == "brute" else _gram_one
  f = functools.partial(one, x=x, widths=widths, c_w=c_w, c_b=c_b, act=_act(activation))
  n = keys.shape[0]
  if chunk >= n:
    return jax.vmap(f)(keys)
  out = lax.map(jax.vmap(f), keys.reshape(n // chunk, chunk, *keys.shape[1:]))
  return [o.reshape(n, *o.shape[2:]) for o in out]


def _widest(x, widths) -> int:
  """Entries of the largest weight matrix (fan_in × n) brute force draws."""
  return max(a * b for a, b in zip([jnp.shape(x)[1], *widths[:-1]], widths))


def _brute_chunk(x, widths, num_inits):
  if jax.default_backend() != "cpu":
    return min(10, num_inits)
  fit = max(1, _CPU_CHUNK_BYTES // (jnp.asarray(x).dtype.itemsize * _widest(x, widths)))
  return max(c for c in range(1, min(fit, num_inits) + 1) if num_inits % c == 0)


def sample(key: Array, x: Array, widths: Sequence[int], *, num_inits: int = 1000,
           c_w: float = 1.0, c_b: float = 0.0, activation: str = "linear",
           method: str = "gram", chunk: int | None = None) -> list[Array]:
  """Preactivations of `num_inits` random MLPs on the inputs `x`.

  Args:
    key: PRNG key, any implementation (on a 2-core Xeon the default
      threefry drew brute-force weights faster than 'rbg' and 'unsafe_rbg').
    x: ``[k, n0]`` inputs.
    widths: ``[n₁, …, n_L]`` layer widths.
    num_inits: N.
    c_w, c_b: weight variance C_W / fan_in and bias variance C_b.
    activation: ``'linear'``, ``'relu'`` or ``'tanh'``.
    method: ``'gram'`` (exact conditional-Gaussian sampler, O(n k²)) or
      ``'brute'`` (draws every weight).
    chunk: inits per vmapped chunk (a `lax.map` runs the chunks). Must
      divide `num_inits`. Default: all at once for 'gram'; for 'brute', 10
      on accelerators and on CPU the largest divisor of `num_inits` whose
      widest weights fit in 4 MB (a core's L2: the draws are read back from
      cache).

  Returns:
    L arrays ``[N, k, n_ℓ]``.
  """
  if method not in ("gram", "brute"):
    raise ValueError(f"method must be 'gram' or 'brute', got {method!r}.")
  widths = _check(x, widths, num_inits, activation)
  chunk = chunk or (num_inits if method == "gram" else _brute_chunk(x, widths, num_inits))
  if num_inits % chunk:
    raise ValueError(f"chunk {chunk} must divide num_inits {num_inits}.")
  if c_w <= 0 or c_b < 0:
    raise ValueError(f"need C_W > 0 and C_b ≥ 0, got {c_w}, {c_b}.")
  if method == "brute":
    biggest = _widest(x, widths)
    need = 4 * biggest * chunk
    if need > MEMORY_LIMIT_BYTES:
      raise ValueError(f"{chunk} inits of a {biggest}-entry weight matrix need"
                       f" {need / 2**30:.1f} GiB: lower chunk.")
  keys = jax.random.split(key, num_inits)
  return _sample(keys, jnp.asarray(x), tuple(widths), float(c_w), float(c_b), activation,
                 method, int(chunk))


# --------------------------------------------------------------------------
# Estimators with Monte-Carlo error bars (jackknife over inits).


class Estimate(NamedTuple):
  """A Monte-Carlo estimate and its standard error (jackknife over inits)."""

  value: Array
  error: Array


def _jackknife(per_init_stats, combine, blocks=20):
  """`per_init_stats`: pytree of [N, ...] per-init means; `combine` maps their
  means to the estimate. Block jackknife over inits."""
  n = jax.tree_util.tree_leaves(per_init_stats)[0].shape[0]
  blocks = min(blocks, n)
  full = combine(jax.tree_util.tree_map(lambda a: jnp.mean(a, 0), per_init_stats))
  idx = jnp.arange(n) % blocks
  def leave_out(b):
    w = (idx != b).astype(jnp.float32)
    return combine(jax.tree_util.tree_map(
        lambda a: jnp.tensordot(w, a, axes=(0, 0)) / jnp.sum(w), per_init_stats))
  reps = jnp.stack([leave_out(b) for b in range(blocks)])
  err = jnp.sqrt((blocks - 1) / blocks * jnp.sum((reps - jnp.mean(reps, 0, keepdims=True)) ** 2, 0))
  return Estimate(full, err)


def kernel(z: Array) -> Estimate:
  """G2 ``[k, k]`` of one layer's preactivations ``[N, k, n]``."""
  _checks.check_array(z, "z", 3, "[inits N, inputs k, neurons n]")
  per = jnp.einsum("Nan,Nbn->Nab", z, z, precision=_HP) / z.shape[-1]
  return _jackknife(per, lambda m: m)


def four_point(z: Array) -> tuple[Estimate, Estimate]:
  """Connected four-point functions ``[k, k, k, k]`` of one layer
  (``[N, k, n]``): (cross-neuron, same-neuron)."""
  _checks.check_array(z, "z", 3, "[inits N, inputs k, neurons n]")
  n = z.shape[-1]
  if n < 2:
    raise ValueError(f"z: the cross-neuron four-point function needs at least 2 neurons,"
                     f" got a width of {n}.")
  a = jnp.einsum("Nan,Nbn->Nabn", z, z)  # z_i(α) z_i(β), per neuron
  s = jnp.sum(a, -1)  # [N, k, k]
  g = s / n
  same = jnp.einsum("Nabn,Ncdn->Nabcd", a, a, precision=_HP)
  cross = (jnp.einsum("Nab,Ncd->Nabcd", s, s, precision=_HP) - same) / (n * (n - 1))
  same = same / n

  def conn_cross(m):
    return m["cross"] - jnp.einsum("ab,cd->abcd", m["g"], m["g"])

  def conn_same(m):
    gg = m["g"]
    return m["same"] - (jnp.einsum("ab,cd->abcd", gg, gg) + jnp.einsum("ac,bd->abcd", gg, gg)
                        + jnp.einsum("ad,bc->abcd", gg, gg))

  stats = {"cross": cross, "same": same, "g": g}
  return _jackknife(stats, conn_cross), _jackknife(stats, conn_same)


# --------------------------------------------------------------------------
# Theory.


class Theory(NamedTuple):
  """Per layer (list over ℓ = 1…L): kernel ``[k, k]``, connected four-point
  functions ``[k, k, k, k]`` across and within neurons (numpy float64)."""

  kernel: list
  cross: list
  same: list


def _isserlis(s4):
  """E[M⊗M] term: S_{αβγδ} → S_{αγβδ} + S_{αδβγ}."""
  return np.einsum("acbd->abcd", s4) + np.einsum("adbc->abcd", s4)


def linear_theory(x, widths: Sequence[int], *, c_w: float = 1.0,
                  c_b: float = 0.0) -> Theory:
  """Exact finite-width kernel and four-point functions of a deep linear
  network (any widths, biases, k inputs), from K^{(ℓ)} = E[Σ^{(ℓ)}] and
  S^{(ℓ)} = E[Σ^{(ℓ)} ⊗ Σ^{(ℓ)}]:
  K^{(ℓ+1)} = C_b + C_W K^{(ℓ)},
  S^{(ℓ+1)} = C_b² + C_b C_W (K ⊗ 1 + 1 ⊗ K) + C_W² (S + (S_{αγβδ} + S_{αδβγ}) / n_ℓ).
  """
  widths = _check_inputs(x, widths)
  x = np.asarray(x, np.float64)
  sig = c_b + c_w * x @ x.T / x.shape[1]
  k_, s4 = sig, np.einsum("ab,cd->abcd", sig, sig)
  ks, cross, same = [], [], []
  for l, n in enumerate(widths):
    if l > 0:
      prev_n = widths[l - 1]
      mm = s4 + _isserlis(s4) / prev_n
      ones = np.ones_like(k_)
      s4 = (c_b**2 + c_b * c_w * (np.einsum("ab,cd->abcd", k_, ones)
                                  + np.einsum("ab,cd->abcd", ones, k_)) + c_w**2 * mm)
      k_ = c_b + c_w * k_
    kk = np.einsum("ab,cd->abcd", k_, k_)
    ks.append(k_.copy())
    cross.append(s4 - kk)
    same.append(s4 + _isserlis(s4) - (kk + _isserlis(kk)))
  return Theory(ks, cross, same)


def _gauss_hermite(order=80):
  t, w = np.polynomial.hermite_e.hermegauss(order)
  return t, w / np.sqrt(2 * np.pi)


def _np_act(name):
  return {"linear": lambda z: z, "relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}[name]


def kernel_theory(x, widths: Sequence[int], *, c_w: float = 1.0, c_b: float = 0.0,
                  activation: str = "relu") -> tuple[list, list]:
  """Infinite-width kernel ``[k, k]`` per layer, and the leading-order
  cross-neuron connected four-point function of each input with itself
  (``[k]``: V^{(ℓ)}_{αα}/n_{ℓ−1}) per layer, for any activation (2-D
  Gauss–Hermite quadrature). Exact for linear networks at leading order in 1/n."""
  widths = _check_inputs(x, widths)
  _act(activation)
  sig = _np_act(activation)
  t, w = _gauss_hermite()
  x = np.asarray(x, np.float64)
  k_ = c_b + c_w * x @ x.T / x.shape[1]
  kd = len(k_)
  v = np.zeros(kd)
  kernels, fours = [k_.copy()], [v.copy()]
  for l in range(1, len(widths)):
    nk = np.empty_like(k_)
    for a in range(kd):
      for b in range(a, kd):
        s_a = np.sqrt(k_[a, a])
        r = k_[a, b] / s_a if s_a > 0 else 0.0
        u = s_a * t[:, None] + 0 * t[None, :]
        vv = r * t[:, None] + np.sqrt(max(k_[b, b] - r * r, 0.0)) * t[None, :]
        nk[a, b] = nk[b, a] = c_b + c_w * np.sum(w[:, None] * w[None, :] * sig(u) * sig(vv))
    newv = np.empty(kd)
    for a in range(kd):
      kk = k_[a, a]
      z = np.sqrt(kk) * t
      s2, s4 = np.sum(w * sig(z) ** 2), np.sum(w * sig(z) ** 4)
      chi = c_w / (2 * kk**2) * np.sum(w * sig(z) ** 2 * (z**2 - kk))
      # connected^{(ℓ+1)} = C_W² (⟨σ⁴⟩ − ⟨σ²⟩²) / n_ℓ + χ∥² connected^{(ℓ)}
      newv[a] = c_w**2 * (s4 - s2**2) / widths[l - 1] + chi**2 * v[a]
    k_, v = nk, newv
    kernels.append(k_.copy())
    fours.append(v.copy())
  return kernels, fours


__all__ = ["ACTIVATIONS", "Estimate", "Theory", "four_point", "kernel", "kernel_theory",
           "linear_theory", "sample"]
