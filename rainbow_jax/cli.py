"""Command line: ``rainbow-jax <command> [options]``.

Commands:
  train       train K seeds of the tutorial's MLP/CNN as one compiled program.
  covariance  train two networks (two seeds, one compiled program), stream every
              layer's activation covariance of both over the training set in
              one pass, align the networks layer by layer, and write a report
              (results.json, report.md, PNG figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _batches(x: np.ndarray, size: int):
  for i in range(0, len(x), size):
    yield x[i:i + size]


def _pick_dataset(name: str) -> str:
  from rainbow_jax import data
  if name != "auto":
    return name
  return "fashion_mnist" if data.available("fashion_mnist") else "digits"


def _load(name: str, data_dir: str | None):
  """Grayscale images; CIFAR-10 with the tutorial's normalisation, the rest
  standardised with train statistics."""
  from rainbow_jax import data
  return data.load(name, data_dir=data_dir, grayscale=True,
                   normalize="tutorial" if name == "cifar10" else True)


def covariance_report(args) -> dict:
  """Runs the covariance/alignment analysis and writes the report."""
  from rainbow_jax import align, models, moments, plots, train

  t_start = time.perf_counter()
  name = _pick_dataset(args.dataset)
  ds = _load(name, args.data_dir)
  print(f"dataset {name}: {ds.x_train.shape[0]} train images {ds.x_train.shape[1:]}"
        f" from {ds.source}", flush=True)
  x = ds.x_train[: args.max_samples] if args.max_samples else ds.x_train
  model = models.make(args.arch, ds.x_train.shape[1:], ds.num_classes,
                      widths=args.widths, init="torch")
  seeds = [args.seed, args.seed + 1]
  t0 = time.perf_counter()
  state, hist = train.fit(model, x, ds.y_train[: len(x)], ds.x_test, ds.y_test,
                          seeds=seeds, epochs=args.epochs, batch_size=128)
  t_train = time.perf_counter() - t0
  params = [train.select(state.params, k) for k in range(2)]
  test_acc = (hist.test_accuracy[-1] if args.epochs else
              np.asarray(train.accuracy(state.params, ds.x_test, ds.y_test, model=model)))
  print(f"test accuracy after {args.epochs} epoch(s): "
        f"{', '.join(f'{a:.2f} %' for a in test_acc)}", flush=True)
  apply = models.LayerInputs(model)

  t0 = time.perf_counter()
  stats = moments.layer_moments(
      apply, params[0], _batches(x, args.batch), params2=params[1],
      cross="matched", progress="one pass: all layers, both networks",
      total=-(-len(x) // args.batch))
  t_moments = time.perf_counter() - t0
  num_layers = len(stats.dims) // 2

  os.makedirs(args.out, exist_ok=True)
  figures, layers = [], []
  kernels = [models.weights(p) for p in params]
  for l in range(num_layers):
    c1 = moments.covariance(stats, l)
    c2 = moments.covariance(stats, num_layers + l)
    al = align.align_moments(stats, l, num_layers + l)
    ev1, e1 = align.eigh_descending(c1)
    ev2, e2 = align.eigh_descending(c2)
    act_stab = align.stability(e1, e2, al.matrix)
    w1, w2 = (_out_in(k[l]) for k in kernels)
    # Layer 1 reads the same pixels in both networks: no alignment needed.
    w_stab = align.weight_stability(w1, w2, None if l == 0 else _input_map(al.matrix, kernels[0][l]))
    kind = "conv" if kernels[0][l].ndim == 4 else "dense"
    label = f"input to layer {l + 1} ({kind}, d={stats.dims[l]})"
    ax = plots.spectrum([ev1, ev2], ["network 1", "network 2"],
                        title=f"Activation covariance spectrum\n{label}")
    figures.append(plots.save(ax, os.path.join(args.out, f"spectrum_layer{l + 1}.png")))
    ax = plots.stability(act_stab, title=f"Activation eigenvectors after alignment\n{label}")
    figures.append(plots.save(ax, os.path.join(args.out, f"act_stability_layer{l + 1}.png")))
    ax = plots.stability(w_stab, title=f"Weight eigenvectors after alignment\nlayer {l + 1}")
    figures.append(plots.save(ax, os.path.join(args.out, f"weight_stability_layer{l + 1}.png")))
    layers.append({
        "layer": l + 1,
        "kind": kind,
        "input_dim": stats.dims[l],
        "samples": int(stats.count[l]),
        "r2": float(al.r2),
        "top_eigenvalues": [float(v) for v in ev1[:10]],
        "act_stability_diag_top10": [float(v) for v in jnp.diag(act_stab)[:10]],
        "weight_stability_diag_top10": [float(v) for v in jnp.diag(w_stab)[:10]],
    })
  r2 = [layer["r2"] for layer in layers]
  ax = plots.bars(r2, [f"layer {l + 1}" for l in range(num_layers)],
                  ylabel="r² (alignment)", title="Variance explained by alignment")
  figures.append(plots.save(ax, os.path.join(args.out, "r2.png")))

  results = {
      "command": "covariance",
      "dataset": name,
      "source": ds.source,
      "samples": int(len(x)),
      "arch": args.arch,
      "widths": list(model.dims[1:-1]) if args.arch == "mlp" else list(model.channels[1:]),
      "networks": f"seeds {seeds}, PyTorch-default init, trained {args.epochs} epoch(s)"
                  " with SGD (lr 0.01, momentum 0.9, batch 128), each its own data order",
      "epochs": args.epochs,
      "trained_accuracy": [float(a) for a in test_acc],
      "history": {"loss": hist.loss.tolist(), "test_accuracy": hist.test_accuracy.tolist(),
                  "epoch_seconds": hist.seconds.tolist()},
      "r2": r2,
      "layers": layers,
      "timings": {"train_seconds": t_train, "moments_seconds": t_moments,
                  "total_seconds": time.perf_counter() - t_start},
      "versions": {"python": platform.python_version(), "jax": jax.__version__},
      "device": str(jax.devices()[0]),
      "figures": [os.path.basename(f) for f in figures],
  }
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  _write_markdown(results, os.path.join(args.out, "report.md"))
  print(f"r² per layer: {', '.join(f'{v:.3f}' for v in r2)}")
  print(f"wrote {args.out}/report.md, results.json and {len(figures)} figures"
        f" in {results['timings']['total_seconds']:.1f} s")
  return results


def train_report(args) -> dict:
  """Trains K seeds as one compiled program and writes per-seed accuracies."""
  from rainbow_jax import models, plots, train

  name = _pick_dataset(args.dataset)
  ds = _load(name, args.data_dir)
  print(f"dataset {name}: {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test"
        f" images {ds.x_train.shape[1:]} from {ds.source}", flush=True)
  x, y = ds.x_train, ds.y_train
  if args.max_samples:
    x, y = x[: args.max_samples], y[: args.max_samples]
  model = models.make(args.arch, x.shape[1:], ds.num_classes, widths=args.widths,
                      init=args.init)
  seeds = list(range(args.seed, args.seed + args.seeds))
  devices = jax.devices() if args.shard and jax.device_count() > 1 else None
  t0 = time.perf_counter()
  state, hist = train.fit(model, x, y, ds.x_test, ds.y_test, seeds=seeds,
                          epochs=args.epochs, batch_size=args.batch_size,
                          learning_rate=args.lr, momentum=args.momentum,
                          shared_order=args.shared_order,
                          checkpoint_dir=args.checkpoint_dir, devices=devices)
  seconds = time.perf_counter() - t0
  acc = hist.test_accuracy[-1]
  os.makedirs(args.out, exist_ok=True)
  results = {
      "command": "train", "dataset": name, "source": ds.source, "arch": args.arch,
      "model": repr(model), "seeds": seeds, "epochs": args.epochs,
      "batch_size": args.batch_size, "learning_rate": args.lr, "momentum": args.momentum,
      "test_accuracy": [float(a) for a in acc],
      "test_accuracy_mean": float(np.mean(acc)), "test_accuracy_std": float(np.std(acc)),
      "history": {"loss": hist.loss.tolist(), "train_accuracy": hist.train_accuracy.tolist(),
                  "test_accuracy": hist.test_accuracy.tolist(),
                  "epoch_seconds": hist.seconds.tolist()},
      "seconds": seconds, "device": str(jax.devices()[0]),
      "versions": {"python": platform.python_version(), "jax": jax.__version__},
  }
  ax = None
  for k, s in enumerate(seeds):
    ax = plots.curve(np.arange(1, len(hist.test_accuracy) + 1), hist.test_accuracy[:, k],
                     label=f"seed {s}", ax=ax, xlabel="epoch", ylabel="test accuracy (%)",
                     title=f"{args.arch.upper()} on {name}, {len(seeds)} seeds in one program")
  if ax is not None:
    plots.save(ax, os.path.join(args.out, "test_accuracy.png"))
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(f"test accuracy per seed: {', '.join(f'{a:.2f}' for a in acc)} %"
        f" (mean {np.mean(acc):.2f} ± {np.std(acc):.2f}); {seconds:.1f} s;"
        f" wrote {args.out}/results.json")
  return results


def _out_in(kernel):
  """Flax kernel → (out, in) matrix; conv (K, K, C_in, C_out) → (C_out, K·K·C_in)."""
  k = jnp.asarray(kernel)
  return k.reshape(-1, k.shape[-1]).T


def _input_map(a, kernel):
  """Alignment of a layer's input channels as a map on its flattened weights.

  A conv kernel (K, K, C_in, C_out) flattens its input patch in (K, K, C_in)
  order, so the channel alignment acts as kron(I_{K·K}, A).
  """
  if kernel.ndim == 4:
    k2 = kernel.shape[0] * kernel.shape[1]
    return jnp.kron(jnp.eye(k2, dtype=a.dtype), a)
  return a


def _write_markdown(results: dict, path: str) -> None:
  lines = [
      f"# rainbow_jax covariance report — {results['dataset']}",
      "",
      f"{results['samples']} training images from `{results['source']}`;"
      f" {results['arch'].upper()} with widths {results['widths']};"
      f" {results['networks']}.",
      f"Test accuracy: {', '.join(f'{a:.2f} %' for a in results['trained_accuracy'])}"
      f" (training took {results['timings']['train_seconds']:.1f} s for both seeds,"
      " one vmapped program).",
      f"One streamed pass computed every layer's self and cross second moments"
      f" in {results['timings']['moments_seconds']:.1f} s on {results['device']}.",
      "",
      "| layer | kind | input dim | samples | r² | top eigenvalue |",
      "| --- | --- | --- | --- | --- | --- |",
  ]
  for layer in results["layers"]:
    lines.append(
        f"| {layer['layer']} | {layer['kind']} | {layer['input_dim']} |"
        f" {layer['samples']} | {layer['r2']:.4f} | {layer['top_eigenvalues'][0]:.4g} |")
  lines += ["", "Layer 1 reads the pixels, identical for both networks (r² = 1)."
            " Later layers compare the networks' hidden representations.", ""]
  for fig in results["figures"]:
    lines += [f"![{fig}]({fig})", ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="rainbow-jax", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("covariance", help="streamed covariances + alignment report")
  c.add_argument("--dataset", default="auto",
                 help="fashion_mnist | mnist | cifar10 | digits | auto (Fashion-MNIST"
                      " when installed, else digits)")
  c.add_argument("--data-dir", default=None, help="directory of IDX files")
  c.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
  c.add_argument("--widths", type=int, nargs="+", default=None,
                 help="hidden widths (mlp) or conv channels (cnn)")
  c.add_argument("--epochs", type=int, default=5,
                 help="epochs to train both networks first (0: compare at init)")
  c.add_argument("--batch", type=int, default=1000, help="batch for the moments pass")
  c.add_argument("--max-samples", type=int, default=0, help="0: all")
  c.add_argument("--seed", type=int, default=0)
  c.add_argument("--out", default="reports/covariance")
  c.set_defaults(run=covariance_report)

  t = sub.add_parser("train", help="train K seeds as one compiled program")
  t.add_argument("--dataset", default="auto")
  t.add_argument("--data-dir", default=None)
  t.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
  t.add_argument("--widths", type=int, nargs="+", default=None)
  t.add_argument("--init", default="torch", choices=["torch", "flax"])
  t.add_argument("--seeds", type=int, default=4, help="number of seeds K")
  t.add_argument("--seed", type=int, default=0, help="first seed")
  t.add_argument("--epochs", type=int, default=5)
  t.add_argument("--batch-size", type=int, default=128)
  t.add_argument("--lr", type=float, default=0.01)
  t.add_argument("--momentum", type=float, default=0.9)
  t.add_argument("--shared-order", action="store_true",
                 help="all seeds see the same data order")
  t.add_argument("--max-samples", type=int, default=0, help="0: all")
  t.add_argument("--checkpoint-dir", default=None,
                 help="save every epoch; resume from the newest checkpoint")
  t.add_argument("--shard", action="store_true", help="shard seeds over all devices")
  t.add_argument("--out", default="reports/train")
  t.set_defaults(run=train_report)
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
