"""The rainbow paper's claims on Fashion-MNIST networks, against the width.

For each width n, K seeds are trained as one vmapped program (the tutorial's
SGD): the bias-free MLP [784, n, n, 10] (``--arch mlp``), the tutorial's CNN
with channels (n, 2n) (``--arch cnn``) or the learned scattering network
with mixing widths (n, 2n, 4n) (``--arch scattering``). Per hidden layer
(for the convolutional networks, the inputs of the convolutional / mixing
layers, positions counted as samples):

1. convergence (the slides' theorem, A_ℓ φ_ℓ → φ_ℓ^∞ polynomially in the
   widths): 1 − r² of each seed aligned to seed 0, and its power law in n
   (`rainbow_jax.scaling.fit_power_law`, exponent ± standard error);
2. many seeds: the K seeds aligned to their mean network
   (`rainbow_jax.consensus.align_to_mean`), each seed's r² to the mean and
   the relative distance of its aligned activation covariance and of the
   next layer's aligned weight covariance to the seed average, and their
   power laws (does it shrink as 1/√n?);
3. Gaussianity: the first layer's neurons against N(0, WᵀW/n)
   (`rainbow_jax.gaussianity.layer_test`, random and principal directions),
   trained vs at initialisation (PyTorch's uniform init: light tails).

    python experiments/rainbow_paper.py --out results/rainbow_paper [--arch scattering] [--quick]

Writes ``results.json`` and PNG figures. Fashion-MNIST when Debian's
``dataset-fashion-mnist`` is installed, else scikit-learn's digits.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import (align, consensus, data, gaussianity, models, network, plots, scaling,
                         spectra, train)


def _dataset():
  for name in ("fashion_mnist", "digits"):
    if data.available(name):
      return data.load(name)
  raise RuntimeError("no dataset found")


def _fit(widths, values):
  v = np.asarray(values, np.float64)
  mean, se = v.mean(1), v.std(1, ddof=1) / np.sqrt(v.shape[1])
  fit = scaling.fit_power_law(jnp.asarray(widths, jnp.float32), jnp.asarray(mean, jnp.float32),
                          jnp.asarray(np.maximum(se, 1e-12), jnp.float32))
  return {"mean": mean.tolist(), "se": se.tolist(), "exponent": float(fit.exponent),
          "exponent_se": float(fit.exponent_se), "prefactor": float(fit.prefactor)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="results/rainbow_paper")
  p.add_argument("--arch", default="mlp", choices=["mlp", "cnn", "scattering"])
  p.add_argument("--widths", type=int, nargs="+", default=None,
                 help="n per run (default: mlp 64…1024, cnn/scattering 8…64)")
  p.add_argument("--seeds", type=int, default=4)
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--eval", type=int, default=5000, help="test images for the alignments")
  p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
  args = p.parse_args(argv)
  if args.widths is None:
    args.widths = [64, 128, 256, 512, 1024] if args.arch == "mlp" else [8, 16, 32, 64]
  if args.quick:
    args.widths = [16, 32, 64] if args.arch == "mlp" else [8, 12, 16]
    args.seeds, args.epochs, args.eval = 3, 1, 500
  os.makedirs(args.out, exist_ok=True)
  ds = _dataset()
  x_train = ds.x_train[:5000] if args.quick else ds.x_train
  y_train = ds.y_train[:len(x_train)]
  x_eval = jnp.asarray(ds.x_test[:args.eval])
  k = args.seeds
  per_width = []
  t0 = time.time()
  for n in args.widths:
    widths = {"mlp": [n, n], "cnn": [n, 2 * n], "scattering": [n, 2 * n, 4 * n]}[args.arch]
    model = models.make(args.arch, ds.x_train.shape[1:], ds.num_classes, widths=widths)
    state, hist = train.fit(model, x_train, y_train, ds.x_test, ds.y_test,
                            seeds=list(range(k)), epochs=args.epochs, progress=False)
    variables = state.variables
    net = network.from_linen(model, train.select(variables, 0), x_eval[:2])
    # The hidden layers analysed: inputs of weight layers 1…depth (for conv
    # networks, not the classifier's flattened input), vmapped over seeds.
    depth = len(net) - 1 if args.arch == "mlp" else len(net) - 2
    feats = jax.vmap(lambda v: net.layer_inputs(v, x_eval, upto=depth)[1:depth + 1])(variables)
    kernels = jax.vmap(net.kernels)(variables)
    init = train.init(model, train.sgd(), [100], x_train.shape[1:]).variables
    row = {"width": n, "test_accuracy": hist.test_accuracy[-1].tolist(), "layers": []}
    for layer in range(depth):
      f = feats[layer]
      pair_gap = jax.vmap(lambda a: 1 - align.align_features(a, f[0]).r2)(f[1:]).tolist()
      cross = consensus.seed_cross_moments(f)
      mean = consensus.align_to_mean(cross)
      covs = cross[jnp.arange(k), jnp.arange(k)]  # each seed's own second moment
      nxt = kernels[layer + 1]  # the next layer's kernels, reading these features
      nxt = nxt.reshape(k, -1, nxt.shape[-2], nxt.shape[-1])  # [K, window, C_in, C_out]
      wcov = jnp.einsum("kwio,kwjo->kij", nxt, nxt) / nxt.shape[-1]
      row["layers"].append({
          "one_minus_r2_to_seed0": pair_gap,
          "r2_to_mean": np.asarray(mean.r2).tolist(),
          "mean_iterations": int(mean.iterations),
          "activation_cov_distance": np.asarray(
              consensus.covariance_distances(covs, mean.alignments)).tolist(),
          "next_weight_cov_distance": np.asarray(
              consensus.covariance_distances(wcov, mean.alignments)).tolist(),
      })
    gauss = {}  # rows: the first layer's neurons [n, 784], seed 0 and an init
    for label, rows in (("trained", spectra.weight_matrix(kernels[0][0])),
                        ("init", spectra.weight_matrix(net.kernels(train.select(init, 0))[0]))):
      for kind in ("random", "principal"):
        g = gaussianity.layer_test(jax.random.key(n), rows,
                                   num_directions=min(16, *rows.shape), num_null=99,
                                   directions=kind)
        gauss[f"{label}_{kind}"] = {
            "ks_mean": float(g.ks_mean), "kurtosis_mean": float(g.kurtosis_mean),
            "pvalue_ks": float(g.pvalue_ks), "pvalue_kurtosis": float(g.pvalue_kurtosis),
            "z_kurtosis": float(g.zscore_kurtosis())}
    row["gaussianity_layer1"] = gauss
    row["layer1_rows"] = list(spectra.weight_matrix(kernels[0][0]).shape)
    per_width.append(row)
    print(f"n={n}: accuracy {np.mean(row['test_accuracy']):.2f} %, 1 − r² to seed 0"
          f" {[round(float(np.mean(l['one_minus_r2_to_seed0'])), 4) for l in row['layers']]},"
          f" trained layer-1 kurtosis z {gauss['trained_principal']['z_kurtosis']:.1f}"
          f" ({time.time() - t0:.0f} s)", flush=True)

  widths = [r["width"] for r in per_width]
  summary = {"widths": widths, "arch": args.arch, "dataset": ds.name, "seeds": k,
             "epochs": args.epochs, "per_layer": []}
  for layer in range(len(per_width[0]["layers"])):
    get = lambda key: [r["layers"][layer][key] for r in per_width]
    summary["per_layer"].append({
        "layer": layer + 1,
        "one_minus_r2_to_seed0": _fit(widths, get("one_minus_r2_to_seed0")),
        "one_minus_r2_to_mean": _fit(widths, [[1 - v for v in r] for r in get("r2_to_mean")]),
        "activation_cov_distance": _fit(widths, get("activation_cov_distance")),
        "next_weight_cov_distance": _fit(widths, get("next_weight_cov_distance")),
    })
  with open(os.path.join(args.out, "results.json"), "w") as fh:
    json.dump({"summary": summary, "per_width": per_width, "seconds": time.time() - t0}, fh,
              indent=1)

  for key, ylabel in (("one_minus_r2_to_seed0", "1 − r² (seed k vs seed 0)"),
                      ("activation_cov_distance", "‖A C Aᵀ − C̄‖ / ‖C̄‖ (activations)"),
                      ("next_weight_cov_distance", "‖A C Aᵀ − C̄‖ / ‖C̄‖ (next weights)")):
    ax = None
    for pl in summary["per_layer"]:
      s = pl[key]
      ax = plots.curve(widths, s["mean"], ax=ax, xlabel="width n", ylabel=ylabel,
                       label=f"layer {pl['layer']}: n^{s['exponent']:.2f}±{s['exponent_se']:.2f}",
                       title=f"{args.arch}, {ds.name}, {k} seeds")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plots.save(ax, os.path.join(args.out, f"{key}.png"))
  for pl in summary["per_layer"]:
    print(f"layer {pl['layer']}: " + ", ".join(
        f"{key} ∝ n^{v['exponent']:.2f}±{v['exponent_se']:.2f}" for key, v in pl.items()
        if isinstance(v, dict)))
  print(f"wrote {args.out}/results.json ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
  main()
