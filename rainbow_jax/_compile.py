"""Programs that run once, compiled quickly.

XLA's CPU backend spends most of a small program's compile time generating
and optimising machine code for each fused kernel. A program that runs once
per call of its caller — initialising a model's K seeds, drawing a few keys,
decomposing a handful of weight matrices, the SVR's edge statistics — gains
nothing from that work. `once` compiles such programs on CPU with

* ``xla_backend_optimization_level=0``: no LLVM optimisation passes (the
  MLP's seed initialisation compiled in 0.3 s instead of 1.2 s, with
  bit-identical parameters: threefry is integer arithmetic; products and
  decompositions are library calls either way);
* ``xla_cpu_use_fusion_emitters=False``: XLA's older kernel emitters, which
  generate code for small fused kernels in about half the time (the
  per-layer spectra of ``rainbow-jax analyze``: 0.15 s instead of 0.29 s
  for three programs). Kernels of data passes run up to 1.5× slower with
  them (a PatchConv CNN's training epoch), so only these one-shot programs
  use them.

Both are applied at call time (the backend is not touched at import),
through ``jax.jit(..., compiler_options=...)`` — per program, never a global
flag. An option that a later XLA no longer knows is dropped after its first
refusal. Other backends compile as usual.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import jax

QUICK = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
_refused: set[str] = set()  # options this XLA does not know


def _unknown_option(err: Exception) -> str | None:
  """The option named by XLA's "No such compile option" error, if that is
  what `err` says."""
  m = re.search(r"No such compile option: '([^']+)'", str(err))
  return m.group(1) if m and m.group(1) in QUICK else None


def once(fun: Callable | None = None, **jit_kwargs: Any) -> Callable:
  """``jax.jit(fun, **jit_kwargs)``, compiled with `QUICK`'s options on CPU
  when called at top level (inside another `jit` it is traced into the
  caller's program as usual). Usable as a decorator, with or without jit
  keyword arguments."""
  if fun is None:
    return functools.partial(once, **jit_kwargs)
  plain = jax.jit(fun, **jit_kwargs)
  quick: dict[tuple, Callable] = {}  # by the options in use

  def compiled_quickly() -> Callable:
    options = {k: v for k, v in QUICK.items() if k not in _refused}
    names = tuple(sorted(options))
    if names not in quick:
      quick[names] = jax.jit(fun, compiler_options=options, **jit_kwargs)
    return quick[names]

  @functools.wraps(fun)
  def call(*args, **kwargs):
    traced = any(isinstance(a, jax.core.Tracer)
                 for a in jax.tree_util.tree_leaves((args, kwargs)))
    # Inside another trace the caller's program compiles it (XLA takes
    # compiler options on top-level programs only).
    if traced or jax.default_backend() != "cpu":
      return plain(*args, **kwargs)
    while True:
      try:
        return compiled_quickly()(*args, **kwargs)
      except jax.errors.JaxRuntimeError as err:
        name = _unknown_option(err)
        if name is None or name in _refused:
          raise
        _refused.add(name)

  return call
