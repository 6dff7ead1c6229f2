"""Strict test configuration: rank promotion raises, float32 by default, and
8 CPU devices (chex sets them before JAX starts) for the multi-device tests;
everything else runs on the default device, as a user's code would. XLA's
LLVM backend optimisation and newer CPU kernel emitters are off (see below)."""

import os

import chex
import jax
import numpy as np
import pytest

# The suite is compile-bound: most of its time went to generating and
# optimising machine code for programs that then run once on tiny data.
# Without LLVM's optimisation passes (the same HLO programs after XLA's own
# optimisations; only the machine code is less tuned, so last bits may
# differ as they do between CPUs) the default suite took 3:54 instead of
# 7:35 on 2 cores; with XLA's older CPU kernel emitters as well (half the
# code generation time, see rainbow_jax._compile), 3:53 instead of 5:28.
# Set before JAX starts; xdist workers, notebook kernels and script
# subprocesses inherit them. Benchmarks measure without them (their --quick
# smokes here measure nothing). XLA aborts on a flag it does not know, so
# the emitter flag is first tried in a subprocess (a later XLA may drop it).
_QUICK_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _xla_takes(flag: str) -> bool:
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, "-c", "import jax; jax.jit(lambda: 0)()"], env=env,
                       capture_output=True, timeout=300)
  return run.returncode == 0


if "RAINBOW_JAX_TEST_XLA_FLAGS" not in os.environ:
  have = os.environ.get("XLA_FLAGS", "")
  add = [f for f in _QUICK_FLAGS if f[2:].split("=")[0] not in have
         and (f == _QUICK_FLAGS[0] or _xla_takes(f))]
  os.environ["XLA_FLAGS"] = " ".join([have, *add]).strip()
  os.environ["RAINBOW_JAX_TEST_XLA_FLAGS"] = " ".join(add)  # decided once per run

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
