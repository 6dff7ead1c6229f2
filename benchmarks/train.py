"""Multi-seed training throughput: K seeds vmapped vs K sequential runs vs PyTorch.

    python benchmarks/train.py [--quick] [--out results/train.json]

For the tutorial's MLP [784, 512, 256, 10] and CNN [1→32→64, 5×5/2] on
Fashion-MNIST-shaped data (the real images when installed), one epoch over
``samples`` images (12 800; 60 000 with ``--size accel``, where K also reaches
32) in batches of 128 with SGD + momentum:

* ``rainbow_jax`` ``vmapped`` — K ∈ {1, 2, 4, 8} seeds ({1, 32} with
  ``--size accel``) as one program
  (`train.train_epoch`, ``stack_axis='vmap'``);
* ``rainbow_jax`` ``mapped`` — the same program with ``stack_axis='map'``
  (`lax.map` over seeds, the CPU default of ``'auto'``);
* ``rainbow_jax`` ``sequential`` — K single-seed epochs one after another;
* ``pytorch`` — the tutorial's training loop (``one_epoch``: forward,
  cross-entropy, backward, SGD step per batch) for one seed, on the device
  JAX uses (torch 2.13.0 CPU here), data already in device memory as tensors
  (the tutorial's DataLoader with per-item transforms would be slower);
  measured for K = 1 and 2, and for larger K extrapolated as K × the faster
  measured per-seed time.
* ``matmul_peak`` — the best float32 GEMM rate of this machine (XLA's and
  torch's kernels), same run.

FLOPs per step count forward matmuls/convs ×3 (forward, two backward
products); ``fraction_of_peak`` = achieved GFLOP/s ÷ the best measured peak.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax.numpy as jnp
import numpy as np

import _common as C
from rainbow_jax import models, train


def flops_per_example(arch: str) -> float:
  """Forward multiply-adds ×2 of one example, ×3 for forward + backward."""
  if arch == "mlp":
    dims = [784, 512, 256, 10]
    fwd = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
  else:
    fwd = 2 * (12 * 12 * 25 * 1 * 32 + 4 * 4 * 25 * 32 * 64 + 1024 * 10)
  return 3.0 * fwd


def torch_epoch_fn(torch, arch, x, y, batch_size=128, seed=0, return_model=False):
  """The tutorial's loop on in-memory tensors; returns a no-arg epoch runner
  (and the model with ``return_model``)."""
  nn = torch.nn
  torch.manual_seed(seed)
  if arch == "mlp":
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512, bias=False), nn.ReLU(),
                          nn.Linear(512, 256, bias=False), nn.ReLU(),
                          nn.Linear(256, 10, bias=False))
  else:
    model = nn.Sequential(nn.Conv2d(1, 32, 5, stride=2, bias=False), nn.ReLU(),
                          nn.Conv2d(32, 64, 5, stride=2, bias=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(64 * 4 * 4, 10, bias=False))
  dev = C.torch_device(torch)
  model = model.to(dev)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  loss_fn = nn.CrossEntropyLoss()
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dev)  # NCHW
  yt = torch.from_numpy(y.astype(np.int64)).to(dev)
  gen = torch.Generator().manual_seed(seed)

  def epoch():
    model.train()
    perm = torch.randperm(len(xt), generator=gen).to(dev)
    correct = 0
    for i in range(0, len(xt), batch_size):
      idx = perm[i:i + batch_size]
      xb, yb = xt[idx], yt[idx]
      out = model(xb)
      loss = loss_fn(out, yb)
      opt.zero_grad()
      loss.backward()
      opt.step()
      correct += int((out.argmax(-1) == yb).sum())
    return correct

  return (epoch, model) if return_model else epoch


def main(argv=None):
  p = C.parser("train")
  args = C.parse_args(p, argv)
  samples, ks, repeats = {"quick": (1280, [1, 2], 1), "cpu": (12800, [1, 2, 4, 8], args.repeats),
                           "accel": (60000, [1, 32], 2)}[args.size]
  archs = ["mlp", "cnn"]
  torch = C.torch_or_none()
  notes = []
  if torch is None:
    notes.append("torch not installed: pytorch peer skipped")
  x, y, note = C.fashion_mnist_or_random(samples)
  notes.append(note)
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  records = []

  # Machine peak: best GEMM rate of XLA's and torch's kernels, this run.
  peaks = C.gemm_peak([(1024, 1024, 1024), (128, 784, 512), (2048, 2048, 2048)])
  best_peak = max(peaks["xla"], peaks["torch"] or 0.0)
  records.append(C.record("train", "matmul_peak", {"shapes": "1024³, 128×784×512, 2048³"},
                          None, gflops=peaks["xla"], torch_gflops=peaks["torch"]))

  for arch in archs:
    model = models.make("mlp" if arch == "mlp" else "cnn", (28, 28, 1), 10)
    tx = train.sgd()
    flops = flops_per_example(arch) * samples
    base = {"arch": arch, "samples": samples, "batch": 128}

    def run(k, axis):
      state = train.init(model, tx, list(range(k)), (28, 28, 1))
      return lambda: train.train_epoch(state, xj, yj, model=model, tx=tx,
                                       stack_axis=axis)[1]

    for k in ks:
      single = [run(1, "map") for _ in range(k)]
      timed = C.time_interleaved({
          "vmapped": run(k, "vmap"), "mapped": run(k, "map"),
          "sequential": lambda: [f() for f in single]}, repeats)
      for mode, (first, t) in timed.items():
        records.append(C.record(
            "train", "rainbow_jax", dict(base, seeds=k, mode=mode), t,
            None if mode == "sequential" else first - t,
            seconds_per_seed_epoch=t / k, gflops=k * flops / t / 1e9,
            fraction_of_peak=k * flops / t / 1e9 / best_peak))
      print(arch, k, "  ".join(f"{m} {t:.2f}s" for m, (_, t) in timed.items()), flush=True)

    if torch is not None:
      epoch = torch_epoch_fn(torch, arch, x, y)
      e2 = [torch_epoch_fn(torch, arch, x, y, seed=s) for s in range(2)]
      timed = C.time_interleaved({"one": epoch, "two": lambda: [e() for e in e2]}, repeats)
      t1, t2 = timed["one"][1], timed["two"][1]
      # Extrapolate K sequential seeds from the faster per-seed figure, so the
      # ratio never flatters rainbow_jax.
      per_seed = min(t1, t2 / 2)
      for k in ks:
        secs = {1: t1, 2: t2}.get(k, k * per_seed)
        for r in records:
          if r["impl"] == "rainbow_jax" and r["case"]["arch"] == arch and r["case"]["seeds"] == k:
            r["extra"]["speedup_vs_pytorch"] = secs / r["seconds"]
        records.append(C.record(
            "train", "pytorch", dict(base, seeds=k, mode="sequential"), secs, None,
            seconds_per_seed_epoch=secs / k, gflops=k * flops / secs / 1e9,
            fraction_of_peak=k * flops / secs / 1e9 / best_peak,
            extrapolated=k not in (1, 2)))
      print(arch, "pytorch", f"1 seed {t1:.2f}s, 2 seeds {t2:.2f}s", flush=True)
  C.write(args.out, records, notes)


if __name__ == "__main__":
  main()
