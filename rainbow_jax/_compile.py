"""Programs that run once, compiled quickly.

XLA's CPU backend spends most of a small program's compile time in LLVM's
optimisation passes. A program that runs once per call of its caller —
initialising a model's K seeds, drawing a few keys, decomposing a handful
of weight matrices — gains nothing from them: with
``xla_backend_optimization_level=0`` the MLP's seed initialisation compiled
in 0.3 s instead of 1.2 s, with bit-identical parameters (threefry is
integer arithmetic; products and decompositions are library calls either
way). `once` applies that option on CPU only, at call time (the backend is
not touched at import), through ``jax.jit(..., compiler_options=...)`` —
per program, never a global flag. Other backends compile as usual.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

_QUICK = {"xla_backend_optimization_level": 0}


def once(fun: Callable | None = None, **jit_kwargs: Any) -> Callable:
  """``jax.jit(fun, **jit_kwargs)``, compiled without LLVM optimisation on
  CPU when called at top level (inside another `jit` it is traced into the
  caller's program as usual). Usable as a decorator, with or without jit
  keyword arguments."""
  if fun is None:
    return functools.partial(once, **jit_kwargs)
  quick = jax.jit(fun, compiler_options=_QUICK, **jit_kwargs)
  plain = jax.jit(fun, **jit_kwargs)

  @functools.wraps(fun)
  def call(*args, **kwargs):
    traced = any(isinstance(a, jax.core.Tracer)
                 for a in jax.tree_util.tree_leaves((args, kwargs)))
    # Inside another trace the caller's program compiles it (XLA takes
    # compiler options on top-level programs only).
    return (quick if not traced and jax.default_backend() == "cpu" else plain)(*args, **kwargs)

  return call
