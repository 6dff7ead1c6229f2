"""Rainbow sampling of residual networks, with and without the residual
streams sampled jointly.

ResNet-20 (`rainbow_jax.models.ResNet`) at channel multipliers ``--widths``
is trained from K seeds as one program (SGD, lr 0.01, momentum 0.9). From
each seed in turn, S rainbow networks are sampled (`rainbow.generate`,
BatchNorm statistics re-estimated on the alignment images):

* **blocks only** (the default of `generate`): the convs inside the blocks
  are drawn from their covariances; the stem and every block's last conv,
  which write into the residual stream, keep the reference's neurons;
* **with streams** (``streams=True``): every stream channel's neurons, one
  per writer across blocks and stages, with the scale and offset of the
  BatchNorm after each writer, are drawn jointly as well
  (`rainbow.stream_lineages`) — every weight layer but the classifier is
  then new.

Reported: test accuracy of the rainbow networks against the reference's,
their ratio (mean ± sd over the K reference seeds, each the mean over its
S samples), per width.

    python experiments/rainbow_resnet.py --out results/rainbow_resnet [--quick]

Writes ``results.json`` and ``ratio.png``; prints the README's table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from rainbow_jax import evaluate, network, plots, rainbow, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as E  # noqa: E402


def one_width(width: float, ds, args) -> dict:
  model, state, hist, train_seconds = E.train_resnets(width, ds, args)
  seeds = list(range(args.seeds))
  trained = np.asarray(hist.test_accuracy[-1], np.float64)
  x_align = ds.x_train[:args.align]
  out = {"width": width, "trained": trained.tolist(), "train_seconds": train_seconds}
  # One Network for every seed: compiled programs are keyed by it.
  net = network.from_linen(model, train.select(state.variables, 0), ds.x_train[:2])
  for mode, streams in (("blocks", False), ("streams", True)):
    accs, r2, t0 = [], [], time.perf_counter()
    for k in seeds:
      v = train.select(state.variables, k)
      g = rainbow.generate(jax.random.key(100 + k), net, v, x_align, num_samples=args.samples,
                           streams=streams, progress=False)
      accs.append(np.asarray(evaluate.accuracy(net, g.params, ds.x_test, ds.y_test,
                                               stacked=True), np.float64).tolist())
      r2.append(float(np.mean(np.asarray(g.r2))))
    mean = np.asarray(accs).mean(1)
    out[mode] = {"accuracy": accs, "ratio": E.mean_sd(mean / trained),
                 "accuracy_mean": E.mean_sd(mean), "mean_r2": E.mean_sd(r2),
                 "seconds": time.perf_counter() - t0}
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  E.resnet_arguments(p, widths=[0.5, 1.0], epochs=4, out="results/rainbow_resnet")
  p.add_argument("--align", type=int, default=2000, help="training images of the alignments")
  p.add_argument("--samples", type=int, default=4, help="rainbow networks per reference")
  args = p.parse_args(argv)
  if args.quick:
    args.widths, args.seeds, args.epochs, args.train, args.align, args.samples = (
        [0.25], 2, 1, 400, 200, 2)
    args.dataset = "digits"
  ds, runs, seconds = E.over_widths(
      one_width, args, lambda w, r: (
          f"width ×{w}: trained {np.mean(r['trained']):.2f} %, rainbow blocks only"
          f" {r['blocks']['accuracy_mean']['mean']:.2f} %, with streams"
          f" {r['streams']['accuracy_mean']['mean']:.2f} %"))
  result = {"dataset": ds.name, "args": vars(args), "runs": runs, "seconds": seconds}
  ax = None
  for mode, label in (("blocks", "blocks only"), ("streams", "with streams")):
    ax = plots.curve([r["width"] for r in runs], [r[mode]["ratio"]["mean"] for r in runs],
                     label=label, xlabel="width multiplier",
                     ylabel="rainbow accuracy ÷ trained", ax=ax,
                     title="Rainbow ResNet-20: stream writers kept or sampled jointly")
  plots.save(ax, os.path.join(args.out, "ratio.png"))
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(result, f, indent=1)
  print("| width | trained | rainbow, blocks only (ratio) | rainbow, with streams (ratio) |")
  print("| --- | --- | --- | --- |")
  for r in runs:
    cell = lambda m: (f"{r[m]['accuracy_mean']['mean']:.2f} ± {r[m]['accuracy_mean']['sd']:.2f} %"
                      f" ({r[m]['ratio']['mean']:.3f} ± {r[m]['ratio']['sd']:.3f})")
    print(f"| ×{r['width']} | {np.mean(r['trained']):.2f} ± {np.std(r['trained'], ddof=1):.2f} %"
          f" | {cell('blocks')} | {cell('streams')} |")
  print(f"{result['seconds']:.0f} s")
  return result


if __name__ == "__main__":
  main()
