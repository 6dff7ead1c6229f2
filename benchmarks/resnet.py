"""ResNet-20 (BatchNorm) training, K seeds as one program, vs PyTorch; and
the stages of `rainbow-jax analyze` on it.

    python benchmarks/resnet.py [--quick] [--width 0.5] [--out results/resnet.json]

One epoch over ``samples`` Fashion-MNIST images (random images of its shape
when the dataset is not installed) in batches of 128, SGD with momentum
0.9, learning rate 0.01:

* ``rainbow_jax`` — `rainbow_jax.models.ResNet` (He et al.'s CIFAR ResNet-20,
  parameter-free shortcuts, BatchNorm statistics carried in the train
  state), K ∈ {1, 4} seeds (``--size accel``: {1, 8}, 12 800 images) with `train.train_epoch` (``stack_axis='map'``, the
  CPU default, and ``'vmap'``);
* ``pytorch`` — the same architecture written in PyTorch below (on the
  device JAX uses, NCHW, data in device memory as tensors), K seeds one after another (K = 4 is
  4 × the measured one-seed epoch).

Then the analysis stages on the K = 2 networks (`rainbow_jax.commands.analyze.run`,
small sizes): moments pass, clipping, CKA, rainbow sampling (BatchNorm
re-estimated), with their seconds. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import data, models, network, train
from rainbow_jax.commands import analyze


def torch_resnet20(torch, width: float, num_classes: int = 10):
  """He et al.'s CIFAR ResNet-20 with option-A shortcuts, as in `models.ResNet`."""
  nn = torch.nn
  F = torch.nn.functional

  class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
      super().__init__()
      self.conv0 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
      self.bn0 = nn.BatchNorm2d(c_out, momentum=0.1)
      self.conv1 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(c_out, momentum=0.1)
      self.stride, self.extra = stride, c_out - c_in

    def forward(self, x):
      h = F.relu(self.bn0(self.conv0(x)))
      h = self.bn1(self.conv1(h))
      if self.stride != 1 or self.extra:
        x = x[:, :, ::self.stride, ::self.stride]
        x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
      return F.relu(h + x)

  widths = [max(1, round(c * width)) for c in (16, 32, 64)]
  layers = [nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
            nn.ReLU()]
  c_in = widths[0]
  for s, c in enumerate(widths):
    for b in range(3):
      layers.append(Block(c_in, c, 2 if (s > 0 and b == 0) else 1))
      c_in = c
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
  return nn.Sequential(*layers)


def torch_epoch_fn(torch, x, y, width, batch_size=128, seed=0):
  torch.manual_seed(seed)
  dev = C.torch_device(torch)
  model = torch_resnet20(torch, width).to(dev)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  return C.torch_epoch(torch, model, opt, x, y, batch_size=batch_size, seed=seed)


def main(argv=None):
  p = C.parser("resnet")
  p.add_argument("--width", type=float, default=0.5, help="channel multiplier")
  args = C.parse_args(p, argv)
  samples = {"quick": 256, "cpu": 3200, "accel": 12800}[args.size]
  repeats = 1 if args.quick else min(args.repeats, 2)
  ks = [1, 8] if args.accel else [1, 4]
  torch = C.torch_or_none()
  notes = [f"ResNet-20, width ×{args.width}, one epoch of {samples} images, batch 128"]
  if torch is None:
    notes.append("torch not installed: pytorch peer skipped")
  if data.available("fashion_mnist"):
    ds = data.load("fashion_mnist")
    notes.append("data: Fashion-MNIST")
  else:
    ds = data.load("digits")
    notes.append("data: Fashion-MNIST not installed; random images of its shape for"
                 " training, digits for the analysis stages")
  rng = np.random.default_rng(0)
  if ds.x_train.shape[1:] == (28, 28, 1):
    x, y = ds.x_train[:samples], ds.y_train[:samples]
  else:
    x = rng.normal(size=(samples, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, samples).astype(np.int32)
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  model = models.ResNet(blocks=3, width=args.width)
  tx = train.sgd()
  base = {"arch": "resnet20", "width": args.width, "samples": samples, "batch": 128}
  records = []
  ours = {}
  for k in ks:
    for axis in ("map", "vmap"):
      state = train.init(model, tx, list(range(k)), (28, 28, 1))
      fn = lambda s=state, a=axis: train.train_epoch(s, xj, yj, model=model, tx=tx,
                                                     stack_axis=a)[1]
      first, t = C.time_fn(fn, repeats)
      ours[(k, axis)] = t
      records.append(C.record("resnet_train", "rainbow_jax", dict(base, seeds=k, mode=axis),
                              t, first - t, seconds_per_seed_epoch=t / k))
      print(f"rainbow_jax K={k} {axis}: {t:.2f} s", flush=True)
  ours_params = sum(a.size for a in jax.tree_util.tree_leaves(
      train.init(model, tx, [0], (28, 28, 1)).params))
  records.append(C.record("resnet_params", "rainbow_jax", base, None, count=int(ours_params)))
  if torch is not None:
    theirs = sum(p.numel() for p in torch_resnet20(torch, args.width).parameters())
    records.append(C.record("resnet_params", "pytorch", base, None, count=int(theirs)))
    first, t1 = C.time_fn(torch_epoch_fn(torch, x, y, args.width), repeats)
    for k in ks:
      best = min(ours[(k, "map")], ours[(k, "vmap")])
      records.append(C.record(
          "resnet_train", "pytorch", dict(base, seeds=k, mode="sequential"), k * t1, None,
          seconds_per_seed_epoch=t1, extrapolated=k != 1,
          ratio_ours_over_pytorch=best / (k * t1)))
      for r in records:
        if r["bench"] == "resnet_train" and r["impl"] == "rainbow_jax" \
            and r["case"]["seeds"] == k:
          r["extra"]["speedup_vs_pytorch"] = k * t1 / r["seconds"]
      print(f"pytorch K={k}: {k * t1:.2f} s (ours/pytorch {best / (k * t1):.2f})", flush=True)

  # The analyze stages on two trained seeds (small sizes).
  small = data.load("digits") if args.quick else ds
  n_fit = 300 if args.quick else 3200
  xs, ys = small.x_train[:n_fit], small.y_train[:n_fit]
  state, hist = train.fit(model, xs, ys, seeds=[0, 1], epochs=1, progress=False)
  vs = [train.select(state.variables, k) for k in range(2)]
  net = network.from_linen(model, vs[0], xs[:2])
  nets = analyze.Networks(net, vs, ["seed 0", "seed 1"], None,
                          flax.linen.initializers.he_normal(), "RESNET20",
                          "benchmark", None)
  n_test = 200 if args.quick else 1000
  with tempfile.TemporaryDirectory() as out:
    res = analyze.run(nets, xs, small.x_test[:n_test], small.y_test[:n_test], out,
                      samples=4, batch=500, cka_samples=n_test,
                      align_samples=200 if args.quick else 1000)
  t = res["timings"]
  for stage, secs in t.items():
    if stage.endswith("_compile_seconds"):
      continue
    records.append(C.record("resnet_analyze", "rainbow_jax",
                            dict(base, stage=stage, train_images=n_fit, test_images=n_test),
                            secs, t.get(stage.replace("_seconds", "_compile_seconds"))))
  print("analyze stages:", {k: round(v, 1) for k, v in res["timings"].items()}, flush=True)
  C.write(args.out, records, notes)


if __name__ == "__main__":
  main()
