"""`rainbow-jax train`: K seeds of a built-in architecture trained as one
compiled program; per-seed accuracies, their history and a figure."""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from rainbow_jax.commands import _common


def add_parser(sub) -> argparse.ArgumentParser:
  """The ``train`` subcommand's arguments."""
  t = sub.add_parser("train", help="train K seeds as one compiled program",
                     formatter_class=_common.DEFAULTS)
  t.add_argument("--dataset", default="auto")
  t.add_argument("--data-dir", default=None)
  t.add_argument("--arch", default="mlp", choices=_common.ARCHS)
  t.add_argument("--widths", type=int, nargs="+", default=None)
  t.add_argument("--width", type=float, default=1.0, help="resnet20 channel multiplier")
  t.add_argument("--init", default="torch", choices=["torch", "flax"])
  t.add_argument("--seeds", type=int, default=4, help="number of seeds K")
  t.add_argument("--seed", type=int, default=0, help="first seed")
  t.add_argument("--epochs", type=int, default=5)
  t.add_argument("--batch-size", type=int, default=128)
  _common.optimizer_args(t)
  t.add_argument("--shared-order", action="store_true",
                 help="all seeds see the same data order")
  t.add_argument("--max-samples", type=int, default=0, help="0: all")
  t.add_argument("--checkpoint-dir", default=None,
                 help="save every epoch; resume from the newest checkpoint")
  t.add_argument("--shard", action="store_true", help="shard seeds over all devices")
  t.add_argument("--out", default="reports/train")
  t.set_defaults(run=command)
  return t


def _figure(hist, seeds, arch, name, path):
  """Test accuracy per epoch, one line per seed; the path, or None untrained."""
  from rainbow_jax import plots
  ax = None
  for k, sd in enumerate(seeds):
    ax = plots.curve(np.arange(1, len(hist.test_accuracy) + 1), hist.test_accuracy[:, k],
                     label=f"seed {sd}", ax=ax, xlabel="epoch", ylabel="test accuracy (%)",
                     title=f"{arch.upper()} on {name}, {len(seeds)} seeds in one program")
  return None if ax is None else plots.save(ax, path)


def command(args) -> dict:
  """Trains K seeds as one compiled program and writes per-seed accuracies."""
  from rainbow_jax import models, train

  name = _common.pick_dataset(args.dataset)
  ds = _common.load_data(name, args.data_dir)
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
                          tx=_common.optimizer(args, len(x), args.batch_size)[0],
                          shared_order=args.shared_order,
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
      "seconds": seconds, **_common.environment(),
  }
  _figure(hist, seeds, args.arch, name, os.path.join(args.out, "test_accuracy.png"))
  _common.save_results(args.out, results)
  print(f"test accuracy per seed: {', '.join(f'{a:.2f}' for a in acc)} %"
        f" (mean {np.mean(acc):.2f} ± {np.std(acc):.2f}); {seconds:.1f} s;"
        f" wrote {args.out}/results.json")
  return results


__all__ = ["add_parser", "command"]
