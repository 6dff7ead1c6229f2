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
import json
import os
import platform
import sys
import time
from typing import Any, NamedTuple

import jax
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


def _tx(args):
  """The optimiser of --optimizer: the tutorial's SGD or Adam."""
  import optax

  from rainbow_jax import train
  if args.optimizer == "sgd":
    return train.sgd(args.lr, args.momentum)
  return optax.adam(args.lr)


def _init_law(args):
  """--init of a user's model for the Marchenko–Pastur law: 'flax' (default),
  'torch' or a variance."""
  init = getattr(args, "init", None) or "flax"  # commands without --init: flax
  try:
    return float(init)
  except ValueError:
    if init not in ("flax", "torch"):
      raise ValueError(f"--init must be flax, torch or a variance, got {init!r}.") from None
  return init


def analyze_report(args) -> dict:
  """Trains K seeds (or reads a user's model and checkpoints), then every
  analysis that applies; writes results.json, report.md/html, figures."""
  from flax import linen as nn

  from rainbow_jax import analyze, models, network, train

  name = _pick_dataset(args.dataset)
  ds = _load(name, args.data_dir)
  print(f"dataset {name}: {ds.x_train.shape[0]} train images {ds.x_train.shape[1:]}"
        f" from {ds.source}", flush=True)
  x = ds.x_train[: args.max_samples] if args.max_samples else ds.x_train
  y = ds.y_train[: len(x)]
  timings = {}
  extra = {"dataset": name, "source": ds.source, "samples": int(len(x))}
  if args.model:
    nets = analyze.user_networks(args.model, args.checkpoint, x, init=_init_law(args),
                                 seed=args.seed)
  else:
    if args.checkpoint:
      raise ValueError("--checkpoint needs --model FILE.py:FACTORY.")
    if args.seeds < 2:
      raise ValueError("analyze compares seeds: --seeds must be at least 2.")
    model = models.make(args.arch, ds.x_train.shape[1:], ds.num_classes,
                        widths=args.widths, init="torch", width=args.width)
    seeds = list(range(args.seed, args.seed + args.seeds))
    tx = _tx(args)
    t0 = time.perf_counter()
    init_vars = train.select(train.init(model, tx, seeds, x.shape[1:]).variables, 0)
    state, hist = train.fit(model, x, y, ds.x_test, ds.y_test, seeds=seeds,
                            epochs=args.epochs, tx=tx)
    timings["train_seconds"] = time.perf_counter() - t0
    variables = [train.select(state.variables, k) for k in range(len(seeds))]
    net = network.from_linen(model, variables[0], x[:2])
    resnet = args.arch == "resnet20"
    law = nn.initializers.he_normal() if resnet else "torch"
    opt = (f"SGD (lr {args.lr}, momentum {args.momentum})" if args.optimizer == "sgd"
           else f"Adam (lr {args.lr})")
    if not resnet:
      extra["widths"] = [int(w) for w in (model.dims[1:-1] if args.arch == "mlp" else
                         model.channels[1:] if args.arch == "cnn" else model.channels)]
    shape = ([int(model.dims[0])] + extra["widths"] + [int(model.dims[-1])]
             if args.arch == "mlp" else extra.get("widths"))
    desc = (f"{args.arch.upper()} "
            + (f"width ×{args.width}" if resnet else
               f"{'dims' if args.arch == 'mlp' else 'channels'} {shape}")
            + f", seeds {seeds}, {'He' if resnet else 'PyTorch-default'} init, trained"
              f" {args.epochs} epoch(s) with {opt}, batch 128, each its own data order")
    nets = analyze.Networks(net, variables, [f"seed {s}" for s in seeds], init_vars, law,
                            args.arch.upper(), desc, hist)
    extra["seeds"] = seeds
    extra["epochs"] = args.epochs
  results = analyze.run(
      nets, x, ds.x_test, ds.y_test, args.out, samples=args.samples, batch=args.batch,
      clip_layers=args.clip_layers, clip_samples=args.clip_samples,
      cka_samples=args.cka_samples, conv=args.conv, align_samples=args.align_samples, seed=args.seed,
      timings=timings, extra=extra)
  return results


def _training_figure(hist, seeds, arch, name, path):
  """Test accuracy per epoch, one line per seed; the path, or None untrained."""
  from rainbow_jax import plots
  ax = None
  for k, sd in enumerate(seeds):
    ax = plots.curve(np.arange(1, len(hist.test_accuracy) + 1), hist.test_accuracy[:, k],
                     label=f"seed {sd}", ax=ax, xlabel="epoch", ylabel="test accuracy (%)",
                     title=f"{arch.upper()} on {name}, {len(seeds)} seeds in one program")
  return None if ax is None else plots.save(ax, path)


def train_report(args) -> dict:
  """Trains K seeds as one compiled program and writes per-seed accuracies."""
  from rainbow_jax import analyze, models, train

  name = _pick_dataset(args.dataset)
  ds = _load(name, args.data_dir)
  print(f"dataset {name}: {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test"
        f" images {ds.x_train.shape[1:]} from {ds.source}", flush=True)
  x, y = ds.x_train, ds.y_train
  if args.max_samples:
    x, y = x[: args.max_samples], y[: args.max_samples]
  model = models.make(args.arch, x.shape[1:], ds.num_classes, widths=args.widths,
                      init=args.init, width=args.width)
  seeds = list(range(args.seed, args.seed + args.seeds))
  devices = jax.devices() if args.shard and jax.device_count() > 1 else None
  t0 = time.perf_counter()
  state, hist = train.fit(model, x, y, ds.x_test, ds.y_test, seeds=seeds,
                          epochs=args.epochs, batch_size=args.batch_size,
                          tx=_tx(args), shared_order=args.shared_order,
                          checkpoint_dir=args.checkpoint_dir, devices=devices)
  seconds = time.perf_counter() - t0
  acc = (hist.test_accuracy[-1] if len(hist.test_accuracy) else  # --epochs 0: at init
         np.asarray(train.accuracy(state.variables, ds.x_test, ds.y_test, model=model)))
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
      "versions": {"python": platform.python_version(), "jax": jax.__version__,
                   "rainbow_jax": analyze._version()},
  }
  _training_figure(hist, seeds, args.arch, name, os.path.join(args.out, "test_accuracy.png"))
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(f"test accuracy per seed: {', '.join(f'{a:.2f}' for a in acc)} %"
        f" (mean {np.mean(acc):.2f} ± {np.std(acc):.2f}); {seconds:.1f} s;"
        f" wrote {args.out}/results.json")
  return results


class _Loaded(NamedTuple):
  """The networks a report reads (`_networks`)."""

  dataset: str
  data: Any
  net: Any
  variables: list
  labels: list
  what: str
  law: Any  # the initialiser for `spectra.layer_law`


def _networks(args, seeds: int = 1) -> _Loaded:
  """The networks of --model/--checkpoint (every network the checkpoints
  hold), or `seeds` seeds of --arch trained here from --seed."""
  from flax import linen as nn

  from rainbow_jax import analyze, models, network, train

  name = _pick_dataset(args.dataset)
  ds = _load(name, args.data_dir)
  x = ds.x_train
  if args.model:
    law = _init_law(args)
    nets = analyze.user_networks(args.model, args.checkpoint, x[:2], init=law, seed=args.seed)
    return _Loaded(name, ds, nets.net, nets.variables, nets.labels, nets.description, law)
  if args.checkpoint:
    raise ValueError("--checkpoint needs --model FILE.py:FACTORY.")
  model = models.make(args.arch, x.shape[1:], ds.num_classes, widths=args.widths)
  ids = list(range(args.seed, args.seed + seeds))
  state, hist = train.fit(model, x, ds.y_train, ds.x_test, ds.y_test, seeds=ids,
                          epochs=args.epochs)
  variables = [train.select(state.variables, i) for i in range(len(ids))]
  law = "torch" if args.arch != "resnet20" else nn.initializers.he_normal()
  acc = (", test accuracy " + " / ".join(f"{a:.2f}" for a in hist.test_accuracy[-1]) + " %"
         if args.epochs else "")
  what = (f"{args.arch.upper()} seed{'s' if seeds > 1 else ''}"
          f" {', '.join(map(str, ids))} trained {args.epochs} epoch(s) on {name}{acc}")
  return _Loaded(name, ds, network.from_linen(model, variables[0], x[:2]), variables,
                 [f"seed {i}" for i in ids], what, law)


def _network_arguments(sub, name: str, *, help: str, dataset_help: str, checkpoint_help: str,
                       epochs: int = 5, init: bool = False):
  """A subcommand reading --model/--checkpoint or training --arch first."""
  c = sub.add_parser(name, help=help, formatter_class=_DEFAULTS)
  c.add_argument("--dataset", default="auto", help=dataset_help)
  c.add_argument("--data-dir", default=None)
  c.add_argument("--model", default=None, metavar="FILE.py:FACTORY",
                 help="your own linen model; its networks come from --checkpoint")
  c.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                 help=checkpoint_help)
  if init:
    c.add_argument("--init", default=None,
                   help="--model's initialiser for the Marchenko–Pastur law: flax (default) |"
                        " torch | a variance")
  c.add_argument("--arch", default="mlp", choices=["mlp", "cnn", "resnet20", "scattering"],
                 help="without --model: train this architecture here first")
  c.add_argument("--widths", type=int, nargs="+", default=None)
  c.add_argument("--epochs", type=int, default=epochs)
  c.add_argument("--seed", type=int, default=0, help="first seed")
  c.add_argument("--out", default=f"reports/{name}")
  return c


def spectra_command(args) -> dict:
  """Per-layer Marchenko–Pastur and power-law report of a user's trained
  network (--model/--checkpoint, the first one) or of one seed of --arch
  trained here."""
  from rainbow_jax import spectra_report

  nets = _networks(args)
  net, variables, what, name = nets.net, nets.variables[0], nets.what, nets.dataset
  rows, fits = spectra_report.layer_rows(net, variables, nets.law, seed=args.seed)
  results = spectra_report.write(rows, fits, args.out,
                                 title=f"rainbow_jax spectra — {what}",
                                 extra={"dataset": name, "networks": what})
  for r in rows:
    print(f"layer {r['layer']} {r['name']} {r['kernel_shape']}: learned components"
          f" {r['learned_components']}"
          + (f", α {r['alpha']:.2f} ± {r['alpha_sigma']:.2f} (x_min {r['xmin']:.3g},"
             f" D {r['ks_distance']:.3f}), traps {r['correlation_traps']}" if "alpha" in r
             else ""))
  print(f"wrote {args.out}/report.md, results.json and {len(rows)} figure(s)")
  return results


def compare_command(args) -> dict:
  """Layer × layer similarity (CKA, mutual k-NN, RSA) with null z-scores of a
  user's networks (--model/--checkpoint, two or more) or of K seeds of
  --arch trained here."""
  from rainbow_jax import compare_report, evaluate

  nets = _networks(args, seeds=args.seeds)
  net, variables, labels, what, name, ds = (nets.net, nets.variables, nets.labels,
                                            nets.what, nets.dataset, nets.data)
  if len(variables) < 2:
    raise ValueError("compare needs at least two networks (two --checkpoint, or --seeds ≥ 2).")
  x = ds.x_test[: args.samples]
  reps = [evaluate.representations(net, v, x, conv=args.conv) for v in variables]
  rows = compare_report.compare(reps, labels, measures=args.measures, k=args.k,
                                null_samples=args.null, seed=args.seed)
  layer_names = [f"in {n}" for n in net.names]
  results = compare_report.write(rows, layer_names, args.out, conv=args.conv,
                                 title=f"rainbow_jax compare — {what}",
                                 extra={"dataset": name, "networks": what, "images": len(x)})
  for r in rows:
    diag = [f"{r['value'][i][i]:.3f} (z {r['zscore'][i][i]:.0f})"
            for i in range(min(len(r["value"]), len(r["value"][0])))]
    print(f"{r['measure']} {r['a']} vs {r['b']}, matched layers: {', '.join(diag)}")
  print(f"wrote {args.out}/report.md, results.json and {len(rows)} heat map(s)")
  return results


def svr_command(args) -> dict:
  """SVR graph of a user's network (--model/--checkpoint, the first network)
  or of one seed of --arch trained here: report, figure, interactive HTML."""
  from rainbow_jax import svr_report

  nets = _networks(args)
  net, variables, what, name = nets.net, nets.variables[0], nets.what, nets.dataset
  graphs = svr_report.chain_graphs(net, variables, nets.data.x_train[:2], alpha=args.alpha,
                                   fdr=args.fdr, method=args.method)
  if not graphs:
    raise ValueError("no two consecutive weight layers form a chain: there is no SVR graph.")
  results = svr_report.write(graphs, net.names, args.out, title=f"rainbow_jax SVR — {what}",
                             alpha=args.alpha, fdr=args.fdr,
                             extra={"dataset": name, "networks": what, "alpha": args.alpha,
                                    "fdr": args.fdr})
  for chain in results["chains"]:
    for r in chain["edge_layers"]:
      print(f"{r['from']} → {r['to']}: internal dims {tuple(r['internal_dims'])},"
            f" {r['significant_edges']} significant edges of {r['edges']},"
            f" entropy {r['entropy']:.3f}")
    print(f"{' → '.join(chain['names'])}: path metric {chain['path_metric']:.4g}")
  print(f"wrote {args.out}/report.md, results.json and per chain a PNG and an HTML graph")
  return results


_DEFAULTS = argparse.ArgumentDefaultsHelpFormatter  # --help shows every default


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="rainbow-jax", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("analyze", formatter_class=_DEFAULTS, help="the tutorial end to end: train, spectra, clipping,"
                                       " alignment, stability, rainbow samples; a report")
  c.add_argument("--dataset", default="auto",
                 help="fashion_mnist | mnist | cifar10 | digits | auto (Fashion-MNIST"
                      " when installed, else digits)")
  c.add_argument("--data-dir", default=None, help="directory of IDX files")
  c.add_argument("--arch", default="mlp", choices=["mlp", "cnn", "resnet20", "scattering"])
  c.add_argument("--widths", type=int, nargs="+", default=None,
                 help="hidden widths (mlp), conv channels (cnn) or learned 1×1 mixing"
                      " widths (scattering: fixed Morlet wavelets + learned channel"
                      " weights)")
  c.add_argument("--width", type=float, default=1.0,
                 help="resnet20 channel multiplier (16·w, 32·w, 64·w)")
  c.add_argument("--model", default=None, metavar="FILE.py:FACTORY",
                 help="analyse your own linen model: FACTORY() returns the module")
  c.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                 help="trained variables of --model (orbax directory, e.g. from"
                      " `rainbow-jax train --checkpoint-dir`, or a flax .msgpack file),"
                      " one network or K stacked seeds; repeat for more")
  c.add_argument("--init", default=None,
                 help="the initialiser of --model for the Marchenko–Pastur law:"
                      " flax (default) | torch | a variance")
  c.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
  c.add_argument("--lr", type=float, default=0.01)
  c.add_argument("--momentum", type=float, default=0.9)
  c.add_argument("--clip-layers", type=int, nargs="+", default=None,
                 help="layers (1-based) with clipping curves (default: all up to 6 weight"
                      " layers, else first, middle, last)")
  c.add_argument("--clip-samples", type=int, default=0,
                 help="test images of the clipping sweeps (0: all)")
  c.add_argument("--conv", choices=["mean", "flatten"], default="mean",
                 help="conv inputs of the CKA averaged over positions or flattened per image")
  c.add_argument("--cka-samples", type=int, default=2000,
                 help="test images of the layer × layer CKA")
  c.add_argument("--align-samples", type=int, default=0,
                 help="training images of the rainbow alignments (0: all)")
  c.add_argument("--seeds", type=int, default=2,
                 help="seeds trained (≥ 2; the first two compared)")
  c.add_argument("--samples", type=int, default=8, help="rainbow networks sampled (0: none)")
  c.add_argument("--epochs", type=int, default=5,
                 help="epochs to train the seeds first (0: analyse at init)")
  c.add_argument("--batch", type=int, default=1000,
                 help="batch of the moments and alignment passes (memory only)")
  c.add_argument("--max-samples", type=int, default=0, help="training images used; 0: all")
  c.add_argument("--seed", type=int, default=0, help="first seed")
  c.add_argument("--out", default="reports/analyze")
  c.set_defaults(run=analyze_report)

  t = sub.add_parser("train", help="train K seeds as one compiled program",
                     formatter_class=_DEFAULTS)
  t.add_argument("--dataset", default="auto")
  t.add_argument("--data-dir", default=None)
  t.add_argument("--arch", default="mlp", choices=["mlp", "cnn", "resnet20", "scattering"])
  t.add_argument("--widths", type=int, nargs="+", default=None)
  t.add_argument("--width", type=float, default=1.0, help="resnet20 channel multiplier")
  t.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
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

  sp = _network_arguments(
      sub, "spectra", help="per-layer Marchenko–Pastur and power-law (WeightWatcher) report"
      " of a trained network", dataset_help="for the input shape (and training)",
      checkpoint_help="its trained variables (orbax directory or .msgpack); the first"
                      " network is reported", init=True)
  sp.set_defaults(run=spectra_command)

  cp = _network_arguments(
      sub, "compare", help="layer × layer similarity of two or more networks (CKA, mutual"
      " k-NN, RSA) with z-scores against shuffled images",
      dataset_help="its test images are compared on",
      checkpoint_help="trained variables (orbax directory or .msgpack), repeat for each"
                      " network; a checkpoint of K stacked seeds counts K", epochs=3)
  cp.add_argument("--seeds", type=int, default=2, help="without --model: networks trained")
  cp.add_argument("--samples", type=int, default=1000, help="test images compared on")
  cp.add_argument("--measures", nargs="+", default=list(("linear_cka", "mutual_knn", "rsa")),
                  choices=["linear_cka", "mutual_knn", "rsa"])
  cp.add_argument("--k", type=int, default=10, help="neighbours for mutual k-NN")
  cp.add_argument("--conv", choices=["mean", "flatten"], default="mean",
                  help="conv inputs averaged over positions or flattened per image (as analyze)")
  cp.add_argument("--null", type=int, default=20, help="shuffles per z-score")
  cp.set_defaults(run=compare_command)

  sv = _network_arguments(
      sub, "svr", help="Singular Value Representation graph of a network's weights:"
      " report, figure and interactive HTML", dataset_help="for the input shape (and training)",
      checkpoint_help="trained variables (orbax directory or .msgpack); the first network"
                      " is drawn")
  sv.add_argument("--alpha", type=float, default=0.15,
                  help="an edge is significant when its p-value is below this")
  sv.add_argument("--fdr", type=float, default=None,
                  help="Benjamini–Hochberg at this false-discovery rate instead")
  sv.add_argument("--method", choices=["svr", "cosvr"], default="svr",
                  help="cosvr: conv layers flattened [out·K², in], the graph the gradient sees")
  sv.set_defaults(run=svr_command)
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
