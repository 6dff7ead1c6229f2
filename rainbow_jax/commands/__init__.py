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
import sys

from rainbow_jax.commands import analyze, compare, spectra, svr, train

COMMANDS = {"analyze": analyze, "train": train, "spectra": spectra, "compare": compare,
            "svr": svr}
"""One module per subcommand: its ``add_parser(sub)`` and ``command(args)``."""


def build_parser() -> argparse.ArgumentParser:
  """The ``rainbow-jax`` parser, one subcommand per module of `COMMANDS`."""
  p = argparse.ArgumentParser(prog="rainbow-jax", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  for module in COMMANDS.values():
    module.add_parser(sub)
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    args.run(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())


__all__ = ["COMMANDS", "build_parser", "main"]
