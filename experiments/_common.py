"""What the experiment scripts share: the dataset they read and how they
summarise a spread over seeds."""

from __future__ import annotations

import os
import time

import numpy as np

from rainbow_jax import data, models, train


def dataset(name: str = "auto") -> data.Dataset:
  """`data.load` of `name` (grayscale; CIFAR-10 normalised as the tutorial
  does); ``'auto'``: Fashion-MNIST when Debian's package is installed, else
  scikit-learn's digits."""
  if name == "auto":
    name = "fashion_mnist" if data.available("fashion_mnist") else "digits"
  return data.load(name, grayscale=True, normalize="tutorial" if name == "cifar10" else True)


def mean_sd(values) -> dict:
  """``{'mean', 'sd' (ddof 1; 0 for one value), 'values'}`` of `values`."""
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
          "values": v.tolist()}


def resnet_arguments(p, *, widths: list, epochs: int, out: str) -> None:
  """The arguments of the ResNet-width experiments: widths, seeds, epochs,
  training images, dataset, --quick and the output folder."""
  p.add_argument("--widths", type=float, nargs="+", default=widths)
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--epochs", type=int, default=epochs)
  p.add_argument("--train", type=int, default=10000, help="training images")
  p.add_argument("--dataset", default="auto")
  p.add_argument("--quick", action="store_true", help="digits-sized run (CI)")
  p.add_argument("--out", default=out)


def train_resnets(width: float, ds: data.Dataset, args):
  """ResNet-20 ×`width` trained from ``args.seeds`` seeds as one program
  (`train.fit`'s SGD) on the first ``args.train`` images for
  ``args.epochs``: ``(model, state, history, seconds)``."""
  model = models.ResNet(width=width)
  t0 = time.perf_counter()
  state, hist = train.fit(model, ds.x_train[:args.train], ds.y_train[:args.train],
                          ds.x_test, ds.y_test, seeds=list(range(args.seeds)),
                          epochs=args.epochs, progress=False)
  return model, state, hist, time.perf_counter() - t0


def over_widths(one_width, args, line):
  """The ResNet-width experiments' loop: ``args.out`` created, the dataset
  loaded, ``one_width(width, ds, args)`` run for every ``args.widths``, each
  result summarised by ``line(width, run)`` as it comes. Returns ``(ds,
  runs, seconds)``."""
  os.makedirs(args.out, exist_ok=True)
  ds = dataset(args.dataset)
  t0 = time.perf_counter()
  runs = []
  for w in args.widths:
    runs.append(one_width(w, ds, args))
    print(line(w, runs[-1]), flush=True)
  return ds, runs, time.perf_counter() - t0
