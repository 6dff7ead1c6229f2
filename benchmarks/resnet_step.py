"""Where a ResNet-20 training step spends its time: forward, forward +
backward, forward + backward with BatchNorm skipped, and a whole SGD step as
training runs it (JAX: the steps of an epoch in one `lax.scan`; PyTorch: its
loop), for `PatchConv` (the models' default), XLA's native convolution and
PyTorch, on one batch; seconds per step.

    python benchmarks/resnet_step.py [--quick] [--width 0.5] [--out results/resnet_step.json]

Explains the CPU training gap to PyTorch (README, Performance): the
convolutions' backward and BatchNorm. Both sides on the same device and
thread count; BatchNorm in batch mode (training). Not a test: timings
depend on the machine.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rainbow_jax import models, train
from resnet import torch_resnet20

SCAN_STEPS = 10


def _ours(conv: str, width: float, x: np.ndarray, y: np.ndarray) -> dict:
  """The three steps of our ResNet with `conv`, each a jitted function."""
  m = models.ResNet(width=width, conv=conv)
  v = m.init(jax.random.key(0), x[:2])

  def loss(p, x, y, norm=True):
    def skip_norm(next_fun, args, kw, ctx):
      if not norm and isinstance(ctx.module, nn.BatchNorm) and ctx.method_name == "__call__":
        return args[0]
      return next_fun(*args, **kw)
    with nn.intercept_methods(skip_norm):
      out, _ = m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True,
                       mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

  xj, yj, p = jnp.asarray(x), jnp.asarray(y), v["params"]
  fwd = jax.jit(loss)
  grad = jax.jit(jax.grad(loss))
  grad_plain = jax.jit(jax.grad(lambda p, x, y: loss(p, x, y, norm=False)))
  # What training runs: the SGD steps of an epoch in one lax.scan (seconds
  # per step below). XLA:CPU's native convolution is far slower inside a
  # loop body than outside (jax-ml/jax#12868).
  tx = optax.sgd(0.01, 0.9)
  mask = jnp.ones((x.shape[0],), bool)
  carry = (p, tx.init(p), v["batch_stats"])
  steps = jnp.broadcast_to(xj, (SCAN_STEPS, *xj.shape)), jnp.broadcast_to(yj, (SCAN_STEPS,
                                                                             *yj.shape))
  scan = jax.jit(lambda c, xs, ys: jax.lax.scan(
      lambda c, b: train._sgd_step(m, tx, (), c, b[0], b[1], mask), c, (xs, ys))[0])
  return {"forward": lambda: fwd(p, xj, yj), "forward_backward": lambda: grad(p, xj, yj),
          "forward_backward_no_batchnorm": lambda: grad_plain(p, xj, yj),
          "training_step_in_scan": lambda: scan(carry, *steps)}


def _torch(torch, width: float, x: np.ndarray, y: np.ndarray) -> dict:
  net = torch_resnet20(torch, width).to(C.torch_device(torch))
  dev = C.torch_device(torch)
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dev)
  ty = torch.from_numpy(y.astype(np.int64)).to(dev)
  lf = torch.nn.CrossEntropyLoss()

  def forward():
    with torch.no_grad():
      return lf(net(tx), ty)

  def forward_backward():
    net.zero_grad()
    lf(net(tx), ty).backward()

  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

  def training_steps():
    for _ in range(SCAN_STEPS):
      opt.zero_grad()
      lf(net(tx), ty).backward()
      opt.step()

  def no_norm():
    saved = {}
    for mod in net.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        saved[mod] = mod.forward
        mod.forward = lambda z: z
    try:
      forward_backward()
    finally:
      for mod, f in saved.items():
        mod.forward = f

  return {"forward": forward, "forward_backward": forward_backward,
          "forward_backward_no_batchnorm": no_norm, "training_step_in_scan": training_steps}


def main(argv=None):
  p = C.parser("resnet_step")
  p.add_argument("--width", type=float, default=0.5)
  args = C.parse_args(p, argv)
  batch = 16 if args.quick else 128
  repeats = 2 if args.quick else max(args.repeats, 10)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, 28, 28, 1)).astype(np.float32)
  y = rng.integers(0, 10, batch).astype(np.int32)
  base = {"arch": "resnet20", "width": args.width, "batch": batch}
  torch = C.torch_or_none()
  if torch is not None:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
  peer = _torch(torch, args.width, x, y) if torch is not None else {}
  per = lambda step: SCAN_STEPS if step == "training_step_in_scan" else 1
  peer_t = {step: C.time_fn(fn, repeats)[1] / per(step) for step, fn in peer.items()}
  records = [C.record("resnet_step", "pytorch", dict(base, step=s), t, None)
             for s, t in peer_t.items()]
  for conv in ("patches", "xla"):
    for step, fn in _ours(conv, args.width, x, y).items():
      first, t = C.time_fn(fn, repeats)
      first, t = first - t + t / per(step), t / per(step)  # seconds per step
      extra = {"speedup_vs_pytorch": peer_t[step] / t} if step in peer_t else {}
      records.append(C.record("resnet_step", f"rainbow_jax_{conv}", dict(base, step=step), t,
                              max(first - t, 0.0), **extra))
      print(f"{conv:8s} {step:30s} {1e3 * t:7.1f} ms"
            + (f"  (PyTorch {1e3 * peer_t[step]:.1f} ms)" if step in peer_t else ""),
            flush=True)
  C.write(args.out, records)


if __name__ == "__main__":
  main()
