"""Rainbow sampling down a ResNet-20: seconds per layer, layer by layer
(each network's kept values carried from one layer's input to the next)
against the fallback that evaluates the whole networks for every layer.

    python benchmarks/rainbow_depth.py [--quick] [--width 0.5] [--out results/rainbow_depth.json]

`rainbow.generate` of S = 2 networks from a ResNet-20 at init on N random
28 × 28 images (5 000; ``--quick``: 200); the per-layer seconds include each
layer's compilation (one program per layer). Linear in depth means flat
per-layer times. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import jax
import numpy as np

from rainbow_jax import models, network, rainbow


def per_layer_seconds(net, v, x, s: int) -> tuple[list[float], float]:
  """Seconds of each layer's step of `generate` (timed where its alignment
  is done), and the whole call's."""
  stamps = []
  step, align = rainbow._layer_step, rainbow._align_all

  def timed(fn):
    def wrapped(*args, **kwargs):
      out = jax.block_until_ready(fn(*args, **kwargs))
      stamps.append(time.perf_counter())
      return out
    return wrapped

  rainbow._layer_step, rainbow._align_all = timed(step), timed(align)
  try:
    t0 = time.perf_counter()
    g = rainbow.generate(jax.random.key(0), net, v, x, num_samples=s, progress=False)
    jax.block_until_ready(g.params)
    total = time.perf_counter() - t0
  finally:
    rainbow._layer_step, rainbow._align_all = step, align
  return np.diff([t0] + stamps).tolist(), total


def main(argv=None):
  p = C.parser("rainbow_depth")
  p.add_argument("--width", type=float, default=0.5)
  args = C.parse_args(p, argv)
  n = 200 if args.quick else 5000
  m = models.ResNet(width=args.width)
  x = jax.random.normal(jax.random.key(0), (n, 28, 28, 1))
  v = m.init(jax.random.key(1), x[:2])
  net = network.from_linen(m, v, x[:2])
  case = {"arch": "resnet20", "width": args.width, "images": n, "samples": 2}
  records = []
  by_layer, total = per_layer_seconds(net, v, x, 2)
  records.append(C.record("rainbow_depth", "rainbow_jax_layer_by_layer", case, total, None,
                          seconds_per_layer=by_layer))
  print(f"layer by layer: {total:.1f} s; per layer " + " ".join(f"{t:.1f}" for t in by_layer),
        flush=True)
  segments = network.segments

  def refuse(*a, **k):
    raise ValueError("the fallback")

  network.segments = refuse
  try:
    whole, total_w = per_layer_seconds(net, v, x, 2)
  finally:
    network.segments = segments
  records.append(C.record("rainbow_depth", "rainbow_jax_whole_networks", case, total_w, None,
                          seconds_per_layer=whole))
  records[0]["extra"]["speedup_vs_whole_networks"] = total_w / total
  print(f"whole networks each layer: {total_w:.1f} s; per layer "
        + " ".join(f"{t:.1f}" for t in whole), flush=True)
  C.write(args.out, records)


if __name__ == "__main__":
  main()
