"""One precision policy for every device.

Statistics — moments, alignment, similarity, spectra, the SVR, rainbow's
covariances — multiply float32 arrays with ``STATS`` (`lax.Precision.HIGHEST`):
float32-exact products on every backend. On CPU that is what XLA does
anyway; on NVIDIA GPUs since Ampere XLA's default for float32 products is
TF32 (10-bit mantissa, ~1e-3 relative error), and on TPUs bfloat16 passes;
without ``HIGHEST`` a covariance on a GPU differs from the CPU's by ~1e-3
(measured on an H200), enough to move canonical correlations of weak
directions and the SVR's significance tests. ``tests/test_precision.py``
traces the public entry points and checks every product carries it.

A model's own forward pass (what `rainbow_jax.network.Network` runs to read
layer inputs, evaluate accuracy, sample rainbow networks) follows
`Network.precision`: ``"float32"`` by default (float32-exact, the same
numbers on every device), or ``"tensorfloat32"`` / ``"bfloat16"`` /
``"default"`` (the backend's fastest; the user's choice for speed) — through
`jax.default_matmul_precision`, a scoped setting, never the global flag.

float64: with ``jax_enable_x64`` on, float64 arrays are computed in float64
throughout. Without it, `follow_inputs` runs an entry point given numpy
float64 arrays inside the scoped `jax.enable_x64` context, so its
decompositions see float64 data, and returns float32 results as usual.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rainbow_jax import _checks

STATS = lax.Precision.HIGHEST
"""The precision of every product of a statistic (float32-exact)."""

FORWARD = ("float32", "tensorfloat32", "bfloat16", "default")
"""Choices of `Network.precision` for a model's forward pass."""


def check_forward(precision: str) -> str:
  _checks.check_choice(precision, FORWARD, "precision")
  return precision


def forward(precision: str):
  """The scoped matmul precision of a model's forward pass."""
  return jax.default_matmul_precision(check_forward(precision))


def _leaves(args) -> list:
  return jax.tree.leaves(args, is_leaf=lambda a: isinstance(a, np.ndarray))


def _wide(a: Any) -> bool:
  return isinstance(a, np.ndarray) and a.dtype == np.float64


def follow_inputs(fn: Callable) -> Callable:
  """Runs `fn` in float64 when it is given numpy float64 arrays and x64 is
  off (a scoped `jax.enable_x64`; results come back in float32, the dtype
  the rest of the program uses). Anything else runs as it is."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    leaves = _leaves(args)
    if (jax.config.jax_enable_x64 or not any(_wide(a) for a in leaves)
        or any(isinstance(a, jax.core.Tracer) for a in leaves)):
      return fn(*args, **kwargs)
    with jax.enable_x64(True):
      out = fn(*args, **kwargs)
      return jax.tree.map(
          lambda v: v.astype(jnp.float32) if getattr(v, "dtype", None) == jnp.float64 else v,
          out)

  return wrapped
