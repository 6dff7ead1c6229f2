"""Command line: ``rainbow-jax <command> [options]``.

Commands:
  analyze  the tutorial end to end: train K seeds (one compiled program) of
           the MLP, CNN, ResNet-20 or learned scattering network — or read
           your own model's trained seeds (--model FILE.py:FACTORY
           --checkpoint DIR …) —, stream every layer's
           activation covariances of two networks in one pass, spectra against
           Marchenko–Pastur, clipping curves, alignment r², eigenvector
           stability, layer × layer CKA, SVR internal dimensions, S rainbow
           networks sampled (each alignment pass one compiled program over the
           S samples: vmapped on GPU/TPU, in turn on CPU); writes results.json,
           report.md, report.html and PNG figures, and says what did not apply.
  train    train K seeds of the MLP/CNN/ResNet-20/scattering network as one
           compiled program.
  spectra  per weight layer: learned components above the Marchenko–Pastur
           edge, WeightWatcher's power-law α of the spectral density, x_min,
           KS distance, α-weighted, correlation traps; report and figures.
  compare  layer × layer similarity of two or more networks (linear CKA,
           mutual k-NN, RSA), each with its z-score against shuffled images;
           report and heat maps.
  svr      the Singular Value Representation graph of a network's weights:
           internal dimensions, significant edges, a figure and an
           interactive HTML graph (hover for singular values and p-values).
"""

from __future__ import annotations

import argparse
import os
import sys

from rainbow_jax.commands import analyze, compare, spectra, svr, train

COMMANDS = {"analyze": analyze, "train": train, "spectra": spectra, "compare": compare,
            "svr": svr}
"""One module per subcommand: its ``add_parser(sub)`` and ``command(args)``."""


def build_parser() -> argparse.ArgumentParser:
  """The ``rainbow-jax`` parser, one subcommand per module of `COMMANDS`."""
  p = argparse.ArgumentParser(prog="rainbow-jax", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--no-compile-cache", action="store_true",
                 help="do not read or write the persistent compilation cache (see"
                      f" {CACHE_ENV})")
  sub = p.add_subparsers(dest="command", required=True)
  for module in COMMANDS.values():
    module.add_parser(sub)
  return p


CACHE_ENV = "RAINBOW_JAX_COMPILE_CACHE"
"""Environment variable: a directory for the compilation cache, or ``0`` to
turn it off."""


def compile_cache(disabled: bool = False) -> str | None:
  """Turns on JAX's persistent compilation cache for this command-line
  process, so that a second run loads every program instead of compiling it
  (the first run of ``analyze --dataset digits`` compiles ~200 programs).

  The directory: `CACHE_ENV` if set (``0``, ``off`` or ``false`` turn the
  cache off), else ``$XDG_CACHE_HOME/rainbow_jax/jax`` (``~/.cache/…``).
  Every program is cached, however quick its compilation. A cache the user
  already configured (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config.jax_compilation_cache_dir``) is left as it is. Only the
  command line calls this; the library never changes JAX's configuration.

  Returns:
    The cache directory in use, or None.
  """
  import jax

  env = os.environ.get(CACHE_ENV, "")
  if disabled or env.lower() in ("0", "off", "false", "no"):
    return None
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  path = env or os.path.join(base, "rainbow_jax", "jax")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:  # a read-only home: run without the cache
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  compile_cache(args.no_compile_cache)
  try:
    args.run(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())


__all__ = ["CACHE_ENV", "COMMANDS", "build_parser", "compile_cache", "main"]
