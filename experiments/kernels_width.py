"""The rainbow paper's kernel claim for residual networks: the activations of
ResNets trained from different seeds define kernels that become the same
(deterministic) as the width grows.

ResNet-20 (`rainbow_jax.models.ResNet`, BatchNorm, parameter-free
shortcuts) at channel multipliers ``--widths`` is trained from K seeds as
one program (SGD, lr 0.01, momentum 0.9, batch 128) on ``--train`` images.
At every point where the residual stream is read — the stem's output, each
block's output, the pooled features the classifier reads — two seeds'
activations on ``--test`` test images are compared by

* the kernel: linear CKA of the Gram matrices k(x, x') = ⟨φ(x), φ(x')⟩ of
  the whole activation maps (flattened), over images (`similarity.cka_from_gram`);
* the alignment: r² of the Procrustes alignment of their channels with the
  positions folded into samples (`align.align_features`), the map rainbow
  sampling uses.

Then the deviations 1 − CKA and 1 − r², averaged over the K(K − 1)/2 seed
pairs, against the width, with the power law c · widthᵃ fitted per point
(`scaling.fit_power_law`, the error of a from the spread over seed pairs).
The same seeds at initialisation give the baseline (random networks'
kernels converge too). The paper: the kernels of trained networks converge
as the width grows (a < 0).

    python experiments/kernels_width.py --out results/kernels_width [--quick]

Writes ``results.json`` and ``deviation.png`` and prints the README's table.
Fashion-MNIST when Debian's ``dataset-fashion-mnist`` is installed, else
scikit-learn's digits.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import align, network, plots, scaling, similarity, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as E  # noqa: E402


def stream_points(net) -> list[int]:
  """Indices of the layers that read the residual stream (each block's
  first conv, the classifier): their inputs are the stream after the stem
  and after every block."""
  return [j for j, name in enumerate(net.names)
          if name.endswith("conv_0") or name == "classifier"]


@jax.jit
def _pair_scores(h0: jax.Array, h1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(linear CKA of the images' Gram matrices, r² of the channel
  alignment with positions as samples) of two seeds' ``[n, …, C]`` maps."""
  f0, f1 = h0.reshape(h0.shape[0], -1), h1.reshape(h1.shape[0], -1)
  cka = similarity.cka_from_gram(similarity.gram_linear(f0), similarity.gram_linear(f1))
  r2 = align.align_features(h0.reshape(-1, h0.shape[-1]), h1.reshape(-1, h1.shape[-1])).r2
  return cka, r2


def one_width(width: float, ds, args) -> dict:
  model, state, hist, seconds = E.train_resnets(width, ds, args)
  seeds = list(range(args.seeds))
  variables = [train.select(state.variables, k) for k in seeds]
  net = network.from_linen(model, variables[0], ds.x_train[:2])
  points = stream_points(net)
  x = jnp.asarray(ds.x_test[:args.test])
  inputs = jax.jit(lambda v: [net.layer_inputs(v, x)[j] for j in points])

  def scores(seed_variables):
    feats = [inputs(v) for v in seed_variables]
    cka, r2 = [], []
    for a, b in itertools.combinations(range(len(seeds)), 2):
      pair = [_pair_scores(fa, fb) for fa, fb in zip(feats[a], feats[b])]
      cka.append([float(c) for c, _ in pair])
      r2.append([float(r) for _, r in pair])
    return np.asarray(cka).tolist(), np.asarray(r2).tolist(), [int(f.shape[-1])
                                                                for f in feats[0]]

  cka, r2, channels = scores(variables)
  # The same seeds at initialisation (BatchNorm statistics of the data): the
  # random networks' kernels, the baseline of the claim.
  init = train.init(model, train.sgd(), seeds, ds.x_train.shape[1:])
  init_vars = [net.estimate_batch_stats(train.select(init.variables, k),
                                        ds.x_train[:args.train]) for k in seeds]
  cka0, r20, _ = scores(init_vars)
  return {"width": width, "channels": channels, "points": [net.names[j] for j in points],
          "test_accuracy": E.mean_sd(np.asarray(hist.test_accuracy[-1])),
          "cka": cka, "r2": r2, "cka_init": cka0, "r2_init": r20, "train_seconds": seconds}


def fits(runs: list[dict], key: str) -> list[dict]:
  """Per stream point, the power law of the mean deviation 1 − score over
  seed pairs against the width, its error from their standard error."""
  widths = np.asarray([r["width"] for r in runs])
  dev = np.stack([1.0 - np.asarray(r[key]) for r in runs])  # [widths, pairs, points]
  mean = dev.mean(1)
  se = dev.std(1, ddof=1) / np.sqrt(dev.shape[1]) if dev.shape[1] > 1 else None
  out = []
  for p in range(dev.shape[2]):
    m = np.maximum(mean[:, p], 1e-12)
    err = None if se is None else np.maximum(se[:, p], 1e-3 * m)
    law = scaling.fit_power_law(jnp.asarray(widths), jnp.asarray(m),
                                None if err is None else jnp.asarray(err))
    out.append({"exponent": float(law.exponent), "exponent_se": float(law.exponent_se),
                "deviation": m.tolist()})
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  E.resnet_arguments(p, widths=[0.25, 0.5, 0.75, 1.0], epochs=3, out="results/kernels_width")
  p.add_argument("--test", type=int, default=500, help="test images compared")
  args = p.parse_args(argv)
  if args.quick:
    args.widths, args.seeds, args.epochs, args.train, args.test = [0.25, 0.5, 1.0], 3, 1, 600, 200
    args.dataset = "digits"
  ds, runs, seconds = E.over_widths(
      one_width, args, lambda w, r: (
          f"width ×{w}: test accuracy {r['test_accuracy']['mean']:.2f} ±"
          f" {r['test_accuracy']['sd']:.2f} %, CKA {np.round(np.mean(r['cka'], 0), 3).tolist()}"))
  result = {"dataset": ds.name, "args": vars(args), "runs": runs,
            "fit_cka": fits(runs, "cka"), "fit_r2": fits(runs, "r2"),
            "fit_cka_init": fits(runs, "cka_init"), "fit_r2_init": fits(runs, "r2_init"),
            "seconds": seconds}
  widths = [r["width"] for r in runs]
  names = runs[0]["points"]
  fig, axes = plots._plt().subplots(1, 2, figsize=(11, 4))
  for ax, key, label in ((axes[0], "fit_cka", "1 − CKA (kernel)"),
                         (axes[1], "fit_r2", "1 − r² (aligned channels)")):
    for name, f in zip(names, result[key]):
      ax.loglog(widths, f["deviation"], "o-", label=f"{name} (a = {f['exponent']:.2f})")
    ax.set_xlabel("width multiplier")
    ax.set_ylabel(label + ", mean over seed pairs")
  axes[1].legend(fontsize=6)
  plots.save(fig, os.path.join(args.out, "deviation.png"))
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(result, f, indent=1)
  print("| stream point | 1 − CKA at widths " + " / ".join(f"×{w}" for w in widths)
        + " | exponent | at init | 1 − r² | exponent | at init |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  law = lambda f: f"{f['exponent']:.2f} ± {f['exponent_se']:.2f}"
  for name, fc, f0, fr, fr0 in zip(names, result["fit_cka"], result["fit_cka_init"],
                                   result["fit_r2"], result["fit_r2_init"]):
    print(f"| {name} | {' / '.join(f'{d:.3f}' for d in fc['deviation'])} | {law(fc)} |"
          f" {law(f0)} | {' / '.join(f'{d:.3f}' for d in fr['deviation'])} | {law(fr)} |"
          f" {law(fr0)} |")
  print(f"{result['seconds']:.0f} s")
  return result


if __name__ == "__main__":
  main()
