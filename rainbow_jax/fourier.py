"""The Fourier structure of a network trained on modular arithmetic.

Nanda et al. (2023, "Progress measures for grokking via mechanistic
interpretability") found that a transformer trained on ``(a + b) mod p``
embeds each token ``t`` through a few *key frequencies* k: the embedding
table's columns, as functions of t, are almost entirely made of
``cos(2πkt/p)`` and ``sin(2πkt/p)`` for a handful of k, and the network
adds angles through trigonometric identities. At initialisation the power
is spread evenly over all (p − 1)/2 frequencies.

`frequency_power` measures that concentration on any table whose rows are
indexed by residues 0…p−1 (an embedding, an unembedding's columns, a layer's
activations as a function of a or b); `key_frequencies` names the few that
carry it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from rainbow_jax import _checks
from rainbow_jax import _precision


def fourier_basis(p: int) -> np.ndarray:
  """The real orthonormal Fourier basis of functions on ``0…p−1``.

  Returns:
    ``[p, p]`` float64, rows: the constant, then ``cos(2πkt/p)`` and
    ``sin(2πkt/p)`` for k = 1…⌊(p − 1)/2⌋ (and, for even p, the alternating
    ``cos(πt)``), each of unit norm.
  """
  if p < 2:
    raise ValueError(f"p must be at least 2, got {p}.")
  t = np.arange(p)
  rows = [np.full(p, 1 / np.sqrt(p))]
  for k in range(1, (p - 1) // 2 + 1):
    rows += [np.cos(2 * np.pi * k * t / p) * np.sqrt(2 / p),
             np.sin(2 * np.pi * k * t / p) * np.sqrt(2 / p)]
  if p % 2 == 0:
    rows.append(np.cos(np.pi * t) / np.sqrt(p))
  return np.stack(rows)


class FrequencyPower(NamedTuple):
  """How a table's variation over residues splits into frequencies.

  Attributes:
    power: ``[p // 2 + 1]`` fraction of the table's squared norm (summed over
      columns) at frequency k = 0 (the mean over residues), 1, …, p // 2;
      sums to 1.
    frequencies: ``[p // 2 + 1]`` the frequencies k.
  """

  power: Array
  frequencies: Array


def frequency_power(table: Float[Array, "p d"], p: int | None = None) -> FrequencyPower:
  """The power of each frequency in ``table``'s rows as a function of the
  residue.

  Args:
    table: ``[p, d]`` (rows beyond p, such as an "=" token's, are ignored
      when `p` is given): row t is residue t's vector.
    p: the modulus (default: the number of rows).

  Returns:
    `FrequencyPower`: per frequency, the share of ``‖table‖²`` carried by
    its cosine and sine (float32, products at HIGHEST precision).
  """
  _checks.check_array(table, "table", 2, "([residues, features])")
  p = table.shape[0] if p is None else int(p)
  if not 2 <= p <= table.shape[0]:
    raise ValueError(f"p = {p} but table has {table.shape[0]} rows; p must be in"
                     f" [2, {table.shape[0]}].")
  basis = jnp.asarray(fourier_basis(p), jnp.float32)
  coef = jnp.matmul(basis, jnp.asarray(table, jnp.float32)[:p], precision=_precision.STATS)
  per_row = jnp.sum(coef * coef, axis=1)  # [p] power per basis function
  freq = np.concatenate([[0], np.repeat(np.arange(1, (p - 1) // 2 + 1), 2)]
                        + ([[p // 2]] if p % 2 == 0 else []))
  power = jax.ops.segment_sum(per_row, jnp.asarray(freq), num_segments=p // 2 + 1)
  return FrequencyPower(power / jnp.maximum(jnp.sum(power), jnp.finfo(jnp.float32).tiny),
                        jnp.arange(p // 2 + 1))


def key_frequencies(power: FrequencyPower, fraction: float = 0.9) -> np.ndarray:
  """The fewest frequencies k ≥ 1 that carry `fraction` of the power above
  k = 0, strongest first (a numpy int array).

  Args:
    power: `frequency_power`'s result.
    fraction: in (0, 1].
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
  share = np.asarray(power.power, np.float64)[1:]
  if share.sum() <= 0:
    return np.zeros((0,), int)
  order = np.argsort(-share, kind="stable")
  cum = np.cumsum(share[order]) / share.sum()
  n = int(np.searchsorted(cum, fraction - 1e-12) + 1)
  return np.asarray(power.frequencies)[1:][order[:n]]


__all__ = ["FrequencyPower", "fourier_basis", "frequency_power", "key_frequencies"]
