"""Strict test configuration: rank promotion raises, float32 by default, and
8 CPU devices (chex sets them before JAX starts) for the multi-device tests;
everything else runs on the default device, as a user's code would. XLA's
LLVM backend optimisation is off (see below)."""

import os

import chex
import jax
import numpy as np
import pytest

# The suite is compile-bound: most of its time went to LLVM optimising the
# machine code of programs that then run once on tiny data. Without that
# pass (the same HLO programs after XLA's own optimisations; only the machine
# code is less tuned, so last bits may differ as they do between CPUs) the
# default suite took 3:54 instead of 7:35 on 2 cores. Set before JAX starts;
# notebook kernels and script subprocesses inherit it. Benchmarks measure
# without it (their --quick smokes here measure nothing).
_NO_LLVM_OPT = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_NO_LLVM_OPT}".strip()

# Both xdist workers, notebook kernels and script subprocesses compile many
# of the same programs (shared fixtures, the same models): a compilation
# cache shared by all of them for this run (the first process to load this
# file makes it; the others inherit the variable).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import atexit
  import shutil
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rainbow_jax_xla_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

NUM_CPU_DEVICES = 8
chex.set_n_cpu_devices(NUM_CPU_DEVICES)
jax.config.update("jax_numpy_rank_promotion", "raise")

# Per-dtype tolerances for comparisons against float64 numpy references.
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def rel_err(a, b):
  """Relative Frobenius error of `a` against the reference `b`."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.fixture
def rng():
  return np.random.default_rng(0)


FASHION_DIR = os.environ.get(
    "RAINBOW_JAX_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
HAS_FASHION = os.path.isdir(FASHION_DIR)


@pytest.fixture(params=["digits", "fashion_mnist"])
def fashion_or_digits_pixels(request):
  """``[2000, d]`` float32 test-set pixels of a real dataset: scikit-learn's
  digits always, Fashion-MNIST where Debian's package is installed."""
  from rainbow_jax import data
  if request.param == "fashion_mnist" and not HAS_FASHION:
    pytest.skip("apt-get install -y dataset-fashion-mnist")
  kw = {"data_dir": FASHION_DIR} if request.param == "fashion_mnist" else {}
  ds = data.load(request.param, **kw)
  x = np.concatenate([ds.x_train, ds.x_test])[-2000:]
  return x.reshape(len(x), -1).astype(np.float32)
