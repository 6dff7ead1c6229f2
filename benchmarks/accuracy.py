"""Side-by-side accuracy: rainbow_jax K seeds vs the tutorial's PyTorch procedure.

    python benchmarks/accuracy.py [--quick] [--seeds 4] [--torch-seeds 2]
                                  [--out results/accuracy.json]

Fashion-MNIST (Debian package; digits when absent), tutorial hyperparameters
(SGD lr 0.01, momentum 0.9, batch 128, 5 epochs, no augmentation), MLP
[784, 512, 256, 10] and CNN [1→32→64, 5×5/2]. rainbow_jax trains its K seeds
as one vmapped program; PyTorch trains its seeds one after another with the
tutorial's loop. Records hold per-seed test accuracies and wall time.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np

import _common as C
from rainbow_jax import data, models, train
from train import torch_epoch_fn


def torch_accuracy(torch, arch, ds, epochs, seed):
  epoch, model = torch_epoch_fn(torch, arch, ds.x_train, ds.y_train, seed=seed,
                                return_model=True)
  for _ in range(epochs):
    epoch()
  model.eval()
  xt = torch.from_numpy(np.ascontiguousarray(ds.x_test.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    pred = model(xt.to(C.torch_device(torch))).argmax(-1).cpu().numpy()
  return 100.0 * float(np.mean(pred == ds.y_test))


def main(argv=None):
  p = C.parser("accuracy")
  p.add_argument("--seeds", type=int, default=4)
  p.add_argument("--torch-seeds", type=int, default=2)
  p.add_argument("--epochs", type=int, default=5)
  args = C.parse_args(p, argv)
  name = "fashion_mnist" if data.available("fashion_mnist") else "digits"
  ds = data.load(name)
  if args.quick:
    ds = ds._replace(x_train=ds.x_train[:1000], y_train=ds.y_train[:1000])
    args.epochs, args.seeds, args.torch_seeds = 1, 2, 1
  torch = C.torch_or_none()
  records, notes = [], [f"dataset {name} from {ds.source}"]
  for arch in ("mlp", "cnn"):
    case = {"arch": arch, "dataset": name, "epochs": args.epochs, "samples": len(ds.x_train)}
    model = models.make(arch, ds.x_train.shape[1:], 10)
    t0 = time.perf_counter()
    _, hist = train.fit(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                        seeds=list(range(args.seeds)), epochs=args.epochs, progress=False)
    t = time.perf_counter() - t0
    acc = hist.test_accuracy[-1].tolist()
    records.append(C.record("accuracy", "rainbow_jax", dict(case, seeds=args.seeds), t,
                            test_accuracy=acc, mean=float(np.mean(acc)),
                            std=float(np.std(acc))))
    print(arch, "rainbow_jax", np.round(acc, 2), f"{t:.1f}s", flush=True)
    if torch is None:
      notes.append("torch not installed: pytorch peer skipped")
      continue
    t0 = time.perf_counter()
    tacc = [torch_accuracy(torch, arch, ds, args.epochs, s) for s in range(args.torch_seeds)]
    t = time.perf_counter() - t0
    records.append(C.record("accuracy", "pytorch", dict(case, seeds=args.torch_seeds), t,
                            test_accuracy=tacc, mean=float(np.mean(tacc)),
                            std=float(np.std(tacc))))
    print(arch, "pytorch", np.round(tacc, 2), f"{t:.1f}s", flush=True)
  C.write(args.out, records, notes)


if __name__ == "__main__":
  main()
