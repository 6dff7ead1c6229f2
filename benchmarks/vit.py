"""ViT training throughput: K seeds as one program vs the same ViT in PyTorch.

    python benchmarks/vit.py [--quick] [--out results/vit.json]

`rainbow_jax.models.ViT` (patch 7, width 64, depth 4, 4 heads, MLP 128, a
class token, pre-norm blocks) on Fashion-MNIST-shaped data (the real images
when installed): one epoch over ``samples`` images (6 400; 60 000 with
``--size accel``) in batches of 128 with AdamW.

* ``rainbow_jax`` — K ∈ {1, 4} seeds as one program (`train.train_epoch`,
  ``stack_axis`` ``'auto'``: in turn on CPU, vmapped on GPU/TPU);
* ``pytorch`` — the same architecture written with ``nn.Conv2d`` patches,
  ``nn.TransformerEncoderLayer(norm_first=True, activation='gelu')`` and a
  linear head, its parameter count checked equal to ours, trained by the
  usual loop (forward, cross-entropy, backward, AdamW step per batch) for
  one seed on the device JAX uses; K seeds are K times one seed.

Compile seconds (the first epoch minus a later one) beside run seconds.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np

import _common as C
from rainbow_jax import models, train

WIDTH, DEPTH, HEADS, PATCH = 64, 4, 4, 7


def torch_vit(torch, width=WIDTH, depth=DEPTH, heads=HEADS, patch=PATCH, classes=10):
  nn = torch.nn

  class ViT(nn.Module):
    def __init__(self):
      super().__init__()
      self.patch = nn.Conv2d(1, width, patch, stride=patch, bias=False)
      tokens = (28 // patch) ** 2 + 1
      self.cls = nn.Parameter(torch.zeros(1, 1, width))
      self.pos = nn.Parameter(0.02 * torch.randn(1, tokens, width))
      self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(
          width, heads, dim_feedforward=2 * width, dropout=0.0, activation="gelu",
          batch_first=True, norm_first=True) for _ in range(depth)])
      self.norm = nn.LayerNorm(width)
      self.head = nn.Linear(width, classes)

    def forward(self, x):
      h = self.patch(x).flatten(2).transpose(1, 2)
      h = torch.cat([self.cls.expand(len(h), -1, -1), h], 1) + self.pos
      for b in self.blocks:
        h = b(h)
      return self.head(self.norm(h[:, 0]))

  return ViT()


def torch_epoch_fn(torch, x, y, batch_size=128, seed=0):
  torch.manual_seed(seed)
  dev = C.torch_device(torch)
  model = torch_vit(torch).to(dev)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
  return (C.torch_epoch(torch, model, opt, x, y, batch_size=batch_size, seed=seed),
          sum(p.numel() for p in model.parameters()))


def main(argv=None):
  p = C.parser("vit")
  args = C.parse_args(p, argv)
  samples, ks, repeats = {"quick": (640, [1, 2], 1), "cpu": (6400, [1, 4], min(args.repeats, 3)),
                           "accel": (60000, [1, 4], 2)}[args.size]
  torch = C.torch_or_none()
  notes = [] if torch is not None else ["torch not installed: pytorch peer skipped"]
  x, y, note = C.fashion_mnist_or_random(samples)
  notes.append(note)
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  model = models.ViT(patch=PATCH, width=WIDTH, depth=DEPTH, heads=HEADS)
  tx = train.adamw(1e-3, weight_decay=0.05)
  base = {"arch": f"vit patch {PATCH} width {WIDTH} depth {DEPTH} heads {HEADS}",
          "samples": samples, "batch": 128}
  params = train.init(model, tx, [0], (28, 28, 1)).params
  ours = int(sum(np.prod(a.shape[1:]) for a in jax.tree_util.tree_leaves(params)))
  records = [C.record("vit", "rainbow_jax_params", base, None, count=ours)]
  for k in ks:
    state = train.init(model, tx, list(range(k)), (28, 28, 1))
    first, t = C.time_fn(lambda: train.train_epoch(state, xj, yj, model=model, tx=tx)[1],
                         repeats)
    records.append(C.record("vit", "rainbow_jax", dict(base, seeds=k), t, first - t,
                            seconds_per_seed_epoch=t / k))
    print(f"rainbow_jax K={k}: {t:.2f} s per epoch (compile {first - t:.1f} s)", flush=True)
  if torch is not None:
    epoch, count = torch_epoch_fn(torch, x, y)
    records.append(C.record("vit", "pytorch_params", base, None, count=int(count)))
    if count != ours:
      notes.append(f"parameter counts differ: ours {ours}, torch {count}")
    first, t = C.time_fn(epoch, repeats)
    for k in ks:
      secs = k * t
      for r in records:
        if r["impl"] == "rainbow_jax" and r["case"]["seeds"] == k:
          r["extra"]["speedup_vs_pytorch"] = secs / r["seconds"]
      records.append(C.record("vit", "pytorch", dict(base, seeds=k), secs, None,
                              seconds_per_seed_epoch=t, extrapolated=k != 1))
    print(f"pytorch: {t:.2f} s per seed-epoch ({count} parameters, ours {ours})", flush=True)
  C.write(args.out, records, notes)


if __name__ == "__main__":
  main()
